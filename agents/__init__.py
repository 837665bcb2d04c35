"""Independent learners. `make(config, env)` builds the one a config names."""

from __future__ import annotations

from agents.base import Agent, AgentTrajectory
from agents.pg import PGAgent
from jaxsim.config import PGConfig


def make(config, env) -> Agent:
    obs_shape = env.observation_spec.shape[1:]
    if isinstance(config, PGConfig):
        return PGAgent(config, obs_shape, env.num_actions)
    raise ValueError(f"no agent for config type {type(config).__name__}; valid: PGConfig")


__all__ = ["Agent", "AgentTrajectory", "PGAgent", "make"]
