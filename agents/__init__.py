"""Independent learners, registered by the type of their config: `make(config, env)`
builds the one a config names, `check(config, env, run)` validates it first.

A new learner is a module with its config dataclass and a class offering
`from_config(config, env)`, `check_config(config, env, run)`, `init`, `act` and
`update` (agents.base.Agent), and one line in AGENTS (or `register` at run time).
"""

from __future__ import annotations

from agents.ac import INDEPENDENT_AC, ACAgent, ACConfig
from agents.base import Agent, AgentTrajectory, Trajectory, agent_view
from agents.dqn import DQNAgent, DQNConfig
from agents.pg import PGAgent, PGConfig
from agents.ppo import PPOAgent, PPOConfig
from envs_jax.checks import PartRegistry

AGENTS = PartRegistry("agent", {
    PGConfig: PGAgent,
    ACConfig: ACAgent,
    PPOConfig: PPOAgent,
    DQNConfig: DQNAgent,
})
register = AGENTS.register  # register(config_type, agent_class)
check = AGENTS.check  # check(config, env, run): refuses what cannot work
agent_class = AGENTS.lookup  # the learner registered for a config's type


def make(config, env) -> Agent:
    return agent_class(config).from_config(config, env)


__all__ = ["AGENTS", "INDEPENDENT_AC", "ACAgent", "ACConfig", "Agent", "AgentTrajectory",
           "DQNAgent", "DQNConfig",
           "PGAgent", "PGConfig", "PPOAgent", "PPOConfig", "Trajectory", "agent_view", "check",
           "make", "register"]
