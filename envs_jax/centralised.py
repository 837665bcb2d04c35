"""One controller for a whole team (SPEC §6 row 9): the authors' shared-reward
baseline on Cleanup, as a wrapper around any environment of the suite.

An N-agent environment with A actions each becomes a 1-agent one with A^N actions:
joint action j is decoded as a_i = (j // A^i) % A (so a_0 + A a_1 for two agents, as
the authors' code), the controller observes agent 0's view and is rewarded with the
team's reward (the sum over agents). Episodes, steps and termination are the wrapped
environment's; the engine, agents and mechanisms see an ordinary environment.
"""

from __future__ import annotations

from functools import cached_property

import jax
import jax.numpy as jnp
from jumanji import specs
from jumanji.types import TimeStep

from envs_jax.base import MultiAgentEnv


class Centralised(MultiAgentEnv):
    num_agents = 1

    def __init__(self, env: MultiAgentEnv):
        self.env = env
        self.num_actions = env.num_actions ** env.num_agents
        self.max_steps = env.max_steps
        super().__init__()

    def __repr__(self) -> str:
        return f"Centralised({self.env!r})"

    def decode(self, joint: jax.Array) -> jax.Array:
        """i32[] joint action -> i32[N] each agent's action."""
        powers = self.env.num_actions ** jnp.arange(self.env.num_agents, dtype=jnp.int32)
        return (jnp.asarray(joint, jnp.int32) // powers) % self.env.num_actions

    @cached_property
    def observation_spec(self) -> specs.Spec:
        inner = self.env.observation_spec
        return specs.BoundedArray(shape=(1, *inner.shape[1:]), dtype=inner.dtype,
                                  minimum=inner.minimum, maximum=inner.maximum,
                                  name="observation")

    def _wrap(self, timestep: TimeStep) -> TimeStep:
        return TimeStep(step_type=timestep.step_type,
                        reward=timestep.reward.sum(keepdims=True),
                        discount=timestep.discount[:1],
                        observation=timestep.observation[:1])

    def reset(self, key: jax.Array):
        state, timestep = self.env.reset(key)
        return state, self._wrap(timestep)

    def step(self, state, action: jax.Array):
        state, timestep = self.env.step(state, self.decode(jnp.reshape(action, ())))
        return state, self._wrap(timestep)
