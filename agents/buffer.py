"""A ring buffer of pytree rows that lives inside the compiled program: the replay of
IQ-Flow's mechanism (mechanism.replay) and of the Q-learning agents (agents.dqn).

Written here rather than taken from a library because IQ-Flow's step B needs 128
*distinct* rows per draw (a train and a validation batch that never share a row) from
a buffer whose fill level is a traced value; both are a few lines over plain arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ReplayBuffer:
    """data: a pytree with a leading capacity axis; size: i32[] rows filled;
    cursor: i32[] the next row to write (wraps around once full)."""

    data: object  # a pytree of arrays
    size: jax.Array
    cursor: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init(example, capacity: int) -> ReplayBuffer:
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayBuffer(data=data, size=zero, cursor=zero)


def add(buffer: ReplayBuffer, items, mask: jax.Array) -> ReplayBuffer:
    """Append the rows of `items` (leading axis T) where `mask` is 1, in order."""
    capacity = buffer.capacity
    keep = mask.astype(jnp.int32)
    offset = jnp.cumsum(keep) - 1
    rows = jnp.where(keep > 0, (buffer.cursor + offset) % capacity, capacity)  # drop
    data = jax.tree.map(lambda d, x: d.at[rows].set(x.astype(d.dtype), mode="drop"),
                        buffer.data, items)
    added = keep.sum()
    return ReplayBuffer(
        data=data,
        size=jnp.minimum(buffer.size + added, capacity),
        cursor=(buffer.cursor + added) % capacity,
    )


def bytes_per_row(buffer: ReplayBuffer) -> int:
    """Bytes one stored transition takes, over every array of the buffer."""
    return int(sum(leaf[0].nbytes for leaf in jax.tree.leaves(buffer.data)))


def gather(buffer: ReplayBuffer, rows: jax.Array):
    return jax.tree.map(lambda d: d[rows], buffer.data)


def uniform_rows(buffer: ReplayBuffer, key: jax.Array, n: int) -> jax.Array:
    """`n` row indices drawn uniformly with replacement from the filled part."""
    return jax.random.randint(key, (n,), 0, jnp.maximum(buffer.size, 1))


def sample_uniform(buffer: ReplayBuffer, key: jax.Array, n: int):
    """`n` rows drawn uniformly with replacement from the filled part."""
    return gather(buffer, uniform_rows(buffer, key, n))


def sample_distinct_rows(key: jax.Array, size: jax.Array, k: int) -> jax.Array:
    """`k` distinct rows of `range(size)` in uniformly random order, `i32[k]`.

    Floyd's algorithm: O(k^2) work whatever the buffer's size, so drawing from a
    million-row buffer costs the same as from a small one. `size < k` (a buffer not
    yet ready) still yields k distinct rows of `range(k)`; callers mask that case.
    """
    size = jnp.maximum(size, k)
    subset_key, order_key = jax.random.split(key)
    draw_keys = jax.random.split(subset_key, k)
    top = size - k + jnp.arange(k)  # step j chooses from range(top[j] + 1)
    # Step j's candidate depends only on its own key, so all k are drawn in one call
    # (the same numbers as drawing each inside the loop); only the cheap "already
    # taken?" test stays serial. On a GPU that is k loop steps of one fused compare
    # instead of k random draws, each a chain of small kernels.
    candidates = jax.vmap(lambda kj, tj: jax.random.randint(kj, (), 0, tj + 1))(
        draw_keys, top)

    def pick(j, chosen):
        taken = jnp.any(chosen == candidates[j])
        return chosen.at[j].set(jnp.where(taken, top[j], candidates[j]).astype(chosen.dtype))

    chosen = jax.lax.fori_loop(0, k, pick, jnp.full((k,), -1, jnp.int32))
    return jax.random.permutation(order_key, chosen)


def sample_distinct_rows_one_by_one(key: jax.Array, size: jax.Array, k: int) -> jax.Array:
    """`sample_distinct_rows` as first written (to commit 9f5db03): each loop step draws
    its own candidate. The same rows bit for bit (tests/test_iqflow.py); kept as the
    reference that `benchmarks.step_profile` times beside today's form."""
    size = jnp.maximum(size, k)
    subset_key, order_key = jax.random.split(key)
    draw_keys = jax.random.split(subset_key, k)

    def pick(j, chosen):
        top = size - k + j
        candidate = jax.random.randint(draw_keys[j], (), 0, top + 1)
        taken = jnp.any(chosen == candidate)
        return chosen.at[j].set(jnp.where(taken, top, candidate).astype(chosen.dtype))

    chosen = jax.lax.fori_loop(0, k, pick, jnp.full((k,), -1, jnp.int32))
    return jax.random.permutation(order_key, chosen)
