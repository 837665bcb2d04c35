"""What the engine hands an independent learner, and what it asks of one.

An agent is a small set of pure functions over its own train state (a pytree with a
`params` field, the part `act` needs):
`init(key) -> state`, `act(params, obs, key) -> action`, `update(state, trajectory)
-> (state, metrics)`. The engine stacks N states on a leading agent axis and `vmap`s
these functions over it; a learner never sees another agent's data or parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class AgentTrajectory:
    """One agent's view of one episode, time-major.

    obs, next_obs: f32[T, *obs_shape]; action: i32[T]; reward: f32[T] (what the agent
    learns from: r_env + r_inc, or the team's r_env under shared rewards); done: f32[T]
    1 where the step ended the episode by termination; mask: f32[T], 1 on steps that
    happened (episodes may end early).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    mask: jax.Array
    next_obs: jax.Array
    done: jax.Array


@struct.dataclass
class Trajectory:
    """One episode of all agents, time-major, padded to the env's `max_steps`.

    obs, next_obs: f32[T, N, *obs_shape]; action: i32[T, N];
    reward: f32[T, N] environment reward; incentive: f32[T, N] r_inc given at rollout;
    done: f32[T] 1 where the step ended the episode by termination;
    mask: f32[T] 1 on steps that happened, 0 on the padding after an early end;
    compact, compact_next: for environments with `compact(state)` (Cleanup), what a
    replay buffer stores instead of obs / next_obs (`env.observe_compact(*compact)` gives them
    back); None for the others.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    incentive: jax.Array
    next_obs: jax.Array
    done: jax.Array
    mask: jax.Array
    compact: Any = None
    compact_next: Any = None


def team_reward(traj: Trajectory) -> jax.Array:
    """f32[T, N]: every agent's entry is the sum of all agents' environment rewards."""
    return jnp.broadcast_to(traj.reward.sum(axis=1, keepdims=True), traj.reward.shape)


def agent_view(traj: Trajectory, shared_reward: bool = False,
               reward: jax.Array | None = None) -> AgentTrajectory:
    """Split an episode into each agent's own data, agent axis first. Agents learn
    from `reward` f32[T, N] (default r_env + r_inc) and see nothing of the others;
    with `shared_reward`, from the sum of all agents' environment rewards (the
    paper's upper bound)."""
    num_agents = traj.action.shape[1]
    per_agent = lambda x: jnp.broadcast_to(x, (num_agents,) + x.shape)  # noqa: E731
    if reward is None:
        reward = team_reward(traj) if shared_reward else traj.reward + traj.incentive
    return AgentTrajectory(
        obs=jnp.moveaxis(traj.obs, 1, 0),
        action=traj.action.T,
        reward=reward.T,
        mask=per_agent(traj.mask),
        next_obs=jnp.moveaxis(traj.next_obs, 1, 0),
        done=per_agent(traj.done),
    )


class Learner:
    """What the learners built from (config, observation shape, actions) share."""

    def __init__(self, config: Any, obs_shape: tuple[int, ...], num_actions: int):
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions

    @classmethod
    def from_config(cls, config: Any, env):
        return cls(config, env.observation_spec.shape[1:], env.num_actions)

    # What a mechanism that models its learners without knowing their update (ID with
    # agent_model "pg_step") may assume of this one: a policy over its actions, and the
    # rate of one plain SGD step on it. A learner overrides them where its policy is not
    # `policy` (a Q-learner) or its rate not `config.lr`.
    def model_policy(self, params, obs: jax.Array):
        return self.policy(params, obs)

    @property
    def model_lr(self) -> float:
        return self.config.lr


def flat_obs(obs: jax.Array, obs_shape: tuple[int, ...]) -> jax.Array:
    """Observations `[..., *obs_shape]` with each one flattened, for an MLP."""
    return obs.reshape(obs.shape[: obs.ndim - len(obs_shape)] + (-1,))


class Agent(Protocol):
    """Built by `from_config(config, env)` from the config type it is registered
    under (`agents.AGENTS`); `check_config(config, env, run)` raises ValueError on a
    config that cannot work with `env` (run: the experiment's TrainConfig)."""

    config: ClassVar[Any]

    @classmethod
    def from_config(cls, config: Any, env) -> "Agent": ...

    @classmethod
    def check_config(cls, config: Any, env, run) -> None: ...

    def init(self, key: jax.Array) -> Any: ...

    def act(self, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array: ...

    def update(self, state: Any, traj: AgentTrajectory) -> tuple[Any, dict]: ...
