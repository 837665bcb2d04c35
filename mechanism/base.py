"""The interface every mechanism offers the engine.

A mechanism is a small set of pure functions over its own state:
`init(key) -> state`; `incentive(state, obs, action) -> f32[N]`, the reward it pays
each agent for one step (obs: [N, *obs_shape], action: i32[N]);
`update(state, trajectory, key) -> (state, metrics)`, run once per episode after the
rollout and before the agents learn; `agent_rewards(trajectory) -> f32[T, N]`, what
the agents then learn from (r_env + r_inc unless the mechanism rewrites it, as the
shared-reward baseline does); and `diagnostics(state, key) -> metrics`, run once per
chunk on the state the chunk ends with, for what the mechanism wants watched ({} if
nothing; metrics named `alarm/...`, 0 or 1 per run and entry, are warnings the host
reports once one has held for a whole evaluation period).

It never sees the agents' parameters, with one declared exception: a mechanism of
the kind `ReadsAgents` (the ID baseline) is built with the agents' team
(agents.team.Team) and its `update` is also given `agent_state`, the team's train
states (in the team's layout: stacked per group of one learner) that generated the
trajectory. IQ-Flow is a plain `Mechanism`: not seeing them is the
paper's point.

A mechanism is built by `from_config(config, env, run)` (`ReadsAgents`: also the
agent) from the config type it is registered under (`mechanism.MECHANISMS`), after
`check_config(config, env, run)` has refused what cannot work; run is the
experiment's TrainConfig (its length, its agents' config).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from agents.base import Trajectory
from envs_jax import checks


class Mechanism:
    """Defaults: no diagnostics; agents learn from r_env + r_inc."""

    reads_agents: ClassVar[bool] = False  # True for the ReadsAgents kind only

    @classmethod
    def from_config(cls, config: Any, env, run) -> "Mechanism":
        raise NotImplementedError(f"{cls.__name__}.from_config")

    @classmethod
    def check_config(cls, config: Any, env, run) -> None:
        del config, env, run

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def incentive(self, state: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def update(self, state: Any, traj: Trajectory, key: jax.Array) -> tuple[Any, dict]:
        raise NotImplementedError

    def agent_rewards(self, traj: Trajectory) -> jax.Array:
        return traj.reward + traj.incentive

    def diagnostics(self, state: Any, key: jax.Array) -> dict:
        del state, key
        return {}

    def describe(self) -> str | None:
        """A line the runner prints once per run before training (None: nothing to
        say), e.g. an assumption the mechanism makes that the user chose by name."""
        return None


class ReadsAgents(Mechanism):
    """The kind of mechanism that looks inside the learners (the ID baseline): built
    with the agents' team, its update handed the team's train states."""

    reads_agents: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: Any, env, run, agent=None) -> "ReadsAgents":
        raise NotImplementedError(f"{cls.__name__}.from_config")

    def update(self, state: Any, traj: Trajectory, key: jax.Array,
               agent_state: Any = None) -> tuple[Any, dict]:
        raise NotImplementedError


class Frozen(Mechanism):
    """`inner` as it stands: it pays the same incentives, never updates (no replay,
    no learning) and has nothing to watch. A pretrained incentive function paying
    fresh agents (Fig. 10; TrainConfig.freeze_mechanism)."""

    def __init__(self, inner: Mechanism):
        self.inner = inner

    def init(self, key: jax.Array) -> Any:
        return self.inner.init(key)

    def incentive(self, state: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.inner.incentive(state, obs, action)

    def update(self, state: Any, traj: Trajectory, key: jax.Array) -> tuple[Any, dict]:
        del traj, key
        return state, {}

    def agent_rewards(self, traj: Trajectory) -> jax.Array:
        return self.inner.agent_rewards(traj)

    def describe(self) -> str | None:
        return self.inner.describe()


def check_conv_layout(config, env, env_name: str) -> None:
    """The conv fields of an incentive net (and critics) over image observations:
    `conv_filters` 0 (MLPs) or > 0 with a hidden layer after the conv features."""
    filters = config.conv_filters
    checks.require(checks.is_int(filters) and filters >= 0,
                   f"mechanism.conv_filters must be an integer >= 0, got {filters!r}")
    if filters:
        checks.image_observations("mechanism.conv_filters > 0 needs", env, env_name)
        checks.require(len(config.incentive_hidden) >= 1,
                       "mechanism.incentive_hidden needs a layer after the conv features")
        checks.require(len(config.critic_hidden) >= 1,
                       "mechanism.critic_hidden needs a layer after the conv features")
