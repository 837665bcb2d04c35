"""Every registered environment, Cleanup included, through Jumanji's base API: reset
and step under jit and vmap with every timestep inside the specs; and where the
replay stores a compact form of the state, that form gives the observations back."""

import jax
import numpy as np
import pytest

import envs_jax
from tests.env_checks import check_specs_under_jit_and_vmap

NAMES = sorted(envs_jax.REGISTRY) + [envs_jax.CENTRALISED + "cleanup_7x7"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_registered_environment_keeps_its_specs_under_jit_and_vmap(name):
    env = envs_jax.make(name)
    check_specs_under_jit_and_vmap(env, num_envs=3)
    state, first = env.reset(jax.random.PRNGKey(0))
    assert first.observation.shape == env.observation_spec.shape
    if env.stores_compact:
        state, ts = jax.jit(env.step)(state, np.zeros(env.num_agents, np.int32))
        again = jax.jit(lambda s: env.observe_compact(*env.compact(s)))(state)
        np.testing.assert_array_equal(again, ts.observation)
    else:
        assert env.compact(state) is None


def test_cleanup_renders_its_state_as_jumanji_does():
    env = envs_jax.make("cleanup_7x7")
    state, _ = env.reset(jax.random.PRNGKey(0))
    picture = np.asarray(env.render(state))
    assert picture.shape == (7, 7, 3) and 0.0 <= picture.min() <= picture.max() < 1.0
