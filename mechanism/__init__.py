"""Mechanisms: who pays incentives and how they learn, registered by the type of
their config. `make(config, env, run, agent)` builds the one a config names (the
agent object reaches only the `ReadsAgents` kind, ID); `check(config, env, run)`
validates it first.

A new mechanism is a module with its config dataclass and a `mechanism.base.Mechanism`
subclass (`from_config`, `check_config`, `init`, `incentive`, `update`), and one line
in MECHANISMS (or `register` at run time).
"""

from __future__ import annotations

from envs_jax.checks import PartRegistry
from mechanism.base import Frozen, Mechanism, ReadsAgents
from mechanism.id import IDConfig, IncentiveDesigner
from mechanism.iqflow import IQFlow, IQFlowConfig
from mechanism.none import NoMechanism, NoMechanismConfig, SharedReward, SharedRewardConfig

MECHANISMS = PartRegistry("mechanism", {
    NoMechanismConfig: NoMechanism,
    SharedRewardConfig: SharedReward,
    IQFlowConfig: IQFlow,
    IDConfig: IncentiveDesigner,
})
register = MECHANISMS.register  # register(config_type, mechanism_class)
check = MECHANISMS.check  # check(config, env, run): refuses what cannot work
mechanism_class = MECHANISMS.lookup  # the mechanism registered for a config's type


def make(config, env, run, agent=None) -> Mechanism:
    cls = mechanism_class(config)
    if issubclass(cls, ReadsAgents):
        return cls.from_config(config, env, run, agent)
    return cls.from_config(config, env, run)


__all__ = ["MECHANISMS", "Frozen", "Mechanism", "ReadsAgents", "check", "make", "register"]
