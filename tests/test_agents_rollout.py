"""PG learner arithmetic and the masked rollout of episodes that end early."""

from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jumanji import specs

from agents.base import AgentTrajectory
from agents.pg import PGAgent, discounted_reward_to_go
from envs_jax.base import MultiAgentEnv
from jaxsim.config import PGConfig
from jaxsim.rollout import rollout
from mechanism.none import NoMechanism


def test_reward_to_go_hand_worked():
    reward = jnp.array([1.0, 2.0, 3.0, 7.0])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])  # the episode ended after 3 steps
    # gamma 0.5: G2 = 3, G1 = 2 + 1.5 = 3.5, G0 = 1 + 1.75 = 2.75; padding 0.
    np.testing.assert_allclose(discounted_reward_to_go(reward, mask, 0.5), [2.75, 3.5, 3.0, 0.0])


def test_discounted_reward_mode_weights_each_step():
    agent = PGAgent(PGConfig(gamma=0.5, return_mode="discounted_reward"), (3,), 2)
    weights = agent.step_weights(jnp.array([4.0, 4.0, 4.0]), jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(weights, [4.0, 2.0, 0.0])


def test_pg_step_raises_probability_of_rewarded_action():
    agent = PGAgent(PGConfig(lr=0.1, entropy_coef=0.0), (3,), 2)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.ones((4, 3))
    traj = AgentTrajectory(obs=obs, action=jnp.array([1, 1, 1, 1]),
                           reward=jnp.array([1.0, 1.0, 1.0, 1.0]), mask=jnp.ones(4),
                           next_obs=obs, done=jnp.array([0.0, 0.0, 0.0, 1.0]))
    before = agent.policy(state.params, obs[0]).probs[1]
    new_state, metrics = agent.update(state, traj)
    after = agent.policy(new_state.params, obs[0]).probs[1]
    assert float(after) > float(before)
    assert np.isfinite(float(metrics["policy_loss"]))
    # Masked steps contribute nothing: masking all steps leaves the parameters alone.
    frozen, _ = agent.update(state, traj.replace(mask=jnp.zeros(4)))
    for a, b in zip(jax.tree.leaves(frozen.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


@struct.dataclass
class CountdownState:
    left: jax.Array
    t: jax.Array


class Countdown(MultiAgentEnv):
    """Test env: each episode lasts a random 1..4 steps; reward = step index + 1."""

    num_agents = 2
    num_actions = 2
    max_steps = 4

    @cached_property
    def observation_spec(self):
        return specs.Array((2, 1), jnp.float32, "observation")

    def reset(self, key):
        state = CountdownState(left=jax.random.randint(key, (), 1, 5), t=jnp.asarray(0))
        return state, self._first_timestep(jnp.zeros((2, 1)))

    def step(self, state, action):
        t = state.t + 1
        state = CountdownState(left=state.left - 1, t=t)
        obs = jnp.full((2, 1), t, jnp.float32)
        return state, self._timestep(obs, jnp.full((2,), t, jnp.float32), state.left <= 0)


def test_early_ends_are_masked_and_batched_equal_alone():
    env = Countdown()
    agent = PGAgent(PGConfig(), (1,), 2)
    params = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params
    mech = NoMechanism(2)
    play = lambda k: rollout(env, agent, mech, params, mech.init(k), k)
    keys = jax.random.split(jax.random.PRNGKey(1), 16)
    batch = jax.jit(jax.vmap(play))(keys)
    lengths = np.asarray(batch.mask.sum(1))
    assert set(lengths.tolist()) == {1.0, 2.0, 3.0, 4.0}
    for i, key in enumerate(keys):
        alone = jax.jit(play)(key)
        row = jax.tree.map(lambda z, i=i: z[i], batch)
        for x, y in zip(jax.tree.leaves(alone), jax.tree.leaves(row), strict=True):
            np.testing.assert_array_equal(x, y)
        n = int(lengths[i])
        mask = np.asarray(alone.mask)
        np.testing.assert_array_equal(mask, [1.0] * n + [0.0] * (4 - n))  # a prefix
        # Rewards 1..n on live steps, nothing after the end; done only on the last step.
        np.testing.assert_array_equal(alone.reward[:, 0], np.arange(1, 5) * mask)
        np.testing.assert_array_equal(alone.done, np.eye(4)[n - 1])
