"""Double DQN (van Hasselt et al., 2016) as an independent learner.

The agent keeps its own replay of its own transitions (observation, action, the
reward it learns from, next observation, termination). After each episode it stores
the episode's valid steps, then, once the replay holds `learning_starts` of them,
takes one Adam step per `train_interval` steps of the episode (at least one) on a
uniform minibatch: the squared TD error toward the Double-DQN target
r + gamma (1 - d) Q_target(o', argmax_a Q(o', a)); the target network copies the
online one every `target_update_period` updates. It acts epsilon-greedily, epsilon
falling linearly from `epsilon_start` to `epsilon_finish` over `exploration_steps`
environment steps (`act` reads epsilon from the agent's params). Defaults follow
PureJaxRL's DQN (`purejaxrl/dqn.py`: lr 2.5e-4, gamma 0.99, epsilon 1 -> 0.05, Double-
DQN target, hard target copies, batch 64 here for its 128), scaled to these short
episodes; image observations: the suite's Conv(conv_filters, 3x3) torso.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents import buffer as replay
from agents.base import AgentTrajectory, Learner, flat_obs
from agents.networks import MLP, ConvNet
from envs_jax import checks


@dataclass(frozen=True)
class DQNConfig:
    hidden: tuple[int, ...] = (64, 64)
    conv_filters: int = 0  # > 0: image observations, a 3x3 conv torso first
    lr: float = 2.5e-4
    gamma: float = 0.99
    buffer_size: int = 10_000
    batch_size: int = 64
    learning_starts: int = 500  # transitions in the replay before the first update
    train_interval: int = 10  # environment steps per update
    target_update_period: int = 100  # updates between copies into the target network
    epsilon_start: float = 1.0
    epsilon_finish: float = 0.05
    exploration_steps: int = 10_000


def check(config: DQNConfig, env, run) -> None:
    """Raise ValueError on a DQNConfig that cannot work with `env`."""
    checks.hidden_layers("agent.hidden", config.hidden)
    checks.require(checks.is_int(config.conv_filters) and config.conv_filters >= 0,
                   f"agent.conv_filters must be an integer >= 0, got {config.conv_filters!r}")
    if config.conv_filters:
        checks.image_observations("DQNConfig's conv torso (conv_filters > 0) needs", env,
                                  run.env)
    checks.positive("agent.lr", config.lr)
    checks.finite_in("agent.gamma", config.gamma, 0, 1)
    for name in ("buffer_size", "batch_size", "learning_starts", "train_interval",
                 "target_update_period", "exploration_steps"):
        checks.positive_int(f"agent.{name}", getattr(config, name))
    checks.finite_in("agent.epsilon_start", config.epsilon_start, 0, 1)
    checks.finite_in("agent.epsilon_finish", config.epsilon_finish, 0, 1)
    checks.require(config.learning_starts <= config.buffer_size,
                   f"agent.learning_starts ({config.learning_starts}) exceeds buffer_size "
                   f"({config.buffer_size}): the agent would never learn")


def epsilon_at(config: DQNConfig, steps: jax.Array) -> jax.Array:
    """The linear schedule: epsilon_start at step 0, epsilon_finish from
    `exploration_steps` on."""
    fraction = jnp.clip(steps / config.exploration_steps, 0.0, 1.0)
    epsilon = config.epsilon_start + fraction * (config.epsilon_finish - config.epsilon_start)
    return jnp.asarray(epsilon, jnp.float32)


def double_dqn_target(reward, done, next_q_online, next_q_target, gamma: float):
    """r + gamma (1 - d) Q_target(o', argmax_a Q_online(o', a)), per row."""
    best = jnp.argmax(next_q_online, axis=-1)
    chosen = jnp.take_along_axis(next_q_target, best[..., None], axis=-1)[..., 0]
    return reward + gamma * (1.0 - done) * chosen


@struct.dataclass
class Step:
    """One of the agent's own transitions, as its replay stores it."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    done: jax.Array


@struct.dataclass
class DQNState:
    params: dict  # {"q": the online network, "epsilon": f32[]}: what `act` needs
    target: dict
    opt_state: optax.OptState
    buffer: replay.ReplayBuffer
    steps: jax.Array  # i32[]: environment steps seen
    updates: jax.Array  # i32[]: gradient steps taken
    key: jax.Array  # the minibatches' draws


class DQNAgent(Learner):
    """One independent Double-DQN learner; the engine stacks N on an agent axis."""

    check_config = staticmethod(check)

    def __init__(self, config: DQNConfig, obs_shape: tuple[int, ...], num_actions: int):
        super().__init__(config, obs_shape, num_actions)
        self.q_net = (ConvNet(config.conv_filters, tuple(config.hidden), num_actions)
                      if config.conv_filters else MLP(hidden=tuple(config.hidden),
                                                      out=num_actions))
        self.optimizer = optax.adam(config.lr)


    def _flat(self, obs: jax.Array) -> jax.Array:
        return obs if self.config.conv_filters else flat_obs(obs, self.obs_shape)

    def q_values(self, q_params, obs: jax.Array) -> jax.Array:
        return self.q_net.apply(q_params, self._flat(obs))

    def init(self, key: jax.Array) -> DQNState:
        net_key, key = jax.random.split(key)
        obs = jnp.zeros(self.obs_shape, jnp.float32)
        q = self.q_net.init(net_key, self._flat(obs[None]))
        example = Step(obs=obs, action=jnp.zeros((), jnp.int32),
                       reward=jnp.zeros((), jnp.float32), next_obs=obs,
                       done=jnp.zeros((), jnp.float32))
        zero = jnp.zeros((), jnp.int32)
        return DQNState(params={"q": q, "epsilon": epsilon_at(self.config, zero)},
                        target=q, opt_state=self.optimizer.init(q),
                        buffer=replay.init(example, self.config.buffer_size), steps=zero,
                        updates=zero, key=key)

    def model_policy(self, params, obs: jax.Array) -> distrax.Categorical:
        """A softmax over Q: the policy a mechanism that models learners by their policy
        (ID, agent_model "pg_step") assumes; this agent acts epsilon-greedily instead."""
        return distrax.Categorical(logits=self.q_values(params["q"], obs))

    def act(self, params, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Epsilon-greedy on Q: a uniform action with probability epsilon."""
        explore_key, action_key = jax.random.split(key)
        greedy = jnp.argmax(self.q_values(params["q"], obs[None])[0])
        uniform = jax.random.randint(action_key, (), 0, self.num_actions)
        explore = jax.random.uniform(explore_key) < params["epsilon"]
        return jnp.where(explore, uniform, greedy).astype(jnp.int32)

    def loss(self, q_params, target, batch: Step) -> jax.Array:
        y = double_dqn_target(batch.reward, batch.done, self.q_values(q_params, batch.next_obs),
                              self.q_values(target, batch.next_obs), self.config.gamma)
        q = jnp.take_along_axis(self.q_values(q_params, batch.obs), batch.action[:, None],
                                axis=-1)[:, 0]
        return jnp.mean((q - jax.lax.stop_gradient(y)) ** 2)

    def update(self, state: DQNState, traj: AgentTrajectory) -> tuple[DQNState, dict]:
        cfg = self.config
        steps = traj.mask.shape[0]
        items = Step(obs=traj.obs, action=traj.action, reward=traj.reward,
                     next_obs=traj.next_obs, done=traj.done)
        buffer = replay.add(state.buffer, items, traj.mask)
        ready = buffer.size >= cfg.learning_starts
        key, *draw_keys = jax.random.split(state.key, max(1, steps // cfg.train_interval) + 1)

        def one_update(carry, draw_key):
            q, target, opt_state, updates = carry
            batch = replay.sample_uniform(buffer, draw_key, cfg.batch_size)
            loss, grads = jax.value_and_grad(self.loss)(q, target, batch)
            change, new_opt = self.optimizer.update(grads, opt_state, q)
            stepped = (optax.apply_updates(q, change), new_opt, updates + 1)
            q, opt_state, updates = jax.tree.map(lambda a, b: jnp.where(ready, a, b), stepped,
                                                 (q, opt_state, updates))
            copy = ready & (updates % cfg.target_update_period == 0)
            target = jax.tree.map(lambda t, o: jnp.where(copy, o, t), target, q)
            return (q, target, opt_state, updates), loss

        (q, target, opt_state, updates), losses = jax.lax.scan(
            one_update, (state.params["q"], state.target, state.opt_state, state.updates),
            jnp.stack(draw_keys))
        seen = state.steps + traj.mask.sum().astype(jnp.int32)
        new_state = DQNState(params={"q": q, "epsilon": epsilon_at(cfg, seen)}, target=target,
                             opt_state=opt_state, buffer=buffer, steps=seen, updates=updates,
                             key=key)
        return new_state, {"td_loss": jnp.where(ready, losses.mean(), 0.0),
                           "epsilon": new_state.params["epsilon"]}
