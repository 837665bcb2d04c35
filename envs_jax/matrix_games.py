"""Iterated two-player matrix games: Prisoner's Dilemma, Chicken, Stag Hunt (SPEC §1.1).

Action 0 = cooperate (C), 1 = defect (D). The state is the previous joint action
`2 * a0 + a1`, or 4 at the start of an episode; both agents observe its one-hot.
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

NUM_STATES = 5
START_STATE = 4
STATE_NAMES = ("start", "CC", "CD", "DC", "DD")

# PAYOFFS[game][a0, a1] = (reward of player 0, reward of player 1).
PAYOFFS: dict[str, np.ndarray] = {
    "ipd": np.array([[[3, 3], [0, 4]], [[4, 0], [1, 1]]], np.float32),
    "chicken": np.array([[[3, 3], [1, 4]], [[4, 1], [0, 0]]], np.float32),
    "stag_hunt": np.array([[[4, 4], [0, 3]], [[3, 0], [1, 1]]], np.float32),
}


@struct.dataclass
class MatrixGameState:
    """prev_joint: i32[] previous joint action 2*a0 + a1, or 4 at the start.
    step_count: i32[] steps taken in this episode."""

    prev_joint: jax.Array
    step_count: jax.Array


def state_observation(prev_joint: jax.Array, num_agents: int = 2) -> jax.Array:
    """f32[num_agents, 5]: the one-hot of the game state, the same for both agents."""
    one_hot = jax.nn.one_hot(prev_joint, NUM_STATES, dtype=jnp.float32)
    return jnp.broadcast_to(one_hot, (num_agents, NUM_STATES))


def is_social_dilemma(r: float, s: float, t: float, p: float) -> bool:
    """The four conditions of a social dilemma on a symmetric 2x2 table (SPEC §1.1)."""
    return r > p and r > s and 2 * r > t + s and (t > r or p > s)


def dilemma_gaps(table: np.ndarray) -> np.ndarray:
    """R - T and S - P of each player from a joint table `[..., a0, a1, player]`.

    Returns `[..., player, 2]` with `[..., 0]` = R - T and `[..., 1]` = S - P, read
    from that player's point of view (its own action first). Both positive means
    cooperating is that player's greedy choice whatever the other does.
    """
    table = np.asarray(table)
    own_first = np.stack([table[..., 0], np.swapaxes(table[..., 1], -1, -2)], axis=-3)
    r, s = own_first[..., 0, 0], own_first[..., 0, 1]
    t, p = own_first[..., 1, 0], own_first[..., 1, 1]
    return np.stack([r - t, s - p], axis=-1)


class MatrixGame(MultiAgentEnv):
    """An iterated 2x2 game of `episode_length` simultaneous moves."""

    num_agents = 2
    num_actions = 2

    def __init__(self, game: str = "ipd", episode_length: int = 5):
        if game not in PAYOFFS:
            raise ValueError(f"unknown matrix game {game!r}; valid: {sorted(PAYOFFS)}")
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) \
                or episode_length < 1:
            raise ValueError(f"episode_length must be an integer >= 1, got {episode_length!r}")
        self.game = game
        self.episode_length = episode_length
        self.max_steps = episode_length
        self.payoffs = jnp.asarray(PAYOFFS[game])
        super().__init__()

    def __repr__(self) -> str:
        return f"MatrixGame(game={self.game!r}, episode_length={self.episode_length})"

    @cached_property
    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray(
            shape=(self.num_agents, NUM_STATES), dtype=jnp.float32, minimum=0.0,
            maximum=1.0, name="observation",
        )

    def reset(self, key: jax.Array) -> tuple[MatrixGameState, TimeStep]:
        del key  # the start state is deterministic
        state = MatrixGameState(
            prev_joint=jnp.asarray(START_STATE, jnp.int32), step_count=jnp.asarray(0, jnp.int32)
        )
        return state, self._first_timestep(state_observation(state.prev_joint))

    def step(self, state: MatrixGameState, action: jax.Array) -> tuple[MatrixGameState, TimeStep]:
        action = jnp.asarray(action, jnp.int32)
        reward = self.payoffs[action[0], action[1]]
        next_state = MatrixGameState(
            prev_joint=2 * action[0] + action[1], step_count=state.step_count + 1
        )
        done = next_state.step_count >= self.episode_length
        return next_state, self._timestep(state_observation(next_state.prev_joint), reward, done)
