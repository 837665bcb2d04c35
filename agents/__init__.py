"""Independent learners, registered by the type of their config: `make(config, env)`
builds the one a config names, `check(config, env, run)` validates it first, and
`team(config, env)` is what the engine drives: every agent with that learner, or with
a `MixedConfig` each agent with its own (agents.team).

A new learner is a module with its config dataclass and a class offering
`from_config(config, env)`, `check_config(config, env, run)`, `init`, `act` and
`update` (agents.base.Agent), and one line in AGENTS and LEARNERS (or `register` at
run time).
"""

from __future__ import annotations

import dataclasses

from agents.ac import INDEPENDENT_AC, ACAgent, ACConfig
from agents.base import Agent, AgentTrajectory, Trajectory, agent_view
from agents.dqn import DQNAgent, DQNConfig
from agents.pg import PGAgent, PGConfig
from agents.ppo import PPOAgent, PPOConfig
from agents.team import MixedConfig, Team, team_config_json
from envs_jax.checks import PartRegistry

AGENTS = PartRegistry("agent", {
    PGConfig: PGAgent,
    ACConfig: ACAgent,
    PPOConfig: PPOAgent,
    DQNConfig: DQNAgent,
    MixedConfig: Team,  # builds a team, not one learner: use `team`
})
# Learners by name, for mixed teams and command lines: their default configs.
LEARNERS = {"pg": PGConfig, "ac": ACConfig, "ppo": PPOConfig, "dqn": DQNConfig}


def register(config_type: type, agent_class: type, name: str | None = None) -> None:
    """Make `agent_class` the learner of `config_type` configs (and `name` its name)."""
    AGENTS.register(config_type, agent_class)
    if name is not None:
        LEARNERS[name] = config_type


check = AGENTS.check  # check(config, env, run): refuses what cannot work
agent_class = AGENTS.lookup  # the learner registered for a config's type


def learner_config(name: str):
    """The default config of the learner called `name`."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; valid: {list(LEARNERS)}")
    return LEARNERS[name]()


def make(config, env) -> Agent:
    return agent_class(config).from_config(config, env)


def team(config, env) -> Team:
    """The team the engine drives: a mixed one, or every agent with `config`'s learner."""
    if isinstance(config, MixedConfig):
        return Team.from_config(config, env)
    return Team.uniform(make(config, env), env.num_agents)


def members(config, num_agents: int) -> tuple:
    """Each agent's learner config."""
    return config.members if isinstance(config, MixedConfig) else (config,) * num_agents


def config_to_json(config) -> dict:
    """A learner's (or a mixed team's) config as JSON-ready fields."""
    if isinstance(config, MixedConfig):
        return team_config_json(config)
    return dataclasses.asdict(config)


def config_from_json(type_name: str, saved: dict, fields_from_json):
    """The config `config_to_json` wrote, given its type's name; `fields_from_json(kind,
    saved)` reads one dataclass's fields (lists back to tuples, defaults for the missing)."""
    kinds = {kind.__name__: kind for kind in AGENTS}
    if type_name not in kinds:
        raise ValueError(f"unknown agent type {type_name!r}")
    kind = kinds[type_name]
    if kind is MixedConfig:
        return MixedConfig(members=tuple(
            config_from_json(member["type"], member, fields_from_json)
            for member in saved["members"]))
    return kind(**fields_from_json(kind, saved))


__all__ = ["AGENTS", "INDEPENDENT_AC", "LEARNERS", "ACAgent", "ACConfig", "Agent",
           "AgentTrajectory", "DQNAgent", "DQNConfig", "MixedConfig", "PGAgent", "PGConfig",
           "PPOAgent", "PPOConfig", "Team", "Trajectory", "agent_view", "check",
           "config_from_json", "config_to_json", "learner_config", "make", "members",
           "register", "team"]
