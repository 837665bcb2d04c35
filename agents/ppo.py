"""PPO (Schulman et al., 2017) as an independent learner: one update per episode.

After each episode: GAE(lambda) advantages and returns from the critic that acted
(the agent's parameters have not moved since the rollout, so the log-probabilities
and values of the acting policy are recomputed exactly), then `update_epochs` passes
over the episode's steps in `num_minibatches` shuffled minibatches (padded with
weightless rows where they do not divide the episode), each one Adam step
(global-norm clipped) on the clipped surrogate + vf_coef * the clipped value loss -
ent_coef * entropy, advantages normalised within the minibatch. Padding steps (an
episode that ended early) weigh nothing. The defaults are PureJaxRL's PPO
(`purejaxrl/ppo.py`: lr 2.5e-4, gamma 0.99, lambda 0.95, clip 0.2, ent 0.01, vf 0.5,
max grad norm 0.5, 4 epochs of 4 minibatches, tanh 64-64 actor and critic, orthogonal
heads of scale 0.01 and 1), without its learning-rate annealing (an independent
learner here does not know the run's length). Image observations (Cleanup): the
suite's Conv(conv_filters, 3x3) torso before each MLP.
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
from agents.networks import MLP, ConvNet
from envs_jax import checks


@dataclass(frozen=True)
class PPOConfig:
    hidden: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu"] = "tanh"
    conv_filters: int = 0  # > 0: image observations, a 3x3 conv torso first
    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    num_minibatches: int = 4  # of the episode's steps (padded with weightless rows)
    # "minibatch": advantages standardised within each minibatch (PureJaxRL's); "none":
    # as GAE gives them. A minibatch of one valid step standardises to 0, so an episode
    # that ends after one step (ER's open door) teaches "minibatch" nothing.
    advantage_norm: Literal["minibatch", "none"] = "minibatch"


def check(config: PPOConfig, env, run) -> None:
    """Raise ValueError on a PPOConfig that cannot work with `env`."""
    checks.hidden_layers("agent.hidden", config.hidden)
    checks.choice("agent.activation", config.activation, ("tanh", "relu"))
    checks.require(checks.is_int(config.conv_filters) and config.conv_filters >= 0,
                   f"agent.conv_filters must be an integer >= 0, got {config.conv_filters!r}")
    if config.conv_filters:
        checks.image_observations("PPOConfig's conv torso (conv_filters > 0) needs", env,
                                  run.env)
    for name in ("lr", "clip_eps", "max_grad_norm"):
        checks.positive(f"agent.{name}", getattr(config, name))
    for name in ("ent_coef", "vf_coef"):
        checks.non_negative(f"agent.{name}", getattr(config, name))
    checks.finite_in("agent.gamma", config.gamma, 0, 1)
    checks.finite_in("agent.gae_lambda", config.gae_lambda, 0, 1)
    checks.positive_int("agent.update_epochs", config.update_epochs)
    checks.positive_int("agent.num_minibatches", config.num_minibatches)
    checks.choice("agent.advantage_norm", config.advantage_norm, ("minibatch", "none"))
    checks.require(config.num_minibatches <= env.max_steps,
                   f"agent.num_minibatches ({config.num_minibatches}) exceeds the episode's "
                   f"{env.max_steps} steps ({run.env})")


def gae(reward, value, next_value, done, mask, gamma: float, lam: float):
    """(advantages, returns) f32[T] of one masked episode: delta_t = r_t + gamma (1 -
    d_t) V(o'_t) - V(o_t), A_t = delta_t + gamma lambda (1 - d_t) A_{t+1}, zero on
    padding; returns = A + V."""
    delta = reward + gamma * (1.0 - done) * next_value - value

    def back(carry, inputs):
        d, end, m = inputs
        a = m * (d + gamma * lam * (1.0 - end) * carry)
        return a, a

    _, advantage = jax.lax.scan(back, jnp.zeros((), reward.dtype), (delta, done, mask),
                                reverse=True)
    return advantage, advantage + value


def clipped_surrogate(log_prob, old_log_prob, advantage, mask, clip_eps: float):
    """-mean over valid steps of min(rho A, clip(rho, 1 - eps, 1 + eps) A)."""
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    objective = jnp.minimum(ratio * advantage, clipped * advantage)
    return -jnp.sum(mask * objective) / jnp.maximum(mask.sum(), 1.0)


def clipped_value_loss(value, old_value, target, mask, clip_eps: float):
    """0.5 mean over valid steps of max((V - G)^2, (V_old + clip(V - V_old) - G)^2)."""
    clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    loss = jnp.maximum((value - target) ** 2, (clipped - target) ** 2)
    return 0.5 * jnp.sum(mask * loss) / jnp.maximum(mask.sum(), 1.0)


@struct.dataclass
class PPOState:
    params: dict  # the actor's (all that `act` needs)
    critic: dict
    opt_state: optax.OptState
    key: jax.Array  # the minibatches' shuffling


class PPOAgent(Learner):
    """One independent PPO learner; the engine stacks N of them on an agent axis."""

    check_config = staticmethod(check)

    def __init__(self, config: PPOConfig, obs_shape: tuple[int, ...], num_actions: int):
        super().__init__(config, obs_shape, num_actions)
        if config.conv_filters:
            net = lambda out, scale: ConvNet(config.conv_filters, tuple(config.hidden), out,  # noqa: E731
                                             output_scale=scale, activation=config.activation)
        else:
            net = lambda out, scale: MLP(hidden=tuple(config.hidden), out=out,  # noqa: E731
                                         output_scale=scale, activation=config.activation)
        self.actor, self.critic_net = net(num_actions, 0.01), net(1, 1.0)
        self.optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                                     optax.adam(config.lr, eps=1e-5))


    def _flat(self, obs: jax.Array) -> jax.Array:
        return obs if self.config.conv_filters else flat_obs(obs, self.obs_shape)

    def init(self, key: jax.Array) -> PPOState:
        actor_key, critic_key, key = jax.random.split(key, 3)
        example = self._flat(jnp.zeros((1, *self.obs_shape), jnp.float32))
        params = self.actor.init(actor_key, example)
        critic = self.critic_net.init(critic_key, example)
        return PPOState(params=params, critic=critic,
                        opt_state=self.optimizer.init((params, critic)), key=key)

    def policy(self, params, obs: jax.Array) -> distrax.Categorical:
        return distrax.Categorical(logits=self.actor.apply(params, self._flat(obs)))

    def value(self, critic, obs: jax.Array) -> jax.Array:
        return self.critic_net.apply(critic, self._flat(obs))[..., 0]

    def act(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Sample an action `i32[]` for one observation."""
        return self.policy(params, obs).sample(seed=key).astype(jnp.int32)

    def loss(self, weights, batch: dict) -> tuple[jax.Array, dict]:
        """PPO's loss on one minibatch (rows of the episode with their old log-probs,
        old values, advantages and returns)."""
        params, critic = weights
        cfg = self.config
        mask = batch["mask"]
        steps = jnp.maximum(mask.sum(), 1.0)
        adv = batch["advantage"]
        if cfg.advantage_norm == "minibatch":
            mean = jnp.sum(mask * adv) / steps
            std = jnp.sqrt(jnp.sum(mask * (adv - mean) ** 2) / steps)
            adv = (adv - mean) / (std + 1e-8)
        dist = self.policy(params, batch["obs"])
        policy_loss = clipped_surrogate(dist.log_prob(batch["action"]), batch["log_prob"], adv,
                                        mask, cfg.clip_eps)
        value_loss = clipped_value_loss(self.value(critic, batch["obs"]), batch["value"],
                                        batch["return"], mask, cfg.clip_eps)
        entropy = jnp.sum(mask * dist.entropy()) / steps
        total = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def rows(self, state: PPOState, traj: AgentTrajectory) -> dict:
        """The episode's steps with what the acting policy and critic said of them."""
        cfg = self.config
        value = self.value(state.critic, traj.obs)
        advantage, returns = gae(traj.reward, value, self.value(state.critic, traj.next_obs),
                                 traj.done, traj.mask, cfg.gamma, cfg.gae_lambda)
        return {"obs": traj.obs, "action": traj.action, "mask": traj.mask,
                "log_prob": self.policy(state.params, traj.obs).log_prob(traj.action),
                "value": value, "advantage": advantage, "return": returns}

    def update(self, state: PPOState, traj: AgentTrajectory) -> tuple[PPOState, dict]:
        cfg = self.config
        rows = jax.tree.map(jax.lax.stop_gradient, self.rows(state, traj))
        steps = traj.mask.shape[0]
        pad = -steps % cfg.num_minibatches  # weightless rows (mask 0) fill the last batches
        rows = jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:],
                                                                     x.dtype)]), rows)
        steps += pad
        key, *epoch_keys = jax.random.split(state.key, cfg.update_epochs + 1)

        def minibatch(carry, batch):
            weights, opt_state = carry
            (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(weights, batch)
            updates, opt_state = self.optimizer.update(grads, opt_state, weights)
            return (optax.apply_updates(weights, updates), opt_state), metrics

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, steps)
            batches = jax.tree.map(lambda x: x[order].reshape(
                (cfg.num_minibatches, steps // cfg.num_minibatches) + x.shape[1:]), rows)
            return jax.lax.scan(minibatch, carry, batches)

        (weights, opt_state), metrics = jax.lax.scan(
            epoch, ((state.params, state.critic), state.opt_state), jnp.stack(epoch_keys))
        params, critic = weights
        new_state = PPOState(params=params, critic=critic, opt_state=opt_state, key=key)
        return new_state, jax.tree.map(jnp.mean, metrics)
