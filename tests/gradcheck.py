"""A shared check of analytic gradients against central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np


def assert_directional_derivatives(loss, flat_grad, flat_x, unravel, directions=3, eps=1e-5,
                                   rtol=1e-5, atol=1e-9):
    """`flat_grad . d` equals (loss(x + eps d) - loss(x - eps d)) / 2 eps along random
    unit directions d; `loss` takes the unravelled point. Use float64."""
    assert float(jnp.abs(flat_grad).max()) > 1e-9  # a zero gradient would pass vacuously
    for seed in range(directions):
        direction = jax.random.normal(jax.random.PRNGKey(seed), flat_x.shape)
        direction = direction / jnp.linalg.norm(direction)
        numeric = (loss(unravel(flat_x + eps * direction))
                   - loss(unravel(flat_x - eps * direction))) / (2 * eps)
        np.testing.assert_allclose(jnp.dot(flat_grad, direction), numeric, rtol=rtol,
                                   atol=atol)
