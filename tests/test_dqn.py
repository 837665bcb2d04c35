"""Double DQN as an independent learner (issue 19): its target and epsilon schedule
against hand-worked numbers, its own replay, and learning to cooperate where
cooperating pays every agent (the IPD's team reward)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import DQNConfig
from agents.base import AgentTrajectory
from agents.dqn import DQNAgent, double_dqn_target, epsilon_at
from jaxsim.config import SharedRewardConfig, escape_room, matrix_game, validate
from jaxsim.runner import run


def test_double_dqn_target_by_hand():
    next_online = jnp.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])  # argmax: 1, 0
    next_target = jnp.array([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])  # read at 1, 0: 20, 7
    y = double_dqn_target(jnp.array([1.0, -1.0]), jnp.array([0.0, 1.0]), next_online,
                          next_target, 0.9)
    np.testing.assert_allclose(y, [1.0 + 0.9 * 20.0, -1.0], rtol=1e-6)  # done: no bootstrap


def test_epsilon_falls_linearly_then_stays():
    config = DQNConfig(epsilon_start=1.0, epsilon_finish=0.1, exploration_steps=100)
    np.testing.assert_allclose(
        [float(epsilon_at(config, jnp.asarray(s))) for s in (0, 25, 50, 100, 1000)],
        [1.0, 0.775, 0.55, 0.1, 0.1], rtol=1e-6)


def test_dqn_stores_its_valid_steps_and_learns_only_once_ready():
    config = DQNConfig(batch_size=4, learning_starts=6, train_interval=2, buffer_size=16)
    agent = DQNAgent(config, (3,), 2)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    traj = AgentTrajectory(obs=obs, action=jnp.array([0, 1, 1, 0]),
                           reward=jnp.array([1.0, 0.0, 2.0, 0.0]),
                           mask=jnp.array([1.0, 1.0, 1.0, 0.0]), next_obs=obs,
                           done=jnp.array([0.0, 0.0, 1.0, 0.0]))
    update = jax.jit(agent.update)
    first, metrics = update(state, traj)
    assert int(first.buffer.size) == 3 and int(first.steps) == 3  # the padding step is not
    assert int(first.updates) == 0 and float(metrics["td_loss"]) == 0.0  # 3 < 6: not yet
    for a, b in zip(jax.tree.leaves(first.params["q"]), jax.tree.leaves(state.params["q"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    second, _ = update(first, traj)
    assert int(second.buffer.size) == 6 and int(second.updates) == 2  # 4 steps: 2 updates
    np.testing.assert_array_equal(second.buffer.data.reward[:6], [1, 0, 2, 1, 0, 2])
    assert not np.allclose(jax.tree.leaves(second.params["q"])[0],
                           jax.tree.leaves(state.params["q"])[0])


def test_dqn_configs_are_checked_and_id_refuses_to_model_them():
    with pytest.raises(ValueError, match="learning_starts .* exceeds buffer_size"):
        validate(matrix_game("ipd", "none").replace(
            agent=DQNConfig(learning_starts=100, buffer_size=10)))
    with pytest.raises(ValueError, match="DQNConfig agents declare no such step"):
        validate(escape_room(3, 1, "id").replace(agent=DQNConfig()))


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_dqn_agents_learn_to_cooperate_on_the_team_reward():
    """The learner alone, on a task it should solve: with the IPD's team reward, 4
    seeds explore at first (epsilon from 1) and end near the optimum (30 a game)."""
    config = matrix_game("ipd", "none", episodes=1000, chunk_episodes=50, eval_period=500,
                         num_seeds=4, agent=DQNConfig(learning_starts=200, exploration_steps=2500,
                                                      train_interval=5,
                                                      target_update_period=50)).replace(
        mechanism=SharedRewardConfig())
    result = run(config, progress=False)
    coop = result.episode.action_freq[..., 0].mean(-1).mean(-1)  # per chunk, seed mean
    assert coop[0] < 0.7 < 0.9 < coop[-2:].mean(), coop.round(2)
    assert result.eval_metrics["eval/return"][-1].mean() > 27.0
