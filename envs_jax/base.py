"""The multi-agent flavour of Jumanji's `Environment` used across the suite.

Every environment keeps one state for all agents and arrays over agents:
actions `i32[num_agents]`, rewards and discounts `f32[num_agents]`, observations with
a leading agent axis. An episode ends with a `LAST` timestep whose discount is 0 for a
true termination.
"""

from __future__ import annotations

import abc
from functools import cached_property
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jumanji import specs
from jumanji.env import Environment
from jumanji.types import StepType, TimeStep


class MultiAgentEnv(Environment, abc.ABC):
    """Jumanji `Environment` with an agent axis on actions, rewards and discounts."""

    num_agents: int
    num_actions: int
    max_steps: int  # an episode never lasts longer than this many steps
    # Whether `central_state` gives the environment's state as one vector (ID's
    # designer_input "state", SPEC §7).
    has_central_state: ClassVar[bool] = False

    def compact(self, state) -> Any:
        """What a replay buffer stores of `state` to re-render its observations, where
        that is smaller than them (Cleanup); None: it stores the observations
        themselves."""
        del state
        return None

    def observe_compact(self, *compact) -> jax.Array:
        """The observations [N, *obs] of a state from what `compact` gave of it."""
        raise NotImplementedError(f"{type(self).__name__} stores its observations as they are")

    @property
    def stores_compact(self) -> bool:
        """Whether `compact` gives a form (the replay then stores it)."""
        state = jax.eval_shape(lambda: self.reset(jax.random.PRNGKey(0))[0])
        return jax.eval_shape(self.compact, state) is not None

    def central_state(self, obs: jax.Array) -> jax.Array:
        """The environment's central state from the observations [..., N, *obs]."""
        raise NotImplementedError(f"{type(self).__name__} has no central state")

    @cached_property
    def action_spec(self) -> specs.MultiDiscreteArray:
        return specs.MultiDiscreteArray(
            num_values=jnp.full((self.num_agents,), self.num_actions, jnp.int32),
            name="action",
        )

    @cached_property
    def reward_spec(self) -> specs.Array:
        return specs.Array(shape=(self.num_agents,), dtype=jnp.float32, name="reward")

    @cached_property
    def discount_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray(
            shape=(self.num_agents,), dtype=jnp.float32, minimum=0.0, maximum=1.0,
            name="discount",
        )

    def _timestep(self, observation, reward, done) -> TimeStep:
        """A MID or (where `done`) LAST timestep; `done` is a termination: discount 0."""
        shape = (self.num_agents,)
        return TimeStep(
            step_type=jnp.where(done, StepType.LAST, StepType.MID).astype(jnp.int8),
            reward=jnp.asarray(reward, jnp.float32).reshape(shape),
            discount=jnp.where(done, 0.0, 1.0) * jnp.ones(shape, jnp.float32),
            observation=observation,
        )

    def _first_timestep(self, observation) -> TimeStep:
        shape = (self.num_agents,)
        return TimeStep(
            step_type=jnp.asarray(StepType.FIRST, jnp.int8),
            reward=jnp.zeros(shape, jnp.float32),
            discount=jnp.ones(shape, jnp.float32),
            observation=observation,
        )
