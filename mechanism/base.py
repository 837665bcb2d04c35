"""The interface every mechanism offers the engine.

A mechanism is a small set of pure functions over its own state:
`init(key) -> state`; `incentive(state, obs, action) -> f32[N]`, the reward it pays
each agent for one step (obs: [N, *obs_shape], action: i32[N]); and
`update(state, trajectory, key) -> (state, metrics)`, run once per episode after the
rollout and before the agents learn; and `diagnostics(state, key) -> metrics`, run
once per chunk on the state the chunk ends with, for what the mechanism wants watched
({} if nothing; metrics named `alarm/...`, 0 or 1 per run and entry, are warnings the
host reports once one has held for a whole evaluation period). It never sees the
agents' parameters, with one declared exception: a mechanism whose class sets
`reads_agents = True` (the ID baseline) is built with the agent object and its
`update` is also given
`agent_state`, the agents' train states (stacked) that generated the trajectory.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from jaxsim.types import Trajectory


class Mechanism(Protocol):
    def init(self, key: jax.Array) -> Any: ...

    def incentive(self, state: Any, obs: jax.Array, action: jax.Array) -> jax.Array: ...

    def update(self, state: Any, traj: Trajectory, key: jax.Array) -> tuple[Any, dict]: ...

    def diagnostics(self, state: Any, key: jax.Array) -> dict: ...
