"""What the engine hands an independent learner, and what it asks of one.

An agent is a small set of pure functions over its own train state (a pytree with a
`params` field, the part `act` needs):
`init(key) -> state`, `act(params, obs, key) -> action`, `update(state, trajectory)
-> (state, metrics)`. The engine stacks N states on a leading agent axis and `vmap`s
these functions over it; a learner never sees another agent's data or parameters.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
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


class Agent(Protocol):
    def init(self, key: jax.Array) -> Any: ...

    def act(self, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array: ...

    def update(self, state: Any, traj: AgentTrajectory) -> tuple[Any, dict]: ...
