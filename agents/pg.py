"""REINFORCE policy-gradient learner (SPEC §2): one plain SGD step per episode.

Loss of an episode = -sum_t log pi(a_t | o_t) * weight_t - entropy_coef * sum_t H(pi(.|o_t)),
summed over the episode's valid steps, with weight_t the discounted reward-to-go
(default) or gamma^t * r_t (`return_mode="discounted_reward"`, as the public code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.base import AgentTrajectory, Learner, flat_obs
from agents.networks import MLP
from envs_jax import checks


@dataclass(frozen=True)
class PGConfig:
    """REINFORCE agents (SPEC §2); defaults are the matrix-game column."""

    hidden: tuple[int, ...] = (16, 8)
    lr: float = 1e-3
    entropy_coef: float = 0.05
    gamma: float = 0.99
    return_mode: Literal["reward_to_go", "discounted_reward"] = "reward_to_go"
    # The agents' optimiser (SPEC §6 row 3: the authors ran ID's ER(5,2) agents with
    # Adam); ID's model of their step stays one plain SGD step at `lr` either way.
    optimizer: Literal["sgd", "adam"] = "sgd"
    # Weight initialisation: orthogonal(sqrt 2) (SPEC §2) or Glorot-uniform, the
    # TensorFlow default of the ID authors' code (SPEC §7).
    init: Literal["orthogonal", "glorot"] = "orthogonal"


def check(config: PGConfig, env, run) -> None:
    """Raise ValueError on a PGConfig that cannot work."""
    del env, run
    checks.hidden_layers("agent.hidden", config.hidden)
    checks.positive("agent.lr", config.lr)
    checks.non_negative("agent.entropy_coef", config.entropy_coef)
    checks.finite_in("agent.gamma", config.gamma, 0, 1)
    checks.require(config.return_mode in ("reward_to_go", "discounted_reward"),
                   f"agent.return_mode must be 'reward_to_go' or 'discounted_reward', "
                   f"got {config.return_mode!r}")
    checks.choice("agent.optimizer", config.optimizer, ("sgd", "adam"))
    checks.choice("agent.init", config.init, ("orthogonal", "glorot"))


@struct.dataclass
class PGState:
    params: dict
    opt_state: optax.OptState


def discounted_reward_to_go(reward: jax.Array, mask: jax.Array, gamma: float) -> jax.Array:
    """G_t = sum_{t' >= t, valid} gamma^(t'-t) r_t' over a masked episode `f32[T]`."""

    def back(carry, inputs):
        r, m = inputs
        g = m * (r + gamma * carry)
        return g, g

    _, returns = jax.lax.scan(back, jnp.zeros((), reward.dtype), (reward, mask), reverse=True)
    return returns


class PGAgent(Learner):
    """One independent PG learner; the engine stacks N of them on an agent axis."""

    check_config = staticmethod(check)

    def __init__(self, config: PGConfig, obs_shape: tuple[int, ...], num_actions: int):
        super().__init__(config, obs_shape, num_actions)
        self.network = MLP(hidden=tuple(config.hidden), out=num_actions, weight_init=config.init)
        # ID's model of this agent's step is plain SGD at `lr` whatever this is (`inner_lr`).
        self.optimizer = {"sgd": optax.sgd, "adam": optax.adam}[config.optimizer](config.lr)


    def init(self, key: jax.Array) -> PGState:
        params = self.network.init(key, jnp.zeros((1, *self.obs_shape), jnp.float32))
        return PGState(params=params, opt_state=self.optimizer.init(params))

    def policy(self, params, obs: jax.Array) -> distrax.Categorical:
        return distrax.Categorical(logits=self.network.apply(params, flat_obs(obs, self.obs_shape)))

    def act(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Sample an action `i32[]` for one observation."""
        return self.policy(params, obs).sample(seed=key).astype(jnp.int32)

    def step_weights(self, reward: jax.Array, mask: jax.Array) -> jax.Array:
        gamma = self.config.gamma
        if self.config.return_mode == "reward_to_go":
            return discounted_reward_to_go(reward, mask, gamma)
        discount = gamma ** jnp.arange(reward.shape[0], dtype=reward.dtype)
        return mask * discount * reward

    def loss(self, params, traj: AgentTrajectory) -> tuple[jax.Array, dict]:
        dist = self.policy(params, traj.obs)
        # No stop_gradient: the weights do not depend on the parameters, and the ID
        # baseline differentiates this loss with respect to the rewards' incentives.
        weights = self.step_weights(traj.reward, traj.mask)
        log_prob = dist.log_prob(traj.action)
        entropy = dist.entropy()
        pg_loss = -jnp.sum(traj.mask * log_prob * weights)
        entropy_sum = jnp.sum(traj.mask * entropy)
        loss = pg_loss - self.config.entropy_coef * entropy_sum
        mean_entropy = entropy_sum / jnp.maximum(traj.mask.sum(), 1)
        return loss, {"policy_loss": pg_loss, "entropy": mean_entropy}

    def inner_loss(self, state: PGState, params, traj: AgentTrajectory) -> jax.Array:
        """The loss of the plain SGD step (at `inner_lr`) that the ID baseline assumes
        this agent takes; differentiable in `traj.reward`."""
        del state
        return self.loss(params, traj)[0]

    @property
    def inner_lr(self) -> float:
        return self.config.lr

    def update(self, state: PGState, traj: AgentTrajectory) -> tuple[PGState, dict]:
        grads, metrics = jax.grad(self.loss, has_aux=True)(state.params, traj)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return PGState(params=params, opt_state=opt_state), metrics
