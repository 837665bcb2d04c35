"""The data that flows between the parts of one episode step."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Trajectory:
    """One episode of all agents, time-major, padded to the env's `max_steps`.

    obs, next_obs: f32[T, N, *obs_shape]; action: i32[T, N];
    reward: f32[T, N] environment reward; incentive: f32[T, N] r_inc given at rollout;
    done: f32[T] 1 where the step ended the episode by termination;
    mask: f32[T] 1 on steps that happened, 0 on the padding after an early end.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    incentive: jax.Array
    next_obs: jax.Array
    done: jax.Array
    mask: jax.Array
