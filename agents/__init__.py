"""Independent learners. `make(config, env)` builds the one a config names."""

from __future__ import annotations

from agents.ac import ACAgent
from agents.base import Agent, AgentTrajectory
from agents.pg import PGAgent
from jaxsim.config import ACConfig, PGConfig


def make(config, env) -> Agent:
    obs_shape = env.observation_spec.shape[1:]
    if isinstance(config, PGConfig):
        return PGAgent(config, obs_shape, env.num_actions)
    if isinstance(config, ACConfig):
        return ACAgent(config, obs_shape, env.num_actions)
    raise ValueError(f"no agent for config type {type(config).__name__}; "
                     "valid: PGConfig, ACConfig")


__all__ = ["ACAgent", "Agent", "AgentTrajectory", "PGAgent", "make"]
