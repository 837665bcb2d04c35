"""No mechanism: agents learn from the environment reward alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxsim.types import Trajectory


@struct.dataclass
class NoMechanismState:
    pass


class NoMechanism:
    def __init__(self, num_agents: int):
        self.num_agents = num_agents

    def init(self, key: jax.Array) -> NoMechanismState:
        del key
        return NoMechanismState()

    def incentive(self, state, obs: jax.Array, action: jax.Array) -> jax.Array:
        del state, obs, action
        return jnp.zeros((self.num_agents,), jnp.float32)

    def update(self, state, traj: Trajectory, key: jax.Array):
        del traj, key
        return state, {}
