"""The actor-critic learner (SPEC §2) against hand-computed targets on tiny inputs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents.ac import ACAgent
from agents.base import AgentTrajectory
from jaxsim.config import ACConfig

CONFIG = ACConfig(conv_filters=2, hidden=(8,), lr_actor=0.05, lr_critic=0.05,
                  entropy_coef=0.0, gamma=0.9, polyak=0.25)
OBS_SHAPE = (3, 3, 3)


def trajectory(key, steps=4, reward=(1.0, 0.0, 2.0, 0.5)):
    obs_key, next_key, action_key = jax.random.split(key, 3)
    return AgentTrajectory(
        obs=jax.random.uniform(obs_key, (steps, *OBS_SHAPE)),
        next_obs=jax.random.uniform(next_key, (steps, *OBS_SHAPE)),
        action=jax.random.randint(action_key, (steps,), 0, 6),
        reward=jnp.asarray(reward, jnp.float32),
        done=jnp.asarray([0.0, 0.0, 0.0, 1.0]),
        mask=jnp.ones(steps),
    )


def test_critic_td0_target_loss_and_polyak_by_hand():
    agent = ACAgent(CONFIG, OBS_SHAPE, 6)
    state = agent.init(jax.random.PRNGKey(0))
    # Make the target differ from the critic so that the test can tell them apart.
    state = state.replace(target_critic=jax.tree.map(lambda x: 0.5 * x + 0.1,
                                                     state.target_critic))
    traj = trajectory(jax.random.PRNGKey(1))
    v = np.asarray(agent.value(state.critic, traj.obs))
    v_next_target = np.asarray(agent.value(state.target_critic, traj.next_obs))
    y = np.asarray(traj.reward) + 0.9 * (1 - np.asarray(traj.done)) * v_next_target
    expected = np.mean((v - y) ** 2)
    loss = agent.critic_loss(state.critic, state.target_critic, traj)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    new_state, _ = agent.update_critic(state, traj)
    assert float(agent.critic_loss(new_state.critic, state.target_critic, traj)) < expected
    for new, old, target in zip(jax.tree.leaves(new_state.critic),
                                jax.tree.leaves(state.target_critic),
                                jax.tree.leaves(new_state.target_critic), strict=True):
        np.testing.assert_allclose(target, 0.75 * old + 0.25 * new, rtol=1e-5, atol=1e-7)


def test_actor_uses_the_advantage_of_the_just_updated_critic():
    agent = ACAgent(CONFIG, OBS_SHAPE, 6)
    state = agent.init(jax.random.PRNGKey(2))
    traj = trajectory(jax.random.PRNGKey(3))
    after_critic, _ = agent.update_critic(state, traj)
    v = agent.value(after_critic.critic, traj.obs)
    v_next = agent.value(after_critic.critic, traj.next_obs)
    advantage = traj.reward + 0.9 * (1 - traj.done) * v_next - v
    log_prob = agent.policy(state.params, traj.obs).log_prob(traj.action)
    expected = -float(jnp.sum(log_prob * advantage))
    loss, metrics = agent.actor_loss(state.params, after_critic.critic, traj)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # update() = critic first, then the actor on that critic.
    full, metrics = agent.update(state, traj)
    by_hand, _ = agent.update_actor(after_critic, traj)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(by_hand.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert set(metrics) == {"policy_loss", "entropy", "critic_loss"}


def test_actor_gradient_flows_into_the_reward_but_not_the_critic():
    """ID differentiates the actor's update with respect to the incentives inside the
    reward; the critic's values are constants for the actor."""
    agent = ACAgent(CONFIG, OBS_SHAPE, 6)
    state = agent.init(jax.random.PRNGKey(4))
    traj = trajectory(jax.random.PRNGKey(5))

    def loss_of_reward(reward):
        return agent.actor_loss(state.params, state.critic, traj.replace(reward=reward))[0]

    grad_reward = jax.grad(loss_of_reward)(traj.reward)
    log_prob = agent.policy(state.params, traj.obs).log_prob(traj.action)
    np.testing.assert_allclose(grad_reward, -log_prob, rtol=1e-5)
    grad_critic = jax.grad(lambda c: agent.actor_loss(state.params, c, traj)[0])(state.critic)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_critic))


def test_rewarded_action_becomes_more_likely_and_masked_steps_do_nothing():
    agent = ACAgent(CONFIG, OBS_SHAPE, 6)
    state = agent.init(jax.random.PRNGKey(6))
    traj = trajectory(jax.random.PRNGKey(7)).replace(action=jnp.full((4,), 3),
                                                     reward=jnp.full((4,), 5.0))
    before = agent.policy(state.params, traj.obs).probs[:, 3].mean()
    new_state, _ = agent.update(state, traj)
    after = agent.policy(new_state.params, traj.obs).probs[:, 3].mean()
    assert float(after) > float(before)
    frozen, _ = agent.update(state, traj.replace(mask=jnp.zeros(4)))
    for a, b in zip(jax.tree.leaves(frozen.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_networks_are_the_spec_shapes():
    agent = ACAgent(ACConfig(), (9, 9, 3), 6)
    state = agent.init(jax.random.PRNGKey(0))
    shapes = {"/".join(str(getattr(k, "key", k)) for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
    assert shapes["params/Conv_0/kernel"] == (3, 3, 3, 6)
    assert shapes["params/MLP_0/Dense_0/kernel"] == (9 * 9 * 6, 64)
    assert shapes["params/MLP_0/Dense_1/kernel"] == (64, 64)
    assert shapes["params/MLP_0/Dense_2/kernel"] == (64, 6)
    assert agent.act(state.params, jnp.zeros((9, 9, 3)), jax.random.PRNGKey(1)).shape == ()


def test_conv3x3_equals_flax_conv_with_the_same_parameters():
    """The im2col convolution the networks use gives nn.Conv's output (3x3, SAME,
    zero padding at every edge) from the same parameter tree, with extra batch axes."""
    from agents.networks import Conv3x3

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 9, 9, 3))
    ours = Conv3x3(6)
    params = ours.init(jax.random.PRNGKey(1), x)
    flax_conv = nn.Conv(6, (3, 3), padding="SAME")
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, flax_conv.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x),
                               rtol=1e-5, atol=1e-5)
