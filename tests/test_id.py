"""The ID baseline: its meta-gradient through the agents' own update, and the one
place the engine hands a mechanism the agents' parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim.config import IDConfig, PGConfig, escape_room
from jaxsim.train import Experiment, seed_keys
from tests.gradcheck import assert_directional_derivatives


def tiny_id_experiment():
    config = escape_room(3, 1, "id", agent=PGConfig(hidden=(6,), lr=0.05, entropy_coef=0.01),
                         mechanism=IDConfig(incentive_hidden=(5,), output_scale=1.0),
                         episodes=20, chunk_episodes=10, eval_period=10, num_seeds=1)
    return Experiment(config)


@pytest.mark.timeout(300)
def test_id_meta_gradient_matches_finite_differences():
    """d outer_loss / d eta through each agent's differentiable SGD step equals a
    central finite difference along random directions, in float64."""
    with jax.enable_x64(True):
        exp = tiny_id_experiment()
        state = exp.init(seed_keys(exp.config)[0])
        state, _ = jax.jit(exp.episode_step)(state)  # episode k
        state, _ = jax.jit(exp.episode_step)(state)
        mech_state = jax.tree.map(
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state.mechanism)
        assert bool(mech_state.has_prev)
        # Episode k+1, played by the agents' current parameters.
        from jaxsim.rollout import rollout
        traj = rollout(exp.env, exp.agent, exp.mechanism, state.agents.params, state.mechanism,
                       jax.random.PRNGKey(5))
        traj = jax.tree.map(
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, traj)
        mech = exp.mechanism
        loss = jax.jit(lambda eta: mech.outer_loss(eta, mech_state, traj))
        grad = jax.jit(jax.grad(lambda eta: mech.outer_loss(eta, mech_state, traj)))(
            mech_state.eta)
        flat_grad, unravel = jax.flatten_util.ravel_pytree(grad)
        flat_eta, _ = jax.flatten_util.ravel_pytree(mech_state.eta)
        assert_directional_derivatives(loss, flat_grad, flat_eta, unravel)


@pytest.mark.timeout(300)
def test_engine_hands_id_the_parameters_that_played_the_episode():
    exp = tiny_id_experiment()
    state = exp.init(seed_keys(exp.config)[0])
    played_with = state.agents.params
    new_state, metrics = jax.jit(exp.episode_step)(state)
    for a, b in zip(jax.tree.leaves(new_state.mechanism.prev_agents.params),
                    jax.tree.leaves(played_with), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(metrics["id/meta_loss"]) == 0.0  # no episode k yet: the cost alone acts
    # The agents did learn in between, so the next outer step has a real update to use.
    changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new_state.agents.params), jax.tree.leaves(played_with), strict=True)]
    assert any(changed)
    # IQ-Flow and "none" never ask for the agents' parameters.
    assert not getattr(Experiment(escape_room(3, 1, "iqflow", episodes=100, chunk_episodes=10,
                                              eval_period=10)).mechanism, "reads_agents", False)


def test_id_incentive_starts_near_zero_and_stays_in_range():
    exp = Experiment(escape_room(5, 2, "id"))
    state = exp.mechanism.init(jax.random.PRNGKey(0))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (256, 5, 15))
    action = jax.random.randint(jax.random.PRNGKey(2), (256, 5), 0, 3)
    r_inc = exp.mechanism.incentives(state.eta, obs, action)
    assert float(r_inc.min()) >= 0.0 and float(r_inc.max()) < 0.2
