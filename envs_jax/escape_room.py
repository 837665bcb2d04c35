"""Escape Room ER(N, M) (SPEC §1.2; LIO, NeurIPS 2020).

Positions 0 = lever, 1 = start, 2 = door; every agent starts at 1 and its action is the
position it moves to, in one step. The door is open in a step iff at least M agents
chose the lever in that step. Reward: +10 to an agent that chose the door while it is
open; otherwise 0 for staying where it was and -1 for moving. The episode ends when the
door is open and some agent is at the door, or after `max_steps` steps. The best total
return, 10 (N - M) - M, is reached in one step.
"""

from __future__ import annotations

from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jumanji import specs
from jumanji.types import TimeStep

from envs_jax.base import MultiAgentEnv

LEVER, START, DOOR = 0, 1, 2


@struct.dataclass
class EscapeRoomState:
    """position: i32[N] each agent's position (0 lever, 1 start, 2 door);
    step_count: i32[] steps taken in this episode."""

    position: jax.Array
    step_count: jax.Array


class EscapeRoom(MultiAgentEnv):
    num_actions = 3

    def __init__(self, n_agents: int = 5, n_required: int = 2, max_steps: int = 5):
        for name, value, low in (("n_agents", n_agents, 2), ("n_required", n_required, 1),
                                 ("max_steps", max_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if n_required >= n_agents:
            raise ValueError(f"n_required ({n_required}) must be below n_agents ({n_agents}): "
                             "someone has to be left to go through the door")
        self.num_agents = n_agents
        self.n_required = n_required
        self.max_steps = max_steps
        # Row i lists agent i first, then the others in increasing id order.
        self._view_order = jnp.asarray(
            [[i] + [j for j in range(n_agents) if j != i] for i in range(n_agents)], jnp.int32)
        super().__init__()

    def __repr__(self) -> str:
        return f"EscapeRoom(n_agents={self.num_agents}, n_required={self.n_required})"

    @property
    def optimal_return(self) -> int:
        return 10 * (self.num_agents - self.n_required) - self.n_required

    @cached_property
    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray(shape=(self.num_agents, 3 * self.num_agents),
                                  dtype=jnp.float32, minimum=0.0, maximum=1.0,
                                  name="observation")

    def observe(self, position: jax.Array) -> jax.Array:
        """f32[N, 3N]: own position one-hot, then the others' in increasing id order."""
        one_hot = jax.nn.one_hot(position, 3, dtype=jnp.float32)  # [N, 3]
        return one_hot[self._view_order].reshape(self.num_agents, -1)

    has_central_state = True

    @staticmethod
    def central_state(obs: jax.Array) -> jax.Array:
        """The one-hot position of every agent in id order, f32[..., 3N], from the
        observations [..., N, 3N]: agent 0's own view lists exactly that."""
        return obs[..., 0, :]

    def reset(self, key: jax.Array) -> tuple[EscapeRoomState, TimeStep]:
        del key  # every episode starts with everyone at the start position
        state = EscapeRoomState(position=jnp.full((self.num_agents,), START, jnp.int32),
                                step_count=jnp.zeros((), jnp.int32))
        return state, self._first_timestep(self.observe(state.position))

    def step(self, state: EscapeRoomState, action: jax.Array) -> tuple[EscapeRoomState, TimeStep]:
        action = jnp.asarray(action, jnp.int32)
        door_open = jnp.sum(action == LEVER) >= self.n_required
        moved = action != state.position
        reward = jnp.where(door_open & (action == DOOR), 10.0, jnp.where(moved, -1.0, 0.0))
        next_state = EscapeRoomState(position=action, step_count=state.step_count + 1)
        escaped = door_open & jnp.any(action == DOOR)
        done = escaped | (next_state.step_count >= self.max_steps)
        return next_state, self._timestep(self.observe(action), reward, done)


def optimal_joint_action(n_agents: int, n_required: int) -> np.ndarray:
    """The first M agents pull the lever, the rest walk out: total 10 (N - M) - M."""
    return np.array([LEVER] * n_required + [DOOR] * (n_agents - n_required), np.int32)
