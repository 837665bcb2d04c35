"""Actor-critic agents on Cleanup through the engine: the baselines' presets, agent
resets, shared rewards, and vmapped seeds against separate runs."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from agents.base import AgentTrajectory  # noqa: F401  (the agents' interface)
from jaxsim.config import ACConfig, cleanup, validate
from jaxsim.runner import run
from jaxsim.train import Experiment, seed_keys
from jaxsim.types import Trajectory, agent_view
from tests.gradcheck import assert_directional_derivatives
from tests.test_engine import assert_trees_equal

TINY_AC = ACConfig(conv_filters=2, hidden=(8,))


def tiny(alg="ac", **overrides):
    base = dict(episodes=4, chunk_episodes=2, eval_period=2, eval_episodes=2, num_seeds=2,
                agent_reset_period=0, env_params={"max_steps": 6})
    base.update(overrides)
    config = cleanup("7x7", alg, **base)
    return config.replace(agent=TINY_AC) if "agent" not in overrides else config


def test_presets_and_bad_values():
    ac, shared = cleanup("7x7", "ac"), cleanup("10x10", "shared")
    assert ac.agent.lr_actor == 6.73e-4 and ac.agent.entropy_coef == 0.1
    assert shared.agent.lr_actor == 1.959e-4 and shared.env == "cleanup_10x10"
    assert ac.episodes == 20000 and ac.agent_reset_period == 1000 and ac.eval_period == 500
    validate(ac)
    with pytest.raises(ValueError, match="unknown Cleanup map"):
        cleanup("5x5")
    with pytest.raises(ValueError, match="agent_reset_period .* multiple of chunk_episodes"):
        validate(ac.replace(agent_reset_period=150))
    with pytest.raises(ValueError, match="conv networks need image observations"):
        validate(ac.replace(env="ipd", env_params={}))


def test_shared_reward_gives_every_agent_the_team_reward():
    traj = Trajectory(obs=np.zeros((3, 2, 1)), action=np.zeros((3, 2), np.int32),
                      reward=np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]),
                      incentive=np.full((3, 2), 0.5), next_obs=np.zeros((3, 2, 1)),
                      done=np.array([0.0, 0.0, 1.0]), mask=np.ones(3))
    np.testing.assert_allclose(agent_view(traj, shared_reward=True).reward,
                               [[1.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    np.testing.assert_allclose(agent_view(traj).reward, [[1.5, 0.5, 1.5], [0.5, 2.5, 1.5]])
    np.testing.assert_allclose(agent_view(traj).done, [[0, 0, 1], [0, 0, 1]])


@pytest.mark.heavy
@pytest.mark.timeout(300)
@pytest.mark.parametrize("alg", ["shared"])  # "ac" is the same agent, less code
def test_vmapped_seeds_equal_separate_runs(alg):
    config = tiny(alg)
    both = run(config, progress=False)
    for seed in range(2):
        alone = run(config.replace(num_seeds=1, first_seed=seed), progress=False)
        np.testing.assert_allclose(alone.metrics["return"][:, 0],
                                   both.metrics["return"][:, seed], rtol=1e-6)
        np.testing.assert_allclose(alone.eval_metrics["eval/return"][:, 0],
                                   both.eval_metrics["eval/return"][:, seed], rtol=1e-6)
    assert np.isfinite(both.metrics["agent/critic_loss"]).all()


@pytest.mark.timeout(300)
def test_agents_are_reset_every_period_and_only_then():
    config = tiny(agent_reset_period=2, num_seeds=1)
    experiment = Experiment(config)
    state = jax.jit(jax.vmap(experiment.init))(seed_keys(config))
    chunk = jax.jit(jax.vmap(experiment.run_chunk))
    first = jax.tree.map(np.asarray, state.agents)
    state, _ = chunk(state)  # episodes 0-1: no reset at episode 0, agents learn
    trained = jax.tree.map(np.asarray, state.agents.params)
    reset = jax.jit(jax.vmap(experiment.maybe_reset_agents))(state)  # at episode 2
    fresh = jax.tree.map(np.asarray, reset.agents)
    kernels = [(a, b) for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(fresh.params),
                                      strict=True) if a.ndim > 2]  # batched weight matrices
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)
    # Fresh agents: optimiser counts back to zero, new weights unlike the first ones.
    counts = [leaf for leaf in jax.tree.leaves(fresh.actor_opt) if leaf.dtype == np.int32]
    assert counts and all(int(c.max()) == 0 for c in counts)
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(first.params), jax.tree.leaves(fresh.params), strict=True))
    assert_trees_equal(reset.mechanism, state.mechanism)
    # Off the period nothing is touched.
    config3 = config.replace(agent_reset_period=4)
    kept = jax.jit(jax.vmap(Experiment(config3).maybe_reset_agents))(state)
    assert_trees_equal(kept.agents, state.agents)


@pytest.mark.timeout(300)
def test_compact_replay_stores_117_bytes_a_step_and_renders_the_same_observations():
    """The rollout records each step's compact state; a buffer of those holds a 7x7
    transition in 117 bytes (3,908 with float observations)
    and renders exactly the observations the agents saw."""
    from agents.ac import ACAgent
    from jaxsim.rollout import rollout
    from mechanism import replay
    from mechanism.none import NoMechanism
    import envs_jax

    env = envs_jax.make("cleanup_7x7", max_steps=12)
    agent = ACAgent(TINY_AC, env.observation_spec.shape[1:], env.num_actions)
    params = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params
    mech = NoMechanism(2)
    traj = jax.jit(lambda k: rollout(env, agent, mech, params, mech.init(k), k))(
        jax.random.PRNGKey(1))
    cells, position = traj.compact
    assert cells.shape == (12, 7, 7) and cells.dtype == np.uint8
    rendered = jax.vmap(env.observe_compact)(*traj.compact)
    np.testing.assert_array_equal(rendered, traj.obs)
    np.testing.assert_array_equal(jax.vmap(env.observe_compact)(*traj.compact_next), traj.next_obs)

    buffer = replay.init(replay.example_transition(env, compact=True), capacity=64)
    assert replay.bytes_per_row(buffer) == 117
    full = replay.init(replay.example_transition(env), capacity=64)
    assert replay.bytes_per_row(full) == 2 * 2 * 9 * 9 * 3 * 4 + 8 + 8 + 4
    items = replay.Transition(obs=traj.compact, action=traj.action, reward=traj.reward,
                              next_obs=traj.compact_next, done=traj.done)
    buffer = replay.add(buffer, items, traj.mask)
    rows = replay.render_rows(env, replay.gather(buffer, jax.numpy.arange(12)))
    np.testing.assert_array_equal(rows.obs, traj.obs)
    np.testing.assert_array_equal(rows.next_obs, traj.next_obs)
    np.testing.assert_array_equal(rows.action, traj.action)
    np.testing.assert_array_equal(rows.done, traj.done)


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_iqflow_on_cleanup_learns_the_same_from_compact_and_float_replay():
    """IQ-Flow with conv networks on Cleanup: the preset's buffer stores the compact
    state (117 bytes a step), and storing that instead of float observations changes
    nothing that step A or step B computes."""
    import envs_jax
    from agents.ac import ACAgent
    from jaxsim.config import IQFlowConfig
    from jaxsim.rollout import rollout
    from mechanism.iqflow import IQFlow

    preset = cleanup("7x7", "iqflow")
    validate(preset)
    assert preset.mechanism.conv_filters == 6 and preset.mechanism.lr_incentive == 7.323e-6
    shapes = jax.eval_shape(Experiment(preset.replace(episodes=100)).init, jax.random.PRNGKey(0))
    assert shapes.mechanism.buffer.data.obs[0].shape == (5000, 7, 7)
    assert shapes.mechanism.buffer.data.obs[0].dtype == np.uint8

    env = envs_jax.make("cleanup_7x7", max_steps=12)
    config = IQFlowConfig(incentive_hidden=(8, 4), critic_hidden=(8,), conv_filters=2,
                          unroll_steps=2, batch_size=8, start_train=16, lr_incentive=1e-2)
    shape = env.observation_spec.shape[1:]
    compact = IQFlow(config, shape, 2, env.num_actions, capacity=64, env=env)
    floats = IQFlow(config, shape, 2, env.num_actions, capacity=64)
    agent = ACAgent(TINY_AC, shape, env.num_actions)
    params = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params

    def two_episodes(mech):
        state = mech.init(jax.random.PRNGKey(1))
        for episode in range(2):  # the second one passes start_train: step B runs
            key = jax.random.PRNGKey(10 + episode)
            traj = rollout(env, agent, mech, params, state, key)
            state, metrics = mech.update(state, traj, key)
        return state, metrics

    (state_c, metrics_c), (state_f, metrics_f) = jax.jit(
        lambda: (two_episodes(compact), two_episodes(floats)))()
    assert state_c.buffer.data.obs[0].dtype == np.uint8 and int(state_c.buffer.size) == 24
    assert float(metrics_c["meta/active"]) == 1.0
    for name in ("eta", "coop", "env", "ind"):
        assert_trees_equal(getattr(state_c, name), getattr(state_f, name))
    np.testing.assert_array_equal(metrics_c["meta/loss"], metrics_f["meta/loss"])


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_id_on_cleanup_differentiates_the_actor_step_and_learns_its_team_critic():
    """ID with actor-critic agents: the outer loss reaches eta through each actor's
    re-learned SGD step (checked against a finite difference in float64), the team
    critic takes TD(0) steps, and the engine hands ID the agent states that played."""
    from jaxsim.config import IDConfig

    config = tiny("id", mechanism=IDConfig(incentive_hidden=(8, 4), conv_filters=2,
                                           critic_hidden=(8,), outer_weight="td_error",
                                           lr_critic=1e-2, lr_cost=0.0, cost_weight=1e-4,
                                           output_scale=1.0),
                  num_seeds=1).replace(agent=TINY_AC)
    preset = cleanup("7x7", "id")
    validate(preset)
    assert preset.mechanism.lr_meta == 1.24e-5 and preset.mechanism.cost_weight == 1e-4
    exp = Experiment(config)
    state = jax.jit(exp.init)(seed_keys(config)[0])
    step = jax.jit(exp.episode_step)
    played = state.agents
    state, metrics = step(state)
    assert_trees_equal(state.mechanism.prev_agents, played)
    critic_before = state.mechanism.critic
    state, metrics = step(state)
    assert bool(state.mechanism.has_prev) and np.isfinite(float(metrics["id/critic_loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(state.mechanism.critic), jax.tree.leaves(critic_before), strict=True))

    from jaxsim.rollout import rollout

    with jax.enable_x64(True):
        as64 = lambda tree: jax.tree.map(
            lambda x: x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x, tree)
        mech_state = as64(state.mechanism)
        traj = as64(jax.jit(functools.partial(rollout, exp.env, exp.agent, exp.mechanism))(
            state.agents.params, state.mechanism, jax.random.PRNGKey(3)))
        loss = jax.jit(lambda eta: exp.mechanism.outer_loss(eta, mech_state, traj))
        flat_eta, unravel = jax.flatten_util.ravel_pytree(mech_state.eta)
        # Away from ReLU kinks: black pixels put conv units at pre-activation = bias,
        # and the biases are still close to their zero init.
        flat_eta = flat_eta + 0.05 * jax.random.normal(jax.random.PRNGKey(1), flat_eta.shape)
        grad = jax.jit(jax.grad(lambda eta: exp.mechanism.outer_loss(eta, mech_state, traj)))(
            unravel(flat_eta))
        flat_grad, _ = jax.flatten_util.ravel_pytree(grad)
        assert_directional_derivatives(loss, flat_grad, flat_eta, unravel, directions=1)
