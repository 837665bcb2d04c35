"""Cleanup's state."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class CleanupState:
    """cells: u8[H, W] cell codes, BEAM_BIT on this step's beam cells; position:
    i32[N, 2] (row, column); step_count: i32[]; key: the environment's own randomness
    (move conflicts, spawning)."""

    cells: jax.Array
    position: jax.Array
    step_count: jax.Array
    key: jax.Array
