"""Cleanup's rules (SPEC §1.3, §1.4), each against a hand-worked case, plus statistical
checks of the spawning and property-based checks over random play."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs_jax
from envs_jax.cleanup import (
    AGENT_COLOURS, APPLE, APPLE_CELL, BEAM_BIT, BEAM_COLOUR, CELL_COLOURS, CLEAN,
    CLEAN_ACTION, DIRTY, DOWN, EMPTY, LEFT, MAP_7X7, RIGHT, STAY, UP, WALL, Cleanup,
    CleanupState, parse_map,
)

ENV7 = envs_jax.make("cleanup_7x7")
ENV10 = envs_jax.make("cleanup_10x10")


def state_at(env: Cleanup, position, cells=None, changes=(), key=0) -> CleanupState:
    """A state with the given positions and the start map, or `cells`, with
    `changes` ((row, col, code), ...) applied."""
    grid = np.array(env.start_cells if cells is None else cells, np.uint8)
    for r, c, code in changes:
        grid[r, c] = code
    return CleanupState(cells=jnp.asarray(grid), position=jnp.asarray(position, jnp.int32),
                        step_count=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(key))


def beam_cells(cells) -> set[tuple[int, int]]:
    rows, cols = np.nonzero(np.asarray(cells) & BEAM_BIT)
    return {(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}


def codes(cells) -> np.ndarray:
    return np.asarray(cells) & 0x7F


# --- map and reset -------------------------------------------------------------------

def test_the_7x7_map_at_reset():
    cells = ENV7.start_cells
    assert cells.shape == (7, 7)
    assert codes(cells)[1, 1] == DIRTY and codes(cells)[2, 1] == DIRTY  # both H dirty
    assert all(cells[r, 5] == APPLE_CELL for r in range(1, 6))  # apple column empty
    assert (cells == WALL).sum() == 24 and ENV7.num_waste_cells == 2
    assert ENV7.spawns.tolist() == [[5, 2], [1, 4]] and ENV7.num_actions == 6
    state, first = ENV7.reset(jax.random.PRNGKey(3))
    assert first.observation.shape == (2, 9, 9, 3) and first.observation.dtype == jnp.float32
    assert state.position.tolist() == [[5, 2], [1, 4]]


def test_the_10x10_map_at_reset():
    cells = ENV10.start_cells
    assert ENV10.num_agents == 3 and ENV10.num_waste_cells == 16
    assert (cells == DIRTY).sum() == 8 and (cells == CLEAN).sum() == 8  # H dirty, R clean
    assert (cells == APPLE_CELL).sum() == 12
    assert ENV10.observation_spec.shape == (3, 15, 15, 3)
    assert ENV10.spawns.tolist() == [[8, 3], [5, 4], [1, 6]]


def test_bad_maps_and_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown map character 'X'"):
        parse_map(("@X@",))
    with pytest.raises(ValueError, match="enclosed by walls"):
        Cleanup(("@@@@", "@H  ", "@@@@"), spawns=((1, 2),))
    with pytest.raises(ValueError, match="off the map or on a wall"):
        Cleanup(spawns=((0, 0), (1, 4)))
    with pytest.raises(ValueError, match="share a spawn"):
        Cleanup(spawns=((1, 4), (1, 4)))
    with pytest.raises(ValueError, match="depletion"):
        Cleanup(depletion=0.0)


def pixel(observation, agent, i, j):
    return np.asarray(observation[agent, i, j]) * 256.0


def test_observation_pixels_at_reset_for_both_agents():
    """Window cell (i, j) of an agent at (r, c) shows map cell (r - 4 + i, c - 4 + j)."""
    _, first = ENV7.reset(jax.random.PRNGKey(0))
    obs = first.observation
    grey, dirty, black = CELL_COLOURS[WALL], CELL_COLOURS[DIRTY], np.zeros(3)
    # Agent 0 at (5, 2).
    np.testing.assert_allclose(pixel(obs, 0, 4, 4), AGENT_COLOURS[0])  # itself
    np.testing.assert_allclose(pixel(obs, 0, 0, 3), dirty)  # (1, 1)
    np.testing.assert_allclose(pixel(obs, 0, 1, 3), dirty)  # (2, 1)
    np.testing.assert_allclose(pixel(obs, 0, 0, 6), AGENT_COLOURS[1])  # agent 1 at (1, 4)
    np.testing.assert_allclose(pixel(obs, 0, 5, 4), grey)  # bottom wall (6, 2)
    np.testing.assert_allclose(pixel(obs, 0, 4, 2), grey)  # left wall (5, 0)
    np.testing.assert_allclose(pixel(obs, 0, 4, 7), black)  # empty apple cell (5, 5)
    np.testing.assert_allclose(pixel(obs, 0, 4, 8), grey)  # right wall (5, 6)
    assert np.all(np.asarray(obs[0, 6:]) == 0) and np.all(np.asarray(obs[0, :, :2]) == 0)
    # Agent 1 at (1, 4).
    np.testing.assert_allclose(pixel(obs, 1, 4, 4), AGENT_COLOURS[1])
    np.testing.assert_allclose(pixel(obs, 1, 8, 2), AGENT_COLOURS[0])  # agent 0 at (5, 2)
    np.testing.assert_allclose(pixel(obs, 1, 3, 4), grey)  # top wall (0, 4)
    np.testing.assert_allclose(pixel(obs, 1, 4, 1), dirty)  # (1, 1)
    np.testing.assert_allclose(pixel(obs, 1, 4, 6), grey)  # right wall (1, 6)
    assert np.all(np.asarray(obs[1, :3]) == 0) and np.all(np.asarray(obs[1, :, 7:]) == 0)
    # Whole window of agent 1 against a hand-made one.
    expected = np.zeros((9, 9, 3))
    for r in range(7):
        for c in range(7):
            i, j = r - 1 + 4, c - 4 + 4
            if 0 <= i < 9 and 0 <= j < 9:
                expected[i, j] = CELL_COLOURS[ENV7.start_cells[r, c]]
    expected[4, 4], expected[8, 2] = AGENT_COLOURS[1], AGENT_COLOURS[0]
    np.testing.assert_allclose(np.asarray(obs[1]), expected / 256.0)


def test_beam_cells_are_drawn_over_everything_and_fade_next_step():
    env = Cleanup(p_apple=0.0, p_waste=0.0)
    state = state_at(env, [[5, 2], [1, 4]])
    state, ts = env.step(state, jnp.array([CLEAN_ACTION, STAY]))
    np.testing.assert_allclose(pixel(ts.observation, 0, 3, 4), BEAM_COLOUR)  # (4, 2)
    np.testing.assert_allclose(pixel(ts.observation, 0, 1, 3), BEAM_COLOUR)  # (2, 1), cleaned
    np.testing.assert_allclose(pixel(ts.observation, 0, 0, 3), CELL_COLOURS[DIRTY])  # (1, 1)
    state, ts = env.step(state, jnp.array([STAY, STAY]))
    assert not beam_cells(state.cells)
    np.testing.assert_allclose(pixel(ts.observation, 0, 1, 3), CELL_COLOURS[CLEAN])


# --- the clean beam ------------------------------------------------------------------

def test_beam_geometry_centre_and_both_side_rays():
    """Agent 0 at (5, 2): centre ray (4..1, 2), ends before the top wall; left ray
    (5..2, 1) stops at the first dirty cell (2, 1) and cleans only it; right ray covers
    (5..1, 3), all five cells."""
    state = state_at(ENV7, [[5, 2], [1, 5]])
    cells = ENV7.fire(state.cells, state.position, 0)
    centre = {(r, 2) for r in (4, 3, 2, 1)}
    left = {(r, 1) for r in (5, 4, 3, 2)}
    right = {(r, 3) for r in (5, 4, 3, 2, 1)}
    assert beam_cells(cells) == centre | left | right
    assert codes(cells)[2, 1] == CLEAN and codes(cells)[1, 1] == DIRTY  # one cell per ray


def test_rays_are_five_cells_long():
    """On the 10x10 map from (8, 4): centre (7..3, 4), side rays (8..4, 3) and (8..4, 5)."""
    state = state_at(ENV10, [[8, 4], [1, 3], [1, 6]])
    cells = ENV10.fire(state.cells, state.position, 0)
    expected = ({(r, 4) for r in range(3, 8)} | {(r, 3) for r in range(4, 9)}
                | {(r, 5) for r in range(4, 9)})
    assert beam_cells(cells) == expected


def test_rays_stop_at_walls_agents_and_dirty_waste():
    # Wall: from (5, 1) the left ray is column 0, a wall: nothing is covered there.
    state = state_at(ENV7, [[5, 1], [1, 4]])
    cells = ENV7.fire(state.cells, state.position, 0)
    assert not any(c == 0 for _, c in beam_cells(cells))
    # Agent: agent 1 at (3, 2) on the centre ray of agent 0 at (5, 2): covered, ray stops.
    state = state_at(ENV7, [[5, 2], [3, 2]])
    cells = ENV7.fire(state.cells, state.position, 0)
    assert {(r, c) for r, c in beam_cells(cells) if c == 2} == {(4, 2), (3, 2)}
    # Agent on a clean cell of the left ray shields the dirty waste above it.
    state = state_at(ENV7, [[5, 2], [3, 1]])
    cells = ENV7.fire(state.cells, state.position, 0)
    assert {(r, c) for r, c in beam_cells(cells) if c == 1} == {(5, 1), (4, 1), (3, 1)}
    assert codes(cells)[2, 1] == DIRTY
    # Agent standing on dirty waste: covered, the waste under it is cleaned, ray stops.
    state = state_at(ENV7, [[5, 2], [2, 1]])
    cells = ENV7.fire(state.cells, state.position, 0)
    assert codes(cells)[2, 1] == CLEAN and codes(cells)[1, 1] == DIRTY
    np.testing.assert_array_equal(state.position, [[5, 2], [2, 1]])  # unaffected


def test_rays_pass_over_apples_and_clean_cells():
    # Apples in column 5 under agent 0's right ray from (5, 4): all five covered, kept.
    apples = [(r, 5, APPLE) for r in range(1, 6)]
    state = state_at(ENV7, [[5, 4], [1, 2]], changes=apples)
    cells = ENV7.fire(state.cells, state.position, 0)
    assert {(r, 5) for r in range(1, 6)} <= beam_cells(cells)
    assert all(codes(cells)[r, 5] == APPLE for r in range(1, 6))
    # Clean waste passed over: with (2, 1) clean the left ray reaches and cleans (1, 1).
    state = state_at(ENV7, [[5, 2], [1, 4]], changes=[(2, 1, CLEAN)])
    cells = ENV7.fire(state.cells, state.position, 0)
    assert {(r, 1) for r in range(1, 6)} <= beam_cells(cells)
    assert codes(cells)[1, 1] == CLEAN


def test_agents_fire_in_index_order():
    """Agent 0's beam cleans (7, 2) first, so agent 1's passes it and cleans (3, 2).
    Fired the other way round, agent 1 would clean (7, 2) and agent 0's ray, five
    cells from (8, 2) to (4, 2), would not reach (3, 2)."""
    column = [(r, 2, CLEAN) for r in range(1, 9)] + [(7, 2, DIRTY), (3, 2, DIRTY)]
    env = Cleanup(ENV10_MAP, spawns=((8, 3), (7, 3), (1, 6)), view_radius=7,
                  p_apple=0.0, p_waste=0.0, depletion=0.4)
    state = state_at(env, [[8, 3], [7, 3], [1, 6]], changes=column)
    state, _ = env.step(state, jnp.array([CLEAN_ACTION, CLEAN_ACTION, STAY]))
    assert codes(state.cells)[7, 2] == CLEAN and codes(state.cells)[3, 2] == CLEAN
    reverse = env.fire(env.fire(state_at(env, [[8, 3], [7, 3], [1, 6]], changes=column).cells,
                                state.position, 1), state.position, 0)
    assert codes(reverse)[3, 2] == DIRTY  # the order matters, and ours is the SPEC's


ENV10_MAP = (
    "@@@@@@@@@@", "@HH   P B@", "@RR    BB@", "@HH     B@", "@RR    BB@",
    "@HH P   B@", "@RR    BB@", "@HH     B@", "@RRP   BB@", "@@@@@@@@@@",
)


# --- moves ---------------------------------------------------------------------------

def moved(env, position, action, key=0):
    return np.asarray(env.move(jnp.asarray(env.start_cells), jnp.asarray(position, jnp.int32),
                               jnp.asarray(action, jnp.int32), jax.random.PRNGKey(key)))


def test_moves_and_walls():
    assert moved(ENV7, [[3, 3], [1, 4]], [LEFT, STAY]).tolist() == [[3, 2], [1, 4]]
    assert moved(ENV7, [[3, 3], [1, 4]], [RIGHT, DOWN]).tolist() == [[3, 4], [2, 4]]
    assert moved(ENV7, [[3, 3], [1, 4]], [UP, UP]).tolist() == [[2, 3], [1, 4]]  # wall
    assert moved(ENV7, [[1, 1], [5, 5]], [LEFT, RIGHT]).tolist() == [[1, 1], [5, 5]]  # walls
    assert moved(ENV7, [[1, 1], [5, 5]], [CLEAN_ACTION, DOWN]).tolist() == [[1, 1], [5, 5]]
    # Agents may stand on waste.
    assert moved(ENV7, [[3, 1], [5, 5]], [UP, STAY]).tolist() == [[2, 1], [5, 5]]


def test_contested_cell_goes_to_a_random_agent():
    winners = []
    for key in range(40):
        out = moved(ENV7, [[3, 2], [3, 4]], [RIGHT, LEFT], key)
        assert sorted(map(tuple, out.tolist())) in (
            [(3, 2), (3, 3)], [(3, 3), (3, 4)])  # one moved in, the other stayed
        winners.append(0 if out[0].tolist() == [3, 3] else 1)
    assert 0 < sum(winners) < 40  # both win sometimes


def test_no_entering_a_held_cell_and_no_swaps():
    # Into an agent that stays or cleans: blocked.
    assert moved(ENV7, [[3, 2], [3, 3]], [RIGHT, STAY]).tolist() == [[3, 2], [3, 3]]
    assert moved(ENV7, [[3, 2], [3, 3]], [RIGHT, CLEAN_ACTION]).tolist() == [[3, 2], [3, 3]]
    # Swap: both stay.
    assert moved(ENV7, [[3, 2], [3, 3]], [RIGHT, LEFT]).tolist() == [[3, 2], [3, 3]]
    # Into a cell its occupant leaves this step: allowed.
    assert moved(ENV7, [[3, 2], [3, 3]], [RIGHT, RIGHT]).tolist() == [[3, 3], [3, 4]]
    # ... unless the occupant is itself blocked (by the wall, or by a third agent).
    assert moved(ENV7, [[3, 4], [3, 5]], [RIGHT, RIGHT]).tolist() == [[3, 4], [3, 5]]
    env3 = envs_jax.make("cleanup_10x10")
    chain = moved(env3, [[4, 3], [4, 4], [4, 5]], [RIGHT, RIGHT, STAY])
    assert chain.tolist() == [[4, 3], [4, 4], [4, 5]]
    follow = moved(env3, [[4, 3], [4, 4], [4, 5]], [RIGHT, RIGHT, RIGHT])
    assert follow.tolist() == [[4, 4], [4, 5], [4, 6]]


# --- eating, rewards, episode --------------------------------------------------------

def test_eating_an_apple_rewards_only_the_eater_and_empties_the_cell():
    env = Cleanup(p_apple=0.0, p_waste=0.0)
    state = state_at(env, [[2, 4], [4, 4]], changes=[(2, 5, APPLE), (4, 5, APPLE)])
    state, ts = env.step(state, jnp.array([RIGHT, STAY]))
    np.testing.assert_array_equal(ts.reward, [1.0, 0.0])
    assert codes(state.cells)[2, 5] == APPLE_CELL and codes(state.cells)[4, 5] == APPLE


def test_episodes_last_exactly_max_steps():
    state, _ = ENV7.reset(jax.random.PRNGKey(1))
    step = jax.jit(ENV7.step)
    for t in range(50):
        state, ts = step(state, jnp.array([STAY, STAY]))
        assert (int(ts.step_type) == 2) == (t == 49)
    np.testing.assert_array_equal(ts.discount, [0.0, 0.0])


# --- spawning ------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0, 3))
def spawn_many(env, cells, position, n):
    keys = jax.random.split(jax.random.PRNGKey(11), n)
    return jax.vmap(lambda k: env.spawn(cells, position, k))(keys)


@pytest.mark.parametrize("dirty,p_expected", [(0, 0.5), (1, 0.5 * (1 - 0.5 / 0.6)), (2, 0.0)])
def test_apple_spawn_probability_at_each_waste_density(dirty, p_expected):
    waste = [(1, 1, DIRTY if dirty >= 1 else CLEAN), (2, 1, DIRTY if dirty >= 2 else CLEAN)]
    state = state_at(ENV7, [[5, 2], [3, 5]], changes=waste)  # agent 1 on apple cell (3, 5)
    n = 20000
    out = codes(spawn_many(ENV7, state.cells, state.position, n))
    grown = out[:, 1:6, 5] == APPLE  # [n, 5]
    assert not grown[:, 2].any()  # never under an agent
    free = grown[:, [0, 1, 3, 4]]
    sd = np.sqrt(max(p_expected * (1 - p_expected), 1e-12) / free.size)
    assert abs(free.mean() - p_expected) < 5 * sd + 1e-9
    if dirty == 0:  # cells independent: both of two cells together at p^2
        both = (free[:, 0] & free[:, 1]).mean()
        assert abs(both - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


def test_waste_spawns_at_most_one_cell_per_step_and_not_when_depleted():
    n = 20000
    # d = 0: two clean cells, each tried with 0.5 in random order: one new dirty cell
    # with probability 1 - 0.25, never two, each cell equally often.
    state = state_at(ENV7, [[5, 2], [1, 4]], changes=[(1, 1, CLEAN), (2, 1, CLEAN)])
    out = codes(spawn_many(ENV7, state.cells, state.position, n))
    new = (out[:, 1, 1] == DIRTY).astype(int) + (out[:, 2, 1] == DIRTY)
    assert new.max() == 1
    assert abs(new.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / n)
    assert abs((out[:, 1, 1] == DIRTY).mean() - 0.375) < 0.02
    # d = 0.5 < 0.6: the one clean cell turns dirty with probability 0.5.
    state = state_at(ENV7, [[5, 2], [1, 4]], changes=[(1, 1, CLEAN)])
    out = codes(spawn_many(ENV7, state.cells, state.position, n))
    assert abs((out[:, 1, 1] == DIRTY).mean() - 0.5) < 5 * np.sqrt(0.25 / n)
    # 10x10 at d = 0.5 >= 0.4: nothing spawns at all.
    out = codes(spawn_many(ENV10, jnp.asarray(ENV10.start_cells),
                           jnp.asarray(ENV10.spawns), 2000))
    np.testing.assert_array_equal(out, np.broadcast_to(ENV10.start_cells, out.shape))


# --- scripted sanity and random play -------------------------------------------------

def scripted_actions(t):
    """Agent 0 cleans every step from its spawn; agent 1 steps right into the apple
    column and sweeps it down and up."""
    sweep = jnp.where(t == 0, RIGHT, jnp.where(((t - 1) // 4) % 2 == 0, DOWN, UP))
    return jnp.stack([jnp.int32(CLEAN_ACTION), sweep.astype(jnp.int32)])


@functools.partial(jax.jit, static_argnums=(1,))
def apples_per_episode(keys, scripted: bool):
    def episode(key):
        reset_key, action_key = jax.random.split(key)
        state, _ = ENV7.reset(reset_key)

        def body(state, inputs):
            t, k = inputs
            action = scripted_actions(t) if scripted else jax.random.randint(k, (2,), 0, 6)
            state, ts = ENV7.step(state, action)
            return state, ts.reward

        _, rewards = jax.lax.scan(body, state, (jnp.arange(50), jax.random.split(action_key, 50)))
        return rewards.sum()

    return jax.vmap(episode)(keys)


def test_scripted_cleaner_and_harvester_collect_about_39_apples():
    apples = np.asarray(apples_per_episode(jax.random.split(jax.random.PRNGKey(0), 500), True))
    assert 38.0 < apples.mean() < 40.0  # SPEC: about 39


def test_uniform_random_play_collects_about_1_3_apples():
    apples = np.asarray(apples_per_episode(jax.random.split(jax.random.PRNGKey(1), 2000), False))
    assert 1.1 < apples.mean() < 1.5  # SPEC: about 1.3


# --- properties over random play -----------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0,))
def play(env, key, actions):
    state, _ = env.reset(key)

    def body(state, action):
        next_state, ts = env.step(state, action)
        return next_state, (state, next_state, ts.reward)

    return jax.lax.scan(body, state, actions)[1]


def check_invariants(env, before, after, reward):
    start = env.start_cells
    waste = (start == DIRTY) | (start == CLEAN)
    apple_cells = (start == APPLE) | (start == APPLE_CELL)
    for t in range(reward.shape[0]):
        pos = after.position[t]
        code_before, code_after = codes(before.cells[t]), codes(after.cells[t])
        assert len({tuple(p) for p in pos.tolist()}) == env.num_agents  # no shared cells
        assert np.all(start[pos[:, 0], pos[:, 1]] != WALL)
        assert np.all(code_after[~apple_cells] != APPLE)  # apples only on apple cells
        assert np.all(code_after[~waste] != DIRTY) and np.all(code_after[~waste] != CLEAN)
        assert np.all(code_after[start == WALL] == WALL)
        assert np.all(code_after[~(waste | apple_cells | (start == WALL))] == EMPTY)
        assert ((code_after == DIRTY) & (code_before != DIRTY)).sum() <= 1
        # Rewards equal the apples eaten: an apple under each rewarded agent before.
        eaten = code_before[pos[:, 0], pos[:, 1]] == APPLE
        np.testing.assert_array_equal(reward[t], eaten.astype(np.float32))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       actions=st.lists(st.lists(st.integers(0, 5), min_size=2, max_size=2),
                        min_size=40, max_size=40))
def test_invariants_hold_over_random_action_sequences_7x7(seed, actions):
    before, after, reward = jax.device_get(
        play(ENV7, jax.random.PRNGKey(seed), jnp.asarray(actions, jnp.int32)))
    check_invariants(ENV7, before, after, reward)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       actions=st.lists(st.lists(st.integers(0, 5), min_size=3, max_size=3),
                        min_size=40, max_size=40))
def test_invariants_hold_over_random_action_sequences_10x10(seed, actions):
    before, after, reward = jax.device_get(
        play(ENV10, jax.random.PRNGKey(seed), jnp.asarray(actions, jnp.int32)))
    check_invariants(ENV10, before, after, reward)


def test_render_depends_only_on_the_compact_state():
    state, _ = ENV7.reset(jax.random.PRNGKey(2))
    state, ts = ENV7.step(state, jnp.array([CLEAN_ACTION, RIGHT]))
    cells, position = ENV7.compact(state)
    assert cells.dtype == jnp.uint8 and position.dtype == jnp.int8
    np.testing.assert_array_equal(ENV7.observe_compact(cells, position), ts.observation)
    assert cells.nbytes + position.nbytes == 49 + 4  # bytes per stored 7x7 state


def test_map_constant_is_the_spec_map():
    assert MAP_7X7[1] == "@H  PB@" and ENV10_MAP == envs_jax.cleanup.MAP_10X10
