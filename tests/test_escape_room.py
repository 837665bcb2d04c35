"""Escape Room: every rule of SPEC §1.2 on hand-worked joint actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jumanji.types import StepType

import envs_jax
from tests.env_checks import check_specs_under_jit_and_vmap
from envs_jax.escape_room import optimal_joint_action


def play(env, joint_actions):
    state, first = env.reset(jax.random.PRNGKey(0))
    steps = []
    for action in joint_actions:
        state, ts = env.step(state, jnp.asarray(action))
        steps.append(ts)
    return first, steps


@pytest.mark.parametrize("n,m,best", [(5, 2, 28), (10, 5, 45), (2, 1, 9)])
def test_one_step_optimum_ends_the_episode(n, m, best):
    env = envs_jax.make("escape_room", n_agents=n, n_required=m)
    assert env.optimal_return == best
    _, (ts,) = play(env, [optimal_joint_action(n, m)])
    assert float(ts.reward.sum()) == best
    np.testing.assert_array_equal(ts.reward, [-1.0] * m + [10.0] * (n - m))
    assert int(ts.step_type) == int(StepType.LAST)
    np.testing.assert_array_equal(ts.discount, np.zeros(n))


def test_too_few_at_the_lever_opens_nothing():
    env = envs_jax.make("escape_room", n_agents=5, n_required=2)
    _, (ts,) = play(env, [[0, 2, 2, 2, 2]])
    np.testing.assert_array_equal(ts.reward, [-1, -1, -1, -1, -1])  # everyone moved, no exit
    assert int(ts.step_type) == int(StepType.MID)


def test_staying_costs_nothing_and_the_door_counts_only_this_step():
    env = envs_jax.make("escape_room", n_agents=3, n_required=1)
    _, steps = play(env, [
        [1, 1, 1],  # everyone stays at the start: 0 each
        [1, 2, 2],  # two walk to the closed door: -1 each
        [0, 2, 2],  # agent 0 pulls while 1 and 2 wait at the door: open, +10 each
    ])
    np.testing.assert_array_equal(steps[0].reward, [0, 0, 0])
    np.testing.assert_array_equal(steps[1].reward, [0, -1, -1])
    assert int(steps[1].step_type) == int(StepType.MID)
    np.testing.assert_array_equal(steps[2].reward, [-1, 10, 10])
    assert int(steps[2].step_type) == int(StepType.LAST)
    # Pulling in an earlier step opens nothing now: the lever counts in its own step only.
    _, steps = play(env, [[0, 1, 1], [1, 2, 1]])
    np.testing.assert_array_equal(steps[1].reward, [-1, -1, 0])
    assert int(steps[1].step_type) == int(StepType.MID)


def test_episode_stops_after_five_steps():
    env = envs_jax.make("escape_room", n_agents=5, n_required=2)
    _, steps = play(env, [[1] * 5] * 5)
    assert [int(ts.step_type) for ts in steps] == [1, 1, 1, 1, 2]
    assert float(steps[-1].discount[0]) == 0.0


def test_observation_is_own_position_then_others_in_id_order():
    env = envs_jax.make("escape_room", n_agents=3, n_required=1)
    first, (ts,) = play(env, [[0, 1, 2]])
    np.testing.assert_array_equal(first.observation[1], [0, 1, 0] * 3)  # all at the start
    lever, start, door = [1, 0, 0], [0, 1, 0], [0, 0, 1]
    np.testing.assert_array_equal(ts.observation[0], lever + start + door)
    np.testing.assert_array_equal(ts.observation[1], start + lever + door)
    np.testing.assert_array_equal(ts.observation[2], door + lever + start)


def test_specs_validate_under_jit_and_vmap():
    check_specs_under_jit_and_vmap(envs_jax.make("escape_room", n_agents=5, n_required=2), 8)
    check_specs_under_jit_and_vmap(envs_jax.make("escape_room", n_agents=10, n_required=5), 2)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match=r"n_required \(5\) must be below n_agents \(5\)"):
        envs_jax.make("escape_room", n_agents=5, n_required=5)
    with pytest.raises(ValueError, match="n_agents must be an integer >= 2"):
        envs_jax.make("escape_room", n_agents=1, n_required=1)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['m'\]"):
        envs_jax.make("escape_room", m=2)


def test_early_ending_episodes_in_a_vmapped_batch_equal_each_alone():
    from agents.pg import PGAgent
    from jaxsim.config import PGConfig
    from jaxsim.rollout import rollout
    from mechanism.none import NoMechanism

    env = envs_jax.make("escape_room", n_agents=2, n_required=1)
    agent = PGAgent(PGConfig(hidden=(8,)), env.observation_spec.shape[1:], env.num_actions)
    params = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params
    mech = NoMechanism(2)
    play_one = lambda k: rollout(env, agent, mech, params, mech.init(k), k)
    keys = jax.random.split(jax.random.PRNGKey(3), 32)
    batch = jax.jit(jax.vmap(play_one))(keys)
    lengths = np.asarray(batch.mask.sum(1)).astype(int)
    assert lengths.min() < env.max_steps and lengths.max() == env.max_steps  # both kinds
    for i, key in enumerate(keys):
        alone = jax.jit(play_one)(key)
        row = jax.tree.map(lambda z, i=i: z[i], batch)
        for x, y in zip(jax.tree.leaves(alone), jax.tree.leaves(row), strict=True):
            np.testing.assert_array_equal(x, y)
        mask = np.asarray(alone.mask)
        n = lengths[i]
        np.testing.assert_array_equal(mask, [1.0] * n + [0.0] * (env.max_steps - n))
        np.testing.assert_array_equal(np.asarray(alone.reward)[n:], 0.0)  # nothing after
        assert float(alone.done[n - 1]) == 1.0 and float(np.asarray(alone.done).sum()) == 1.0
