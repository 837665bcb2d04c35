"""The recipes (SPEC §6-7): `paper` unchanged bit for bit, every row of the others on a
hand-worked case, the centralised controller wrapper, and bad recipes or rows refused
before anything compiles."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs_jax
from agents.networks import MLP, Conv3x3
from jaxsim.checkpoint import CheckpointError
from jaxsim.config import (ACConfig, NoMechanismConfig, TrainConfig, cleanup, escape_room,
                           matrix_game, validate)
from jaxsim.runner import run
from jaxsim.train import Experiment
from jaxsim.types import Trajectory, agent_view
from mechanism.iqflow.critics import others_actions
from tests import golden
from tests.env_checks import check_specs_under_jit_and_vmap

GAMMA = 0.99


# --- paper: today's behaviour, bit for bit -------------------------------------------------

def _defaults(config_type) -> dict:
    return {f.name: f.default for f in dataclasses.fields(config_type)
            if f.default is not dataclasses.MISSING}


def test_paper_presets_are_the_configs_before_recipes():
    """Every preset's config as checkpoints store it: the fields that existed before
    the recipes hold the same values, and every field added since is at its default
    (the paper's behaviour); the label is 'paper'."""
    saved = json.load(open(golden.PATH))["presets"]
    for name, config in golden.presets().items():
        now, before = golden.preset_json(config), saved[name]
        assert now["recipe"] == "paper"
        for key, value in before.items():
            if key in ("agent", "mechanism"):
                continue
            assert now[key] == value, (name, key)
        for part in ("agent", "mechanism"):
            added = _defaults(type(getattr(config, part)))
            for key, value in now[part].items():
                if key in before[part]:
                    assert value == before[part][key], (name, part, key)
                else:
                    assert value == json.loads(json.dumps(added[key])), (name, part, key)


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_paper_runs_give_the_numbers_from_before_recipes():
    """Tiny runs of every environment family and algorithm: each seed's evaluated
    returns, and the sum and the sum of magnitudes of every learned array of the final
    state (agents, critics, incentive nets, optimiser statistics), equal those of the
    code of e226a82, before any SPEC §6 row existed. Bit for bit on the machine that
    recorded them (CPU-2, at the suite's -O0). Another CPU rounds float32 otherwise: on
    the EPYC of 2026-12-07 (AVX2, no AVX-512) the returns were equal and the leaves' sums
    within 1.6e-5 of their magnitudes (ER's IQ-Flow optimiser statistics), so a leaf may
    differ by 1e-4 of its sum of magnitudes, far below what a change of the computation
    moves."""
    saved = json.load(open(golden.PATH))["runs"]
    for name, config in golden.tiny_runs().items():
        now = golden.fingerprint(config)
        np.testing.assert_allclose(now["eval_return"], saved[name]["eval_return"], rtol=1e-7,
                                   err_msg=name)
        assert sorted(now["leaves"]) == sorted(saved[name]["leaves"]), name
        for leaf, sums in saved[name]["leaves"].items():  # sums: (sum, sum of magnitudes)
            np.testing.assert_allclose(now["leaves"][leaf], sums, rtol=0,
                                       atol=1e-4 * abs(sums[-1]) + 1e-12,
                                       err_msg=f"{name} {leaf}")


# --- which rows each recipe turns on -------------------------------------------------------

def test_authors_recipe_turns_on_the_rows_of_each_experiment():
    ipd = matrix_game("ipd", "iqflow", recipe="authors")
    assert ipd.recipe == "authors" and ipd.agent.return_mode == "discounted_reward"  # row 1
    assert ipd.mechanism.values_ignore_obs  # row 2
    er = {alg: escape_room(5, 2, alg, recipe="authors") for alg in ("iqflow", "id", "none")}
    assert all(c.agent.return_mode == "discounted_reward" for c in er.values())  # row 1
    assert all(c.eval_period == 100 for c in er.values())  # row 11
    assert er["iqflow"].mechanism.values_ignore_obs  # row 2
    assert er["id"].agent.optimizer == "adam" and er["none"].agent.optimizer == "sgd"  # row 3
    assert er["id"].mechanism.outer_weight == "per_step"  # row 4
    assert er["id"].mechanism.cost_episode == "rebuilt"  # row 5
    assert er["id"].mechanism.output_scale == pytest.approx(math.sqrt(2) / 1000)  # row 6
    big = escape_room(10, 5, "id", recipe="authors")  # row 7
    assert (big.agent.optimizer, big.agent.entropy_coef, big.mechanism.lr_cost,
            big.episodes) == ("sgd", 0.1, 1.03e-5, 25000)
    iq, id_ = cleanup("7x7", "iqflow", recipe="authors"), cleanup("7x7", "id", recipe="authors")
    assert iq.agent_reset_period == 2000 and iq.mechanism.q_layout == "shared_conv"  # 10, 12
    assert id_.agent.lr_actor == 6.73e-4 and id_.agent_reset_period == 0  # row 8
    assert (id_.mechanism.critic_polyak, id_.mechanism.critic_conv_filters,
            id_.mechanism.inner_critic) == (0.01, 12, "after")
    shared = cleanup("7x7", "shared", recipe="authors")  # row 9
    assert shared.env == "centralised:cleanup_7x7" and shared.agent_reset_period == 0
    assert shared == cleanup("7x7", "shared_centralised", recipe="authors")
    assert cleanup("7x7", "shared").mechanism == cleanup("7x7", "shared_decentralised").mechanism
    assert cleanup("7x7", "shared_decentralised", recipe="authors").env == "cleanup_7x7"
    ida = escape_room(5, 2, "id", recipe="id_authors").mechanism  # SPEC §7
    assert (ida.output_type, ida.activation, ida.init, ida.designer_input, ida.incentive_hidden,
            ida.cost_episode) == ("action", "sigmoid", "glorot", "state", (64, 16), "rebuilt")
    assert escape_room(5, 2, "none", recipe="id_authors").agent.hidden == (64, 32)
    assert escape_room(5, 2, "id", recipe="id_authors").episodes == 100000
    for config in (*er.values(), big, iq, id_, shared, ipd):
        validate(config)


def test_unknown_recipes_and_rows_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match=r"recipe 'lio' does not apply.*'paper', 'authors'"):
        escape_room(5, 2, "id", recipe="lio")
    with pytest.raises(ValueError, match="does not apply to the matrix games"):
        matrix_game("ipd", recipe="id_authors")
    with pytest.raises(ValueError, match=r"does not apply to Cleanup 10x10.*valid: \['paper'\]"):
        cleanup("10x10", "iqflow", recipe="authors")
    with pytest.raises(ValueError, match="recipe must be one of"):
        validate(matrix_game("ipd").replace(recipe="Paper"))
    er_iq = escape_room(5, 2, "iqflow")
    with pytest.raises(ValueError, match="q_layout 'shared_conv' .* use 'per_head'"):
        validate(er_iq.replace(mechanism=dataclasses.replace(er_iq.mechanism,
                                                             q_layout="shared_conv")))
    c_iq = cleanup("7x7", "iqflow")
    with pytest.raises(ValueError, match="values_ignore_obs .* leave it False"):
        validate(c_iq.replace(mechanism=dataclasses.replace(c_iq.mechanism,
                                                            values_ignore_obs=True)))
    c_id = cleanup("7x7", "id")
    with pytest.raises(ValueError, match="designer_input 'state' needs .* central state"):
        validate(c_id.replace(mechanism=dataclasses.replace(c_id.mechanism,
                                                            designer_input="state")))
    er_id = escape_room(5, 2, "id")
    with pytest.raises(ValueError, match="inner_critic 'after' .* no critic"):
        validate(er_id.replace(mechanism=dataclasses.replace(er_id.mechanism,
                                                             inner_critic="after")))
    with pytest.raises(ValueError, match=r"outer_weight must be one of \('return', 'td_error'"):
        validate(er_id.replace(mechanism=dataclasses.replace(er_id.mechanism,
                                                             outer_weight="gae")))
    with pytest.raises(ValueError, match=r"agent.optimizer must be one of \('sgd', 'adam'\)"):
        validate(er_id.replace(agent=dataclasses.replace(er_id.agent, optimizer="rmsprop")))


@pytest.mark.timeout(300)
def test_a_checkpoint_of_one_recipe_is_refused_by_another(tmp_path):
    config = matrix_game("ipd", "none", agent=golden.TINY_PG, episodes=20, chunk_episodes=10,
                         eval_period=10, eval_episodes=2, num_seeds=2)
    run(config, progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=1, stop_after=10)
    authors = matrix_game("ipd", "none", recipe="authors", agent=golden.TINY_PG, episodes=20,
                          chunk_episodes=10, eval_period=10, eval_episodes=2, num_seeds=2)
    assert authors.agent == config.agent  # the rows differ by the label alone here
    with pytest.raises(CheckpointError, match="(?s)another config.*recipe: checkpoint 'paper' "
                                              "vs now 'authors'"):
        run(authors, progress=False, checkpoint_dir=str(tmp_path), resume=True)


# --- the rows, each on a hand-worked case ------------------------------------------------

def three_step_episode(reward, mask=(1.0, 1.0, 1.0), num_agents=2, obs_dim=6):
    reward = np.asarray(reward, np.float32)
    return Trajectory(obs=jnp.zeros((3, num_agents, obs_dim)),
                      action=jnp.zeros((3, num_agents), jnp.int32), reward=jnp.asarray(reward),
                      incentive=jnp.zeros((3, num_agents)),
                      next_obs=jnp.zeros((3, num_agents, obs_dim)), done=jnp.zeros(3),
                      mask=jnp.asarray(mask, jnp.float32))


def test_id_outer_weights_per_step_and_return_to_go_by_hand():
    """Row 4: gamma^t R_team,t for a 3-step episode (team rewards 1, -2, 10), against
    the return-to-go of SPEC §4; a masked last step weighs nothing."""
    exp = Experiment(escape_room(2, 1, "id", recipe="authors", agent=golden.TINY_PG))
    traj = three_step_episode([[1.0, 0.0], [-1.0, -1.0], [4.0, 6.0]])
    weights = exp.mechanism.outer_weights(None, traj)
    np.testing.assert_allclose(weights, [1.0, -2.0 * GAMMA, 10.0 * GAMMA**2], rtol=1e-6)
    paper = Experiment(escape_room(2, 1, "id", agent=golden.TINY_PG)).mechanism
    rtg = [1 - 2 * GAMMA + 10 * GAMMA**2, -2 + 10 * GAMMA, 10.0]
    np.testing.assert_allclose(paper.outer_weights(None, traj), rtg, rtol=1e-6)
    masked = three_step_episode([[1.0, 0.0], [-1.0, -1.0], [4.0, 6.0]], mask=(1, 1, 0))
    np.testing.assert_allclose(exp.mechanism.outer_weights(None, masked),
                               [1.0, -2.0 * GAMMA, 0.0], rtol=1e-6)


def test_pg_step_weights_gamma_t_r_t_by_hand():
    """Row 1 for the agents: step t weighted by gamma^t r_t, no sum over later rewards."""
    preset = escape_room(2, 1, "none", recipe="authors")
    agent = Experiment(preset.replace(agent=dataclasses.replace(preset.agent, hidden=(6,)))).agent
    np.testing.assert_allclose(agent.step_weights(jnp.array([1.0, -2.0, 10.0]), jnp.ones(3)),
                               [1.0, -2.0 * GAMMA, 10.0 * GAMMA**2], rtol=1e-6)


def test_values_that_ignore_observations_are_one_value_per_agent():
    """Row 2: V_env and V_ind give one value for two different states, the MLP of the
    authors' code applied to the vector (hidden..., N); V_coop still reads the state."""
    exp = Experiment(matrix_game("ipd", "iqflow", recipe="authors"))
    state = exp.init(jax.random.PRNGKey(0)).mechanism
    obs = jax.nn.one_hot(jnp.array([[[4], [4]], [[1], [1]]])[..., 0], 5)  # start vs CD
    for critic, params in ((exp.mechanism.critic_env, state.env.v),
                           (exp.mechanism.critic_ind, state.ind.v)):
        values = critic.values(params, obs)
        assert values.shape == (2, 2)
        np.testing.assert_array_equal(values[0], values[1])
        by_hand = MLP(hidden=(16, 8), out=2).apply({"params": params["params"]["MLP_0"]},
                                                   jnp.array([16.0, 8.0, 2.0]))
        np.testing.assert_allclose(values[0], by_hand, rtol=1e-6)
    coop = exp.mechanism.critic_coop.values(state.coop.v, obs)
    assert not np.allclose(coop[0], coop[1])


def test_shared_conv_critic_parameter_count_and_hand_built_equivalent():
    """Row 12 on Cleanup 7x7: one conv per Q critic shared by its heads. By hand: conv
    3*3*3*6 + 6 = 168; each head Dense(2*9*9*6 + 2*6 = 984 -> 64) 63,040, Dense(64 -> 64)
    4,160, Dense(64 -> 6) 390; two heads: 135,348 parameters in all. Its Q values equal
    a hand-built conv + per-head MLPs with the same parameters."""
    exp = Experiment(cleanup("7x7", "iqflow", recipe="authors"))
    state = exp.init(jax.random.PRNGKey(1)).mechanism
    q = state.ind.q
    assert sum(x.size for x in jax.tree.leaves(q)) == 168 + 2 * (63040 + 4160 + 390) == 135348
    obs = jax.random.uniform(jax.random.PRNGKey(2), (3, 2, 9, 9, 3))
    action = jnp.array([[0, 5], [3, 1], [4, 4]], jnp.int32)
    got = exp.mechanism.critic_ind.q_values(q, obs, action)
    p = q["params"]
    features = jax.nn.relu(Conv3x3(6).apply({"params": p["Conv_0"]}, obs)).reshape(3, -1)
    others = others_actions(action, 6)
    for head in range(2):
        want = MLP(hidden=(64, 64), out=6).apply({"params": p[f"head_{head}"]},
                                                 jnp.concatenate([features, others[:, head]], -1))
        np.testing.assert_allclose(got[:, head], want, rtol=1e-5, atol=1e-6)
    # The others' actions join at the first layer: head 0 reads agent 1's action only.
    moved = exp.mechanism.critic_ind.q_values(q, obs, action.at[:, 0].set(2))
    np.testing.assert_array_equal(moved[:, 0], got[:, 0])
    assert not np.allclose(moved[:, 1], got[:, 1])


def test_per_action_id_head_shared_by_agents_over_the_central_state():
    """SPEC §7: one output per action (2 sigmoid, Glorot, no output bias) over the
    central state and the joint action; agent i receives output[a_i], so agents that
    took the same action are paid the same; the cost is the discounted sum of every
    output, unscaled."""
    exp = Experiment(escape_room(3, 1, "id", recipe="id_authors"))
    mech = exp.mechanism
    eta = exp.init(jax.random.PRNGKey(0)).mechanism.eta
    shapes = jax.tree.map(lambda x: x.shape, eta)["params"]
    assert shapes == {"Dense_0": {"kernel": (18, 64), "bias": (64,)},
                      "Dense_1": {"kernel": (64, 16), "bias": (16,)},
                      "Dense_2": {"kernel": (16, 3)}}
    # Glorot-uniform: every weight within sqrt(6 / (fan_in + fan_out)), spread over it
    # (orthogonal(sqrt 2) rows have norm sqrt 2 and break the bound for 16 -> 3).
    for layer, (fan_in, fan_out) in (("Dense_0", (18, 64)), ("Dense_2", (16, 3))):
        kernel = np.asarray(eta["params"][layer]["kernel"])
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
        np.testing.assert_allclose(kernel.std(), limit / math.sqrt(3), rtol=0.3)
    env = envs_jax.make("escape_room", n_agents=3, n_required=1)
    _, first = env.reset(jax.random.PRNGKey(0))
    state, ts = env.step(env.reset(jax.random.PRNGKey(0))[0], jnp.array([0, 2, 1]))
    obs = ts.observation[None]  # positions lever, door, start
    np.testing.assert_array_equal(env.central_state(obs)[0],
                                  [1, 0, 0, 0, 0, 1, 0, 1, 0])
    action = jnp.array([[2, 0, 2]], jnp.int32)
    out = mech.outputs(eta, obs, action)[0]  # [A]
    paid = mech.incentives(eta, obs, action)[0]
    np.testing.assert_allclose(paid, 2.0 * out[jnp.array([2, 0, 2])], rtol=1e-6)
    assert paid[0] == paid[2] and 0.5 < float(out.mean()) * 2 < 1.5  # starts near 1, not 0
    traj = Trajectory(obs=jnp.repeat(obs, 3, 0), action=jnp.repeat(action, 3, 0),
                      reward=jnp.zeros((3, 3)), incentive=jnp.zeros((3, 3)),
                      next_obs=jnp.repeat(obs, 3, 0), done=jnp.zeros(3),
                      mask=jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(mech.cost(eta, traj), (1 + GAMMA) * float(out.sum()), rtol=1e-5)


def _id_update_inputs(config: TrainConfig, seed=0):
    exp = Experiment(config)
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    s0 = jax.jit(exp.init)(keys[0])  # compiled once, not run op by op
    from jaxsim.rollout import rollout
    play = jax.jit(lambda key: rollout(exp.env, exp.agent, exp.mechanism, s0.agents.params,
                                       s0.mechanism, key))
    return exp, s0, play(keys[1]), play(keys[2])


def test_id_cost_on_the_rebuilt_episode():
    """Row 5: with cost_episode 'rebuilt' the cost ID reports and descends is that of
    episode k (the one its inner step is rebuilt on), not of episode k+1; nothing
    before there is an episode k."""
    config = escape_room(3, 1, "id", recipe="authors", agent=golden.TINY_PG)
    exp, s0, traj_k, traj_k1 = _id_update_inputs(config)
    mech, state = exp.mechanism, s0.mechanism
    update = jax.jit(lambda state, traj: mech.update(state, traj, None, agent_state=s0.agents))
    first, metrics = update(state, traj_k)
    assert float(metrics["id/cost"]) == 0.0
    assert int(first.cost_opt[0].count) == 0  # the cost's Adam has not stepped yet
    second, metrics = update(first, traj_k1)
    np.testing.assert_allclose(metrics["id/cost"], mech.cost(first.eta, traj_k), rtol=1e-6)
    assert not np.isclose(float(mech.cost(first.eta, traj_k1)), float(metrics["id/cost"]))
    # What the cost's Adam descends: its first moment is (1 - b1) * d cost(episode k) / d eta.
    grad_k = jax.grad(mech.cost)(first.eta, traj_k)
    for mu, g in zip(jax.tree.leaves(second.cost_opt[0].mu), jax.tree.leaves(grad_k),
                     strict=True):
        np.testing.assert_allclose(mu, 0.1 * g, rtol=1e-5, atol=1e-9)


def test_id_rebuilds_the_actor_step_with_the_updated_critic_and_a_polyak_target():
    """Row 8 on Cleanup: the rebuilt actor step of agent i uses the critic it has after
    its update on episode k (agent_state's), and the team critic's TD(0) target comes
    from a Polyak target that moves by 0.01."""
    tiny = dict(agent=ACConfig(conv_filters=2, hidden=(8,), lr_actor=6.73e-4,
                               lr_critic=5.54e-4, entropy_coef=0.1),
                episodes=4, chunk_episodes=2, eval_period=2, env_params={"max_steps": 4})
    config = cleanup("7x7", "id", recipe="authors", **tiny)
    config = config.replace(mechanism=dataclasses.replace(
        config.mechanism, incentive_hidden=(8,), critic_hidden=(8,), conv_filters=2,
        critic_conv_filters=4))
    exp, s0, traj_k, _ = _id_update_inputs(config)
    mech = exp.mechanism
    before = s0.agents
    after, _ = jax.vmap(exp.agent.update)(before, agent_view(traj_k))
    eta = s0.mechanism.eta
    got = mech.relearned_params(eta, before, traj_k, after)
    paper = Experiment(config.replace(mechanism=dataclasses.replace(
        config.mechanism, inner_critic="before"))).mechanism
    by_hand = paper.relearned_params(eta, exp.agent.with_critic_of(before, after), traj_k)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(by_hand), strict=True):
        np.testing.assert_array_equal(x, y)
    stale = paper.relearned_params(eta, before, traj_k)
    assert not all(np.allclose(x, y) for x, y in zip(jax.tree.leaves(got),
                                                     jax.tree.leaves(stale), strict=True))
    critic = s0.mechanism.critic
    assert s0.mechanism.critic_target is not None
    assert critic["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 4)  # its own conv width
    # The TD(0) target bootstraps from the target network, not the online critic.
    target = jax.tree.map(lambda x: 0.5 * x, critic)
    offset = s0.mechanism.replace(critic_target=target)
    _, loss = mech.update_critic(offset, traj_k)
    team = traj_k.reward.sum(-1)
    y = team + GAMMA * (1 - traj_k.done) * mech.team_values(target, traj_k.next_obs)
    error = traj_k.mask * (mech.team_values(critic, traj_k.obs) - y)
    np.testing.assert_allclose(loss, np.sum(error**2) / traj_k.mask.sum(), rtol=1e-5)
    _, online_loss = paper.update_critic(s0.mechanism, traj_k)
    assert not np.isclose(float(loss), float(online_loss))
    moved, _ = mech.update_critic(s0.mechanism, traj_k)
    for new, old, target in zip(jax.tree.leaves(moved.critic), jax.tree.leaves(critic),
                                jax.tree.leaves(moved.critic_target), strict=True):
        np.testing.assert_allclose(target, 0.99 * old + 0.01 * new, rtol=1e-5, atol=1e-7)


def test_adam_agents_keep_ids_model_of_one_sgd_step():
    """Row 3: the agents' optimiser is Adam; ID's rebuilt step is still one plain SGD
    step at the agents' lr, so the re-learned parameters do not depend on it."""
    sgd = escape_room(3, 1, "id", agent=golden.TINY_PG)
    adam = sgd.replace(agent=dataclasses.replace(sgd.agent, optimizer="adam"))
    exp_sgd, s0, traj_k, _ = _id_update_inputs(sgd)
    exp_adam = Experiment(adam)
    assert exp_adam.agent.inner_lr == exp_sgd.agent.inner_lr == 0.05
    eta = s0.mechanism.eta
    for x, y in zip(jax.tree.leaves(exp_adam.mechanism.relearned_params(eta, s0.agents, traj_k)),
                    jax.tree.leaves(exp_sgd.mechanism.relearned_params(eta, s0.agents, traj_k)),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    view = jax.tree.map(lambda x: x[0], agent_view(traj_k))
    one = jax.tree.map(lambda x: x[0], s0.agents)
    one_adam = exp_adam.agent.init(jax.random.PRNGKey(3))
    one = one.replace(opt_state=one_adam.opt_state)
    stepped, _ = exp_adam.agent.update(one, view)
    grads = jax.grad(lambda p: exp_adam.agent.loss(p, view)[0])(one.params)
    # Adam's first step moves every weight by lr * sign(g) (up to eps).
    for new, old, g in zip(jax.tree.leaves(stepped.params), jax.tree.leaves(one.params),
                           jax.tree.leaves(grads), strict=True):
        big = np.abs(np.asarray(g)) > 1e-4
        np.testing.assert_allclose(np.asarray(new - old)[big], -0.05 * np.sign(g)[big],
                                   rtol=1e-3)


# --- the centralised controller (row 9) ----------------------------------------------------

def test_centralised_wrapper_decodes_the_joint_action_and_pays_the_team():
    """A 2-agent Cleanup becomes one agent with 36 actions, a_0 + 6 a_1; it sees agent
    0's view and gets the team's reward; steps equal the wrapped environment's."""
    inner = envs_jax.make("cleanup_7x7")
    env = envs_jax.make("centralised:cleanup_7x7")
    assert (env.num_agents, env.num_actions, env.max_steps) == (1, 36, inner.max_steps)
    np.testing.assert_array_equal(env.decode(jnp.int32(5 + 6 * 2)), [5, 2])
    np.testing.assert_array_equal(env.decode(jnp.int32(35)), [5, 5])
    key = jax.random.PRNGKey(0)
    state, first = env.reset(key)
    inner_state, inner_first = inner.reset(key)
    np.testing.assert_array_equal(first.observation, inner_first.observation[:1])
    for joint in (3 + 6 * 1, 2 + 6 * 3, 4 + 6 * 0, 35, 0):
        state, ts = env.step(state, jnp.array([joint], jnp.int32))
        inner_state, its = inner.step(inner_state, env.decode(jnp.int32(joint)))
        np.testing.assert_array_equal(ts.observation, its.observation[:1])
        np.testing.assert_allclose(ts.reward, [its.reward.sum()])
        assert ts.step_type == its.step_type
    check_specs_under_jit_and_vmap(env, num_envs=2)
    room = envs_jax.make("centralised:escape_room", n_agents=3, n_required=1)
    assert room.num_actions == 27
    np.testing.assert_array_equal(room.decode(jnp.int32(0 + 3 * 0 + 9 * 2)), [0, 0, 2])
    _, ts = room.step(room.reset(key)[0], jnp.array([18], jnp.int32))  # lever, lever, door
    assert float(ts.reward[0]) == 10.0 - 1 - 1 and int(ts.step_type) == 2  # door +10, two moved
    check_specs_under_jit_and_vmap(room, num_envs=2)
    with pytest.raises(ValueError, match="each also as centralised:NAME"):
        envs_jax.make("centralised:go")


@pytest.mark.timeout(300)
def test_centralised_controller_trains_through_the_unchanged_engine():
    """PG agents on a centralised Escape Room: one agent, the team's return."""
    config = TrainConfig(env="centralised:escape_room",
                         env_params={"n_agents": 2, "n_required": 1}, agent=golden.TINY_PG,
                         mechanism=NoMechanismConfig(), episodes=20, chunk_episodes=10,
                         eval_period=10, eval_episodes=2, num_seeds=2)
    validate(config)
    result = run(config, progress=False)
    assert result.metrics["return_per_agent"].shape[-1] == 1
    assert np.isfinite(result.eval_metrics["eval/return"]).all()
    assert result.metrics["action_freq"].shape[-1] == 9
