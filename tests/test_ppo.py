"""PPO as an independent learner (issue 19): GAE, the clipped surrogate and the
clipped value loss against hand-worked numbers; it plugs in through the registry and
learns to cooperate where cooperating pays every agent (the IPD's team reward)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import PPOConfig
from agents.base import AgentTrajectory
from agents.ppo import PPOAgent, clipped_surrogate, clipped_value_loss, gae
from jaxsim.config import SharedRewardConfig, escape_room, matrix_game, validate
from jaxsim.runner import run


def test_gae_by_hand():
    reward, value = jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 0.2, 0.1])
    next_value, done = jnp.array([0.2, 0.1, 0.0]), jnp.array([0.0, 0.0, 1.0])
    advantage, returns = gae(reward, value, next_value, done, jnp.ones(3), 0.9, 0.5)
    # delta = 0.68, -0.11, 1.9; A2 = 1.9, A1 = -0.11 + 0.45 * 1.9, A0 = 0.68 + 0.45 * A1
    np.testing.assert_allclose(advantage, [1.01525, 0.745, 1.9], rtol=1e-6)
    np.testing.assert_allclose(returns, [1.51525, 0.945, 2.0], rtol=1e-6)
    # An episode that ended (done) at step 1: step 2 is padding and bootstraps nothing.
    advantage, _ = gae(jnp.array([1.0, 0.0, 5.0]), value, next_value,
                       jnp.array([0.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 0.0]), 0.9, 0.5)
    np.testing.assert_allclose(advantage, [0.59, -0.2, 0.0], rtol=1e-6)


def test_clipped_losses_by_hand():
    ratio = jnp.array([1.5, 0.5, 1.0, 0.5, 3.0])
    advantage = jnp.array([1.0, 1.0, -1.0, -1.0, 7.0])
    mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last row is padding
    loss = clipped_surrogate(jnp.log(ratio), jnp.zeros(5), advantage, mask, 0.2)
    # min(rho A, clip(rho) A): 1.2 (clipped), 0.5, -1, -0.8 (clipped); mean, negated
    np.testing.assert_allclose(loss, -(1.2 + 0.5 - 1.0 - 0.8) / 4, rtol=1e-6)
    value_loss = clipped_value_loss(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5]),
                                    jnp.array([2.0, 0.0]), jnp.ones(2), 0.2)
    # clipped values 0.7, 0.3: max(1.0, 1.69) and max(0, 0.09); half the mean
    np.testing.assert_allclose(value_loss, 0.5 * (1.69 + 0.09) / 2, rtol=1e-6)


def test_ppo_update_moves_the_policy_and_uses_only_valid_steps():
    agent = PPOAgent(PPOConfig(num_minibatches=2), (3,), 2)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    traj = AgentTrajectory(obs=obs, action=jnp.array([0, 1, 0, 1, 0]),
                           reward=jnp.array([1.0, 0.0, 1.0, 0.0, 0.0]),
                           mask=jnp.array([1.0, 1.0, 1.0, 1.0, 0.0]), next_obs=obs,
                           done=jnp.array([0.0, 0.0, 0.0, 1.0, 0.0]))
    new, metrics = jax.jit(agent.update)(state, traj)
    assert not np.allclose(jax.tree.leaves(new.params)[0], jax.tree.leaves(state.params)[0])
    assert set(metrics) == {"policy_loss", "value_loss", "entropy"}
    # The padding step's contents do not matter.
    other = traj.replace(obs=traj.obs.at[4].set(100.0), action=traj.action.at[4].set(1),
                         reward=traj.reward.at[4].set(-50.0))
    again, _ = jax.jit(agent.update)(state, other)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(again), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_one_step_episode_teaches_only_unstandardised_advantages():
    """ER's successful episodes last one step: standardised within its minibatch, the
    step's advantage is 0 and the policy gradient vanishes (only the entropy term
    moves it); with advantage_norm "none" the raw advantage drives the policy."""
    obs = jnp.ones((5, 3))
    traj = AgentTrajectory(obs=obs, action=jnp.zeros(5, jnp.int32),
                           reward=jnp.array([10.0, 0, 0, 0, 0]),
                           mask=jnp.array([1.0, 0, 0, 0, 0]), next_obs=obs,
                           done=jnp.array([1.0, 0, 0, 0, 0]))
    moved = {}
    for norm in ("minibatch", "none"):
        agent = PPOAgent(PPOConfig(num_minibatches=1, ent_coef=0.0, advantage_norm=norm),
                         (3,), 2)
        state = agent.init(jax.random.PRNGKey(0))
        new, _ = jax.jit(agent.update)(state, traj)
        before = agent.policy(state.params, obs[0]).probs[0]
        moved[norm] = float(agent.policy(new.params, obs[0]).probs[0] - before)
    assert moved["minibatch"] == 0.0
    assert moved["none"] > 0.01  # the rewarded action made likelier
    with pytest.raises(ValueError, match="agent.advantage_norm"):
        validate(matrix_game("ipd", "none").replace(agent=PPOConfig(advantage_norm="batch")))


def test_ppo_configs_are_checked_and_id_refuses_to_model_them():
    validate(matrix_game("ipd", "none").replace(agent=PPOConfig(num_minibatches=5)))
    with pytest.raises(ValueError, match="num_minibatches \\(8\\) exceeds the episode's 5"):
        validate(matrix_game("ipd", "none").replace(agent=PPOConfig(num_minibatches=8)))
    with pytest.raises(ValueError, match="clip_eps must be a finite number"):
        validate(matrix_game("ipd", "none").replace(agent=PPOConfig(clip_eps=0.0)))
    with pytest.raises(ValueError, match="conv torso .* needs image observations"):
        validate(matrix_game("ipd", "none").replace(agent=PPOConfig(conv_filters=6)))
    with pytest.raises(ValueError, match="PPOConfig agents declare no such step"):
        validate(escape_room(3, 1, "id").replace(agent=PPOConfig()))


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_ppo_agents_learn_to_cooperate_on_the_team_reward():
    """The learner alone, on a task it should solve: with the IPD's team reward
    (cooperating pays 6 a step, anything else at most 5), 4 seeds go from half
    cooperation to most of it within 600 episodes."""
    config = matrix_game("ipd", "none", episodes=600, chunk_episodes=30, eval_period=300,
                         num_seeds=4, agent=PPOConfig(num_minibatches=1)).replace(
        mechanism=SharedRewardConfig())
    result = run(config, progress=False)
    coop = result.episode.action_freq[..., 0].mean(-1).mean(-1)  # per chunk, seed mean
    assert coop[:2].mean() < 0.6 < 0.75 < coop[-3:].mean(), coop.round(2)
    assert result.eval_metrics["eval/return"][-1].mean() > 25.0  # of 30 at the optimum
