"""Actor-critic learner for image observations (SPEC §2, Cleanup): one update per
episode.

Critic: TD(0) toward y_t = r_t + gamma (1 - d_t) V_target(o'_t), mean squared over the
episode's valid steps, Adam; then the target moves toward it by `polyak`. Actor: the
advantage of the just-updated critic, A_t = r_t + gamma (1 - d_t) V(o'_t) - V(o_t),
loss -sum_t log pi(a_t | o_t) A_t - entropy_coef sum_t H(pi(. | o_t)), Adam. The
advantage's value terms are constants for the actor, but its reward is not: the ID
baseline differentiates the actor's update with respect to the incentives in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.base import AgentTrajectory, Learner
from agents.networks import ConvNet
from envs_jax import checks


@dataclass(frozen=True)
class ACConfig:
    """Actor-critic agents for image observations (SPEC §2, Cleanup column): actor and
    critic each Conv(conv_filters, 3x3, SAME) + ReLU -> hidden -> head; TD(0) critic
    toward r + gamma (1 - d) V_target(o'), mean squared, with a Polyak target; the actor
    follows the advantage of the just-updated critic, loss summed over steps."""

    conv_filters: int = 6
    hidden: tuple[int, ...] = (64, 64)
    lr_actor: float = 1.959e-4
    lr_critic: float = 7.445e-5
    entropy_coef: float = 0.0814
    gamma: float = 0.99
    polyak: float = 0.01  # target <- (1 - polyak) target + polyak critic


# The independent-AC baseline's own learning rates and entropy (SPEC §2).
INDEPENDENT_AC = ACConfig(lr_actor=6.73e-4, lr_critic=5.54e-4, entropy_coef=0.1)


def check(config: ACConfig, env, run) -> None:
    """Raise ValueError on an ACConfig that cannot work with `env`."""
    checks.hidden_layers("agent.hidden", config.hidden)
    checks.positive_int("agent.conv_filters", config.conv_filters)
    checks.positive("agent.lr_actor", config.lr_actor)
    checks.positive("agent.lr_critic", config.lr_critic)
    checks.non_negative("agent.entropy_coef", config.entropy_coef)
    checks.finite_in("agent.gamma", config.gamma, 0, 1)
    checks.finite_in("agent.polyak", config.polyak, 0, 1, low_open=True)
    checks.image_observations("ACConfig's conv networks need", env, run.env)


@struct.dataclass
class ACState:
    """params: the actor's (all that `act` needs); the rest is the agent's own."""

    params: dict
    critic: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


class ACAgent(Learner):
    """One independent actor-critic learner; the engine stacks N on an agent axis."""

    check_config = staticmethod(check)

    def __init__(self, config: ACConfig, obs_shape: tuple[int, ...], num_actions: int):
        super().__init__(config, obs_shape, num_actions)
        self.actor = ConvNet(config.conv_filters, tuple(config.hidden), num_actions)
        self.critic = ConvNet(config.conv_filters, tuple(config.hidden), 1)
        self.actor_optimizer = optax.adam(config.lr_actor)
        self.critic_optimizer = optax.adam(config.lr_critic)


    def init(self, key: jax.Array) -> ACState:
        actor_key, critic_key = jax.random.split(key)
        example = jnp.zeros((1, *self.obs_shape), jnp.float32)
        params = self.actor.init(actor_key, example)
        critic = self.critic.init(critic_key, example)
        return ACState(params=params, critic=critic, target_critic=critic,
                       actor_opt=self.actor_optimizer.init(params),
                       critic_opt=self.critic_optimizer.init(critic))

    def policy(self, params, obs: jax.Array) -> distrax.Categorical:
        return distrax.Categorical(logits=self.actor.apply(params, obs))

    def act(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Sample an action `i32[]` for one observation."""
        return self.policy(params, obs).sample(seed=key).astype(jnp.int32)

    def value(self, critic, obs: jax.Array) -> jax.Array:
        return self.critic.apply(critic, obs)[..., 0]

    def critic_loss(self, critic, target_critic, traj: AgentTrajectory) -> jax.Array:
        next_v = jax.lax.stop_gradient(self.value(target_critic, traj.next_obs))
        target = jax.lax.stop_gradient(traj.reward) + self.config.gamma * (1 - traj.done) * next_v
        error = self.value(critic, traj.obs) - target
        return jnp.sum(traj.mask * error**2) / jnp.maximum(traj.mask.sum(), 1.0)

    def actor_loss(self, params, critic, traj: AgentTrajectory) -> tuple[jax.Array, dict]:
        v = jax.lax.stop_gradient(self.value(critic, traj.obs))
        next_v = jax.lax.stop_gradient(self.value(critic, traj.next_obs))
        advantage = traj.reward + self.config.gamma * (1 - traj.done) * next_v - v
        dist = self.policy(params, traj.obs)
        entropy_sum = jnp.sum(traj.mask * dist.entropy())
        pg_loss = -jnp.sum(traj.mask * dist.log_prob(traj.action) * advantage)
        loss = pg_loss - self.config.entropy_coef * entropy_sum
        steps = jnp.maximum(traj.mask.sum(), 1.0)
        return loss, {"policy_loss": pg_loss, "entropy": entropy_sum / steps}

    def inner_loss(self, state: ACState, params, traj: AgentTrajectory) -> jax.Array:
        """The loss of the plain SGD step (at `inner_lr`) that the ID baseline assumes
        the actor takes: the actor's loss with the advantage of `state.critic`,
        differentiable in `traj.reward`."""
        return self.actor_loss(params, state.critic, traj)[0]

    @property
    def model_lr(self) -> float:  # the actor's rate, as ID's own model of this agent
        return self.inner_lr

    @property
    def inner_lr(self) -> float:
        return self.config.lr_actor

    @staticmethod
    def with_critic_of(state: ACState, updated: ACState) -> ACState:
        """`state` with the critic of `updated`, the same agent after its update on the
        episode `state` played: the critic whose advantage its actor step followed."""
        return state.replace(critic=updated.critic)

    def update_critic(self, state: ACState, traj: AgentTrajectory):
        loss, grads = jax.value_and_grad(self.critic_loss)(state.critic, state.target_critic,
                                                           traj)
        updates, critic_opt = self.critic_optimizer.update(grads, state.critic_opt,
                                                           state.critic)
        critic = optax.apply_updates(state.critic, updates)
        target = optax.incremental_update(critic, state.target_critic, self.config.polyak)
        return state.replace(critic=critic, target_critic=target, critic_opt=critic_opt), loss

    def update_actor(self, state: ACState, traj: AgentTrajectory):
        grads, metrics = jax.grad(self.actor_loss, has_aux=True)(state.params, state.critic,
                                                                 traj)
        updates, actor_opt = self.actor_optimizer.update(grads, state.actor_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, actor_opt=actor_opt), metrics

    def update(self, state: ACState, traj: AgentTrajectory) -> tuple[ACState, dict]:
        state, critic_loss = self.update_critic(state, traj)
        state, metrics = self.update_actor(state, traj)
        return state, {**metrics, "critic_loss": critic_loss}
