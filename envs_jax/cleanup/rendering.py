"""Pictures of a Cleanup state: the whole map as RGB, and each agent's egocentric
window of it (what the agents observe)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs_jax.cleanup.constants import AGENT_COLOURS, BEAM_BIT, BEAM_COLOUR, CELL_COLOURS


def map_image(cells: jax.Array, position: jax.Array) -> jax.Array:
    """f32[H, W, 3] of the whole map, colours / 256: cells, then agents (N of them,
    `position` [N, 2]), then beams."""
    rgb = jnp.asarray(CELL_COLOURS / 256.0)[cells & 0x7F]
    rows, cols = position[:, 0].astype(jnp.int32), position[:, 1].astype(jnp.int32)
    rgb = rgb.at[rows, cols].set(jnp.asarray(AGENT_COLOURS[: position.shape[0]] / 256.0))
    beam = (cells & BEAM_BIT)[..., None] > 0
    return jnp.where(beam, jnp.asarray(BEAM_COLOUR / 256.0), rgb)


def windows(image: jax.Array, position: jax.Array, radius: int) -> jax.Array:
    """f32[N, 2R+1, 2R+1, 3]: each agent's window of `image` centred on itself,
    unrotated, black outside the map. (Measured: slicing the padded image beats
    gathering per-window codes and colouring them, on CPU.)"""
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)))
    side = 2 * radius + 1
    window = lambda p: jax.lax.dynamic_slice(padded, (p[0], p[1], jnp.zeros_like(p[0])),  # noqa: E731
                                             (side, side, 3))
    return jax.vmap(window)(position.astype(jnp.int32))
