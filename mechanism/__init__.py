"""Mechanisms: who pays incentives and how they learn. `make(config, env, capacity)`."""

from __future__ import annotations

from jaxsim.config import IDConfig, IQFlowConfig, NoMechanismConfig, SharedRewardConfig
from mechanism.base import Mechanism


def make(config, env, replay_capacity: int, agent=None) -> Mechanism:
    """`agent` is handed only to the mechanisms that declare `reads_agents` (ID)."""
    from mechanism.id import IncentiveDesigner
    from mechanism.iqflow import IQFlow
    from mechanism.none import NoMechanism

    if isinstance(config, NoMechanismConfig):
        return NoMechanism(env.num_agents)
    if isinstance(config, SharedRewardConfig):
        return NoMechanism(env.num_agents, shares_rewards=True)
    if isinstance(config, IDConfig):
        return IncentiveDesigner(config, env, agent)
    if isinstance(config, IQFlowConfig):
        obs_shape = env.observation_spec.shape[1:]
        return IQFlow(config, obs_shape, env.num_agents, env.num_actions, replay_capacity, env)
    raise ValueError(
        f"no mechanism for config type {type(config).__name__}; valid: "
        "NoMechanismConfig, SharedRewardConfig, IQFlowConfig, IDConfig"
    )


__all__ = ["Mechanism", "make"]
