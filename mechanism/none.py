"""No mechanism: agents learn from the environment reward alone; and the
shared-reward baseline, where each learns from the sum of everyone's."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from agents.base import Trajectory, team_reward
from mechanism.base import Mechanism


@dataclass(frozen=True)
class NoMechanismConfig:
    """No incentives: agents learn from the environment reward alone."""


@dataclass(frozen=True)
class SharedRewardConfig:
    """No incentives, and every agent learns from the sum of all agents' environment
    rewards: the paper's upper bound on Cleanup (SPEC §2)."""


@struct.dataclass
class NoMechanismState:
    pass


class NoMechanism(Mechanism):
    def __init__(self, num_agents: int):
        self.num_agents = num_agents

    @classmethod
    def from_config(cls, config, env, run) -> "NoMechanism":
        del config, run
        return cls(env.num_agents)

    def init(self, key: jax.Array) -> NoMechanismState:
        del key
        return NoMechanismState()

    def incentive(self, state, obs: jax.Array, action: jax.Array) -> jax.Array:
        del state, obs, action
        return jnp.zeros((self.num_agents,), jnp.float32)

    def update(self, state, traj: Trajectory, key: jax.Array):
        del traj, key
        return state, {}


class SharedReward(NoMechanism):
    """Pays nothing, and rewrites what the agents learn from: the team's reward."""

    def agent_rewards(self, traj: Trajectory) -> jax.Array:
        return team_reward(traj)
