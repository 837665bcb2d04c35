"""Checks every environment of the suite must pass (its base API and specs)."""

import jax
import jax.numpy as jnp


def validate_timestep(env, ts) -> None:
    env.observation_spec.validate(ts.observation)
    env.reward_spec.validate(ts.reward)
    env.discount_spec.validate(ts.discount)


def check_specs_under_jit_and_vmap(env, num_envs: int = 4, seed: int = 0) -> None:
    """Play `num_envs` episodes of uniformly random joint actions, `max_steps` long,
    with reset and step jitted and vmapped; every timestep, taken apart on the host,
    must conform to the specs (shapes, dtypes and bounds), and so must the actions."""
    action_key, reset_key = jax.random.split(jax.random.PRNGKey(seed))
    actions = jax.random.randint(action_key, (num_envs, env.max_steps, env.num_agents), 0,
                                 env.num_actions).astype(jnp.int32)
    env.action_spec.validate(actions[0, 0])

    @jax.jit
    def play(key, acts):
        state, first = env.reset(key)
        return first, jax.lax.scan(lambda s, a: env.step(s, a), state, acts)[1]

    firsts, steps = jax.vmap(play)(jax.random.split(reset_key, num_envs), actions)
    for i in range(num_envs):
        validate_timestep(env, jax.tree.map(lambda x, i=i: x[i], firsts))
        for t in range(env.max_steps):
            validate_timestep(env, jax.tree.map(lambda x, i=i, t=t: x[i, t], steps))
