"""Matrix games: payoff tables, state encoding, episode end, specs, factory errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jumanji.types import StepType

import envs_jax
from tests.env_checks import check_specs_under_jit_and_vmap
from envs_jax.matrix_games import dilemma_gaps, is_social_dilemma

# Hand-copied from SPEC §1.1: (a0, a1) -> (r0, r1).
EXPECTED = {
    "ipd": {(0, 0): (3, 3), (0, 1): (0, 4), (1, 0): (4, 0), (1, 1): (1, 1)},
    "chicken": {(0, 0): (3, 3), (0, 1): (1, 4), (1, 0): (4, 1), (1, 1): (0, 0)},
    "stag_hunt": {(0, 0): (4, 4), (0, 1): (0, 3), (1, 0): (3, 0), (1, 1): (1, 1)},
}


@pytest.mark.parametrize("game", sorted(EXPECTED))
def test_payoffs_and_state_encoding(game):
    env = envs_jax.make(game)
    step = jax.jit(env.step)
    for (a0, a1), rewards in EXPECTED[game].items():
        state, ts = env.reset(jax.random.PRNGKey(0))
        np.testing.assert_array_equal(ts.observation, [[0, 0, 0, 0, 1]] * 2)  # start = 4
        state, ts = step(state, jnp.array([a0, a1]))
        np.testing.assert_array_equal(ts.reward, rewards)
        expected_obs = np.zeros(5)
        expected_obs[2 * a0 + a1] = 1
        np.testing.assert_array_equal(ts.observation, [expected_obs, expected_obs])


def test_episode_ends_after_its_length_with_zero_discount():
    env = envs_jax.make("ipd", episode_length=3)
    state, ts = env.reset(jax.random.PRNGKey(0))
    assert int(ts.step_type) == int(StepType.FIRST)
    kinds, discounts = [], []
    for _ in range(3):
        state, ts = env.step(state, jnp.array([0, 1]))
        kinds.append(int(ts.step_type))
        discounts.append(np.asarray(ts.discount).tolist())
    assert kinds == [int(StepType.MID), int(StepType.MID), int(StepType.LAST)]
    assert discounts == [[1, 1], [1, 1], [0, 0]]


@pytest.mark.parametrize("game", sorted(EXPECTED))
def test_specs_validate_under_jit_and_vmap(game):
    check_specs_under_jit_and_vmap(envs_jax.make(game))
    check_specs_under_jit_and_vmap(envs_jax.make(game, episode_length=20), num_envs=2)


def test_social_dilemma_gaps():
    for game in EXPECTED:
        table = np.array([[EXPECTED[game][(a0, a1)] for a1 in range(2)] for a0 in range(2)])
        gaps = dilemma_gaps(table)  # [player, (R-T, S-P)]
        r, s, t, p = table[0, 0, 0], table[0, 1, 0], table[1, 0, 0], table[1, 1, 0]
        np.testing.assert_array_equal(gaps[0], [r - t, s - p])
        np.testing.assert_array_equal(gaps[1], gaps[0])  # the games are symmetric
        assert is_social_dilemma(r, s, t, p), game
    # IPD: R - T = 3 - 4, S - P = 0 - 1; Stag Hunt: 4 - 3, 0 - 1.
    ipd = np.array([[EXPECTED["ipd"][(a, b)] for b in range(2)] for a in range(2)])
    np.testing.assert_array_equal(dilemma_gaps(ipd)[0], [-1, -1])
    # Player 1's view uses its own action first: asymmetric table.
    table = np.zeros((2, 2, 2))
    table[0, 1, 1] = 5.0  # player 1 defects while player 0 cooperates: player 1's T
    assert dilemma_gaps(table)[1, 0] == -5.0 and dilemma_gaps(table)[0, 0] == 0.0


def test_factory_errors_list_what_is_valid():
    with pytest.raises(ValueError, match=r"unknown environment 'pd'.*'chicken'.*'ipd'"):
        envs_jax.make("pd")
    with pytest.raises(ValueError, match=r"unknown parameter.*length.*episode_length"):
        envs_jax.make("ipd", length=5)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="episode_length must be an integer >= 1"):
            envs_jax.make("chicken", episode_length=bad)
    assert envs_jax.make("stag_hunt", episode_length=20).max_steps == 20
