"""The N learners of an experiment as the engine drives them: a team.

A team is one group per learner: agents with the same learner config share one
train-state pytree stacked on a leading axis of that group's agents, and each group's
functions are one `vmap` over it. With one learner for every agent (every preset of
the paper) the team is one group and its state is exactly the stacked state the
engine always had (same arrays, same checkpoints, same numbers). A `MixedConfig`
gives agent i its own learner, `MixedConfig.of("pg", "ppo")`; the team's state is
then a tuple of the groups' states, and agents of different groups share nothing: a
group's update reads only its own agents' states and trajectories.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from envs_jax import checks


@dataclass(frozen=True)
class MixedConfig:
    """Agent i learns with `members[i]`, a learner config of its own (one per agent
    of the environment). Equal configs form one group, vmapped together."""

    members: tuple = ()

    @classmethod
    def of(cls, *members) -> "MixedConfig":
        """Members by learner name ("pg", "ac", "ppo", "dqn": their default configs)
        or as configs."""
        from agents import learner_config  # the registry lives above this module
        return cls(members=tuple(learner_config(m) if isinstance(m, str) else m
                                 for m in members))

    def groups(self) -> list[tuple[Any, tuple[int, ...]]]:
        """(config, the agents that learn with it), in the order of first appearance."""
        order: dict[Any, list[int]] = {}
        for i, member in enumerate(self.members):
            order.setdefault(member, []).append(i)
        return [(config, tuple(agents)) for config, agents in order.items()]


def group_names(configs: Sequence[Any]) -> list[str]:
    """"pg", "ppo", ... by config type; "ac_2" for a second group of one type."""
    names, seen = [], {}
    for config in configs:
        base = type(config).__name__.removesuffix("Config").lower()
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


class Team:
    """Groups of agents, each with one learner; see the module's docstring.

    Arguments the methods take are either in team layout (states, params: the one
    group's tree, or a tuple of the groups' trees) or stacked on a leading agent axis
    of all N agents in agent order (observations, keys, trajectories)."""

    def __init__(self, learners: Sequence[Any], agents: Sequence[Sequence[int]],
                 names: Sequence[str] | None = None):
        self.learners = tuple(learners)
        self.agents = tuple(tuple(int(i) for i in group) for group in agents)
        self.num_agents = sum(len(group) for group in self.agents)
        if sorted(i for group in self.agents for i in group) != list(range(self.num_agents)):
            raise ValueError(f"the groups {self.agents} do not cover agents 0..N-1 once each")
        self.names = tuple(names or group_names([learner.config for learner in self.learners]))
        self.mixed = len(self.learners) > 1
        self._indices = [np.asarray(group) for group in self.agents]
        # agent order <- the groups' agents concatenated
        self._order = np.argsort(np.concatenate([np.asarray(g) for g in self.agents]))

    @classmethod
    def uniform(cls, learner, num_agents: int) -> "Team":
        """Every agent with `learner`: the engine's one group, as it always was."""
        return cls([learner], [range(num_agents)])

    @classmethod
    def from_config(cls, config: MixedConfig, env) -> "Team":
        from agents import make  # the registry lives above this module
        groups = config.groups()
        return cls([make(member, env) for member, _ in groups], [g for _, g in groups])

    @staticmethod
    def check_config(config: MixedConfig, env, run) -> None:
        from agents import check  # the registry lives above this module
        members = config.members
        checks.require(isinstance(members, tuple) and len(members) == env.num_agents,
                       f"a mixed team names one learner per agent: {run.env} has "
                       f"{env.num_agents} agents, the team {len(members)}")
        checks.require(not any(isinstance(m, MixedConfig) for m in members),
                       "a mixed team's members are learners, not teams")
        for member in members:
            check(member, env, run)

    @property
    def only(self):
        """The learner of a one-group team."""
        if self.mixed:
            raise ValueError(f"a mixed team ({', '.join(self.names)}) has no single learner; "
                             "use its groups (Team.learners)")
        return self.learners[0]

    # --- layout ------------------------------------------------------------------------

    def groups_of(self, tree):
        """A team-layout tree as a tuple of the groups' trees."""
        return tuple(tree) if self.mixed else (tree,)

    def pack(self, per_group: Sequence[Any]):
        """The groups' trees in team layout."""
        return tuple(per_group) if self.mixed else per_group[0]

    def split(self, stacked):
        """An all-agents tree (leading axis N, agent order) as the groups' slices."""
        if not self.mixed:
            return (stacked,)
        return tuple(jax.tree.map(lambda x, idx=idx: x[idx], stacked)
                     for idx in self._indices)

    def join(self, per_group: Sequence[Any]):
        """The groups' all-agent slices back into one tree in agent order."""
        if not self.mixed:
            return per_group[0]
        return jax.tree.map(lambda *parts: jnp.concatenate(parts)[self._order], *per_group)

    def vmap(self, fn: Callable, grouped: Sequence[Any] = (), stacked: Sequence[Any] = ()):
        """`fn(learner, *grouped_i, *stacked_i)` for every agent i, one vmap per group:
        the groups' outputs, in order (`pack` or `join` them)."""
        grouped = [self.groups_of(tree) for tree in grouped]
        stacked = [self.split(tree) for tree in stacked]
        return [jax.vmap(lambda *args, learner=learner: fn(learner, *args))(
                    *[tree[g] for tree in grouped], *[tree[g] for tree in stacked])
                for g, learner in enumerate(self.learners)]

    # --- what the engine calls -----------------------------------------------------------

    def init(self, keys: jax.Array):
        """keys [N] -> the team's state."""
        return self.pack(self.vmap(lambda learner, key: learner.init(key), stacked=[keys]))

    def params(self, state):
        """What `act` needs, in team layout."""
        return self.pack([group.params for group in self.groups_of(state)])

    def act(self, params, obs: jax.Array, keys: jax.Array) -> jax.Array:
        """params (team layout), obs [N, ...], keys [N] -> i32[N]."""
        return self.join(self.vmap(lambda learner, p, o, k: learner.act(p, o, k),
                                   grouped=[params], stacked=[obs, keys]))

    def update(self, state, view) -> tuple[Any, dict]:
        """Each agent's own update on its own trajectory (view: agent axis first).
        Metrics: the learner's, one entry per agent, for one group; for a mixed team
        one scalar per agent, "NAME/metric/i" with i the agent's number (the names a
        one-group team's entries are logged under, with the learner's name)."""
        outs = self.vmap(lambda learner, s, t: learner.update(s, t), grouped=[state],
                         stacked=[view])
        new_state = self.pack([new for new, _ in outs])
        if not self.mixed:
            return new_state, outs[0][1]
        metrics = {}
        for name, agents, (_, group_metrics) in zip(self.names, self.agents, outs, strict=True):
            for key, value in group_metrics.items():
                metrics.update({f"{name}/{key}/{i}": value[slot] for slot, i in enumerate(agents)})
        return new_state, metrics


def team_config_json(config: MixedConfig) -> dict:
    """A mixed team's config as JSON: each member with its type's name."""
    return {"members": [{"type": type(m).__name__, **dataclasses.asdict(m)}
                        for m in config.members]}
