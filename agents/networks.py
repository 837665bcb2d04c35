"""Network torsos shared by agents, critics and incentive functions."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SQRT2 = float(np.sqrt(2.0))


class MLP(nn.Module):
    """ReLU MLP with orthogonal(sqrt 2) weights and zero biases (SPEC §2).

    `output_scale` sets the orthogonal scale of the last layer only; a near-zero value
    starts an output head close to 0 where a method asks for it.
    """

    hidden: Sequence[int]
    out: int
    output_scale: float = SQRT2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(
                nn.Dense(width, kernel_init=nn.initializers.orthogonal(SQRT2),
                         bias_init=nn.initializers.zeros)(x)
            )
        return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(self.output_scale),
                        bias_init=nn.initializers.zeros)(x)


def init_stacked(module: nn.Module, key: jax.Array, num: int, example: jax.Array):
    """`num` independent initialisations of `module`, stacked on a leading axis."""
    return jax.vmap(lambda k: module.init(k, example))(jax.random.split(key, num))


def apply_stacked(module: nn.Module, params, x: jax.Array, axis: int = -2) -> jax.Array:
    """Apply stacked parameters `[n, ...]` to `x` whose axis `axis` has size n: one
    network per slice (e.g. one Q head per agent)."""
    return jax.vmap(module.apply, in_axes=(0, axis), out_axes=axis)(params, x)


def flat_obs(obs: jax.Array) -> jax.Array:
    """[B, N, *obs_shape] -> [B, N * prod(obs_shape)]: every agent's observation."""
    return obs.reshape(obs.shape[0], -1)


def joint_action_one_hot(action: jax.Array, num_actions: int) -> jax.Array:
    """i32[B, N] -> f32[B, N * A]."""
    one_hot = jax.nn.one_hot(action, num_actions, dtype=jnp.float32)
    return one_hot.reshape(action.shape[0], -1)


def incentive_inputs(obs: jax.Array, action: jax.Array, num_actions: int) -> jax.Array:
    """What an incentive function sees: every observation and the joint action
    one-hot, own action included. obs [B, N, *obs_shape], action i32[B, N]."""
    return jnp.concatenate([flat_obs(obs), joint_action_one_hot(action, num_actions)], -1)


class ConvNet(nn.Module):
    """Conv(filters, 3x3, stride 1, SAME) + ReLU -> flatten -> ReLU MLP -> head, for
    image observations `[..., H, W, C]` (SPEC §2); orthogonal(sqrt 2), zero biases."""

    filters: int
    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(self.filters, (3, 3), padding="SAME",
                            kernel_init=nn.initializers.orthogonal(SQRT2),
                            bias_init=nn.initializers.zeros)(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return MLP(hidden=self.hidden, out=self.out)(x)
