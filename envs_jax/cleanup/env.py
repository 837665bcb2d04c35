"""Cleanup (SPEC §1.3, §1.4): a public-goods dilemma on a small grid.

Apples grow in the apple cells only while the river's waste cells are mostly clean, and
cleaning earns nothing, so a self-interested agent harvests and leaves the cleaning to
others. Maps, spawns, colours and probabilities are the SPEC's; the 7x7 map is the
IQ-Flow paper's 2-player Cleanup, the 10x10 map LIO's 3-player one.

The state is compact on purpose: the map as small integers (`cells`, u8[H, W], with
this step's clean-beam cells in the high bit) and the agents' positions. `observe_compact`
turns exactly that into the agents' egocentric RGB windows, so a replay buffer can
store `compact(state)` (tens of bytes per step) and render only the batch it samples.

Step order: (1) moves, (2) eating, (3) clean beams in agent order, (4) spawning with
the waste density after cleaning, (5) observations. The episode ends after
`max_steps` steps, as a termination (discount 0): the observation has no clock.
"""

from __future__ import annotations

from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from jumanji import specs
from jumanji.types import TimeStep

from envs_jax.base import MultiAgentEnv
from envs_jax.cleanup.constants import (AGENT_COLOURS, APPLE, APPLE_CELL, BEAM_BIT, CLEAN,
                                        CLEAN_ACTION, DIRTY, MAP_7X7, MAP_10X10, MOVES, WALL,
                                        parse_map)
from envs_jax.cleanup.rendering import map_image, windows
from envs_jax.cleanup.types import CleanupState


class Cleanup(MultiAgentEnv):
    num_actions = 6

    def __init__(self, ascii_map: tuple[str, ...] = MAP_7X7,
                 spawns: tuple[tuple[int, int], ...] = ((5, 2), (1, 4)),
                 view_radius: int = 4, p_apple: float = 0.5, p_waste: float = 0.5,
                 depletion: float = 0.6, max_steps: int = 50):
        start = parse_map(ascii_map)
        self.num_agents = len(spawns)
        if not 1 <= self.num_agents <= len(AGENT_COLOURS):
            raise ValueError(f"Cleanup takes 1 to {len(AGENT_COLOURS)} agents, "
                             f"got {self.num_agents} spawns")
        height, width = start.shape
        border = np.concatenate([start[0], start[-1], start[:, 0], start[:, -1]])
        if np.any(border != WALL):
            raise ValueError("the map must be enclosed by walls ('@')")
        for r, c in spawns:
            if not (0 <= r < height and 0 <= c < width) or start[r, c] == WALL:
                raise ValueError(f"spawn {(r, c)} is off the map or on a wall")
        if len(set(spawns)) != len(spawns):
            raise ValueError(f"two agents share a spawn: {spawns}")
        for name, value in (("p_apple", p_apple), ("p_waste", p_waste)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value!r}")
        if not 0.0 < depletion <= 1.0:
            raise ValueError(f"depletion must be in (0, 1], got {depletion!r}")
        if view_radius < 1 or max_steps < 1:
            raise ValueError("view_radius and max_steps must be >= 1")
        waste = (start == DIRTY) | (start == CLEAN)
        if not waste.any():
            raise ValueError("the map has no waste cells")
        self.start_cells = start
        self.spawns = np.asarray(spawns, np.int32)
        self.view_radius = view_radius
        self.p_apple, self.p_waste, self.depletion = p_apple, p_waste, depletion
        self.max_steps = max_steps
        self.num_waste_cells = int(waste.sum())
        self._build_tables()
        # Flat indices of the only cells that spawning can change.
        self._waste_idx = jnp.asarray(np.flatnonzero(waste), jnp.int32)
        self._apple_idx = jnp.asarray(np.flatnonzero((start == APPLE) | (start == APPLE_CELL)),
                                      jnp.int32)
        super().__init__()

    def _build_tables(self) -> None:
        """Static lookups, per agent cell (flat index): the clean beam's 15 cells and
        whether each lies before any wall or edge on its ray."""
        height, width = self.start_cells.shape
        wall = self.start_cells == WALL
        ray_idx = np.zeros((height * width, 3, 5), np.int32)
        ray_ok = np.zeros((height * width, 3, 5), bool)
        for r in range(height):
            for c in range(width):
                rays = [[(r - 1 - k, c) for k in range(5)], [(r - k, c - 1) for k in range(5)],
                        [(r - k, c + 1) for k in range(5)]]
                for i, ray in enumerate(rays):
                    for k, (rr, cc) in enumerate(ray):
                        if not (0 <= rr < height and 0 <= cc < width) or wall[rr, cc]:
                            break  # the ray ends before a wall or the edge
                        ray_idx[r * width + c, i, k] = rr * width + cc
                        ray_ok[r * width + c, i, k] = True
        self._ray_idx, self._ray_ok = jnp.asarray(ray_idx), jnp.asarray(ray_ok)

    def __repr__(self) -> str:
        h, w = self.start_cells.shape
        return f"Cleanup({h}x{w}, {self.num_agents} agents)"

    @property
    def shape(self) -> tuple[int, int]:
        return self.start_cells.shape

    @cached_property
    def observation_spec(self) -> specs.BoundedArray:
        side = 2 * self.view_radius + 1
        return specs.BoundedArray(shape=(self.num_agents, side, side, 3), dtype=jnp.float32,
                                  minimum=0.0, maximum=1.0, name="observation")

    # --- observations ---------------------------------------------------------------
    def compact(self, state: CleanupState) -> tuple[jax.Array, jax.Array]:
        """What a replay buffer stores to re-render the observations: (cells u8[H, W],
        position i8[N, 2])."""
        return state.cells, state.position.astype(jnp.int8)

    def observe_compact(self, cells: jax.Array, position: jax.Array) -> jax.Array:
        """f32[N, 2R+1, 2R+1, 3], the agents' observations from a compact state
        (`compact`): each agent's egocentric window of the map."""
        return windows(map_image(cells, position), position, self.view_radius)

    def observe(self, state: CleanupState) -> jax.Array:
        return self.observe_compact(*self.compact(state))

    def render(self, state: CleanupState) -> jax.Array:
        """f32[H, W, 3]: the whole map as the agents' colours draw it (Jumanji's
        `render(state)`, as an array)."""
        return map_image(state.cells, state.position)

    # --- dynamics -------------------------------------------------------------------
    def reset(self, key: jax.Array) -> tuple[CleanupState, TimeStep]:
        state = CleanupState(cells=jnp.asarray(self.start_cells),
                             position=jnp.asarray(self.spawns),
                             step_count=jnp.zeros((), jnp.int32), key=key)
        return state, self._first_timestep(self.observe(state))

    def move(self, cells: jax.Array, position: jax.Array, action: jax.Array,
             key: jax.Array) -> jax.Array:
        """New positions. Walls block; of several agents moving into one cell a random
        one wins and the others stay; nobody enters a cell whose occupant stays (or is
        itself blocked), and nobody swaps. Resolved to a fixed point: N + 1 rounds."""
        n = self.num_agents
        target = position + jnp.asarray(MOVES)[action]
        target = jnp.where((cells[target[:, 0], target[:, 1]] & 0x7F)[:, None] == WALL,
                           position, target)
        moving = jnp.any(target != position, axis=1)
        priority = jax.random.uniform(key, (n,))  # higher wins a contested cell
        others = ~jnp.eye(n, dtype=bool)
        same_target = jnp.all(target[:, None] == target[None, :], -1) & others
        into_cell_of = jnp.all(target[:, None] == position[None, :], -1) & others
        swap = into_cell_of & into_cell_of.T
        outranked = priority[None, :] > priority[:, None]
        for _ in range(n + 1):
            contested = jnp.any(same_target & moving[None, :] & outranked, axis=1)
            into_stayer = jnp.any(into_cell_of & ~moving[None, :], axis=1)
            swapping = jnp.any(swap & moving[None, :], axis=1)
            moving = moving & ~(contested | into_stayer | swapping)
        return jnp.where(moving[:, None], target, position)

    def fire(self, cells: jax.Array, position: jax.Array, agent: int,
             firing: jax.Array | bool = True) -> jax.Array:
        """`cells` after agent `agent` fires its clean beam (BEAM_BIT on covered cells):
        the centre ray (r-1 .. r-5, c), the side rays (r .. r-4, c-1) and (r .. r-4, c+1),
        each ending before a wall or the edge, at the first agent or the first dirty cell
        (cleaned). Nothing changes where `firing` is false."""
        width = self.shape[1]
        flat_pos = position[:, 0] * width + position[:, 1]
        ray = self._ray_idx[flat_pos[agent]]  # [3, 5] flat cells
        reach = self._ray_ok[flat_pos[agent]]
        flat = cells.reshape(-1)
        code = flat[ray] & 0x7F
        agent_here = jnp.any(ray[..., None] == flat_pos, axis=-1)
        stop = reach & (agent_here | (code == DIRTY))
        covered = reach & (jnp.cumsum(stop, axis=1) - stop == 0) & firing  # to the first stop
        new_code = jnp.where(covered & (code == DIRTY), CLEAN, code).astype(jnp.uint8)
        # Uncovered cells scatter out of range, so they never touch the map.
        target = jnp.where(covered, ray, flat.shape[0])
        return flat.at[target].set(new_code | BEAM_BIT, mode="drop").reshape(cells.shape)

    def spawn(self, cells: jax.Array, position: jax.Array, key: jax.Array) -> jax.Array:
        """Apples on free apple cells with p_apple (1 - d / depletion) and at most one
        new dirty waste cell (each clean one tried with p_waste in a random order), both
        only while the dirty fraction d is below the depletion threshold."""
        code = (cells & 0x7F).reshape(-1)
        dirty_fraction = jnp.sum(code[self._waste_idx] == DIRTY) / self.num_waste_cells
        active = dirty_fraction < self.depletion
        p_apple = self.p_apple * (1.0 - dirty_fraction / self.depletion)
        # One draw for the whole step, and only for the cells that can change.
        n_apple, n_waste = len(self._apple_idx), len(self._waste_idx)
        u = jax.random.uniform(key, (n_apple + 2 * n_waste,))
        width = self.shape[1]
        occupied = jnp.any(position[:, 0:1] * width + position[:, 1:2]
                           == self._apple_idx[None, :], axis=0)
        apple_code = code[self._apple_idx]
        grow = (apple_code == APPLE_CELL) & ~occupied & active & (u[:n_apple] < p_apple)
        # The first success in a random order is a uniform pick among the successes.
        waste_code = code[self._waste_idx]
        tried = (waste_code == CLEAN) & active & (u[n_apple:n_apple + n_waste] < self.p_waste)
        score = jnp.where(tried, u[n_apple + n_waste:], -1.0)
        soil = tried & (jnp.arange(n_waste) == jnp.argmax(score))
        code = code.at[self._apple_idx].set(jnp.where(grow, APPLE, apple_code).astype(jnp.uint8))
        code = code.at[self._waste_idx].set(jnp.where(soil, DIRTY, waste_code).astype(jnp.uint8))
        code = code.reshape(self.shape)
        return code | (cells & BEAM_BIT)

    def step(self, state: CleanupState, action: jax.Array) -> tuple[CleanupState, TimeStep]:
        action = jnp.asarray(action, jnp.int32)
        key, move_key, spawn_key = jax.random.split(state.key, 3)
        cells = state.cells & 0x7F  # last step's beams fade
        position = self.move(cells, state.position, action, move_key)
        eaten = cells[position[:, 0], position[:, 1]] == APPLE
        cells = cells.at[position[:, 0], position[:, 1]].set(
            jnp.where(eaten, APPLE_CELL, cells[position[:, 0], position[:, 1]]).astype(jnp.uint8))
        for agent in range(self.num_agents):  # index order: later beams see earlier ones
            cells = self.fire(cells, position, agent, action[agent] == CLEAN_ACTION)
        cells = self.spawn(cells, position, spawn_key)
        next_state = CleanupState(cells=cells, position=position,
                                  step_count=state.step_count + 1, key=key)
        done = next_state.step_count >= self.max_steps
        return next_state, self._timestep(self.observe(next_state),
                                          eaten.astype(jnp.float32), done)


def cleanup_7x7(max_steps: int = 50) -> Cleanup:
    """The IQ-Flow paper's 2-player Cleanup (SPEC §1.3)."""
    return Cleanup(max_steps=max_steps)


def cleanup_10x10(max_steps: int = 50) -> Cleanup:
    """LIO's 3-player Cleanup (SPEC §1.4)."""
    return Cleanup(MAP_10X10, spawns=((8, 3), (5, 4), (1, 6)), view_radius=7, p_apple=0.3,
                   p_waste=0.5, depletion=0.4, max_steps=max_steps)
