"""No mechanism: agents learn from the environment reward alone, or, with
`shares_rewards`, each from the sum of everyone's (the shared-reward baseline)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxsim.types import Trajectory


@struct.dataclass
class NoMechanismState:
    pass


class NoMechanism:
    def __init__(self, num_agents: int, shares_rewards: bool = False):
        self.num_agents = num_agents
        self.shares_rewards = shares_rewards  # read by the engine's agent_view

    def init(self, key: jax.Array) -> NoMechanismState:
        del key
        return NoMechanismState()

    def incentive(self, state, obs: jax.Array, action: jax.Array) -> jax.Array:
        del state, obs, action
        return jnp.zeros((self.num_agents,), jnp.float32)

    def update(self, state, traj: Trajectory, key: jax.Array):
        del traj, key
        return state, {}

    def diagnostics(self, state, key: jax.Array) -> dict:
        del state, key
        return {}
