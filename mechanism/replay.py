"""IQ-Flow's per-seed replay: all agents' transitions in the ring buffer of
`agents.buffer` (its functions are named here too), stored as observations or, where
the environment has one, as a compact state rendered again at sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from agents.buffer import (ReplayBuffer, add, bytes_per_row, gather, init,  # noqa: F401
                           sample_distinct_rows, sample_uniform, uniform_rows)


@struct.dataclass
class Transition:
    """One step of all agents. obs, next_obs: [N, *obs_shape]; action: i32[N];
    reward: f32[N] environment reward; done: f32[] termination."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    done: jax.Array


def float_transition(num_agents: int, obs_shape: tuple[int, ...]) -> Transition:
    """One all-agents transition as the learners read it: float observations
    `[N, *obs_shape]`, int32 actions, float32 rewards and done."""
    obs = jnp.zeros((num_agents, *obs_shape), jnp.float32)
    return Transition(obs=obs, action=jnp.zeros((num_agents,), jnp.int32),
                      reward=jnp.zeros((num_agents,), jnp.float32), next_obs=obs,
                      done=jnp.zeros((), jnp.float32))


def example_transition(env, compact: bool = False) -> Transition:
    """One all-agents transition of `env`'s shapes and the dtypes a buffer stores.
    compact: observations as `env.compact(state)` (Cleanup: the u8 map and i8
    positions, rendered again at sampling) and the action and done as small integers."""
    if not compact:
        return float_transition(env.num_agents, tuple(env.observation_spec.shape[1:]))
    n = env.num_agents
    state, _ = env.reset(jax.random.PRNGKey(0))
    obs = jax.tree.map(jnp.zeros_like, env.compact(state))
    return Transition(obs=obs, action=jnp.zeros((n,), jnp.int8),
                      reward=jnp.zeros((n,), jnp.float32), next_obs=obs,
                      done=jnp.zeros((), jnp.uint8))


def render_rows(env, rows: Transition) -> Transition:
    """Rows sampled from a compact buffer with their observations rendered, action
    int32 and done float32, i.e. what the learners read."""
    render = jax.vmap(env.observe_compact)
    return rows.replace(obs=render(*rows.obs), next_obs=render(*rows.next_obs),
                        action=rows.action.astype(jnp.int32),
                        done=rows.done.astype(jnp.float32))


