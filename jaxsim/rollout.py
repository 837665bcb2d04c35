"""One episode of every agent: a `lax.scan` over the environment's `max_steps`.

Episodes that end early keep scanning on a frozen state with `mask = 0`, so a vmapped
batch of episodes of different lengths runs as one program and never mixes episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jumanji.types import StepType

from agents.base import Trajectory
from agents.team import Team


def rollout(env, agents, mechanism, agent_params, mechanism_state, key: jax.Array) -> Trajectory:
    """Play one episode with the agents' stochastic policies and the mechanism's
    incentives. agents: the team (agents.team), or one learner for every agent;
    agent_params: the team's (stacked on a leading agent axis per group)."""
    reset_key, steps_key = jax.random.split(key)
    env_state, first = env.reset(reset_key)
    num_agents = env.num_agents
    team = agents if isinstance(agents, Team) else Team.uniform(agents, num_agents)

    def step(carry, step_key):
        env_state, obs, alive = carry
        action = team.act(agent_params, obs, jax.random.split(step_key, num_agents))
        incentive = mechanism.incentive(mechanism_state, obs, action)
        next_state, timestep = env.step(env_state, action)
        last = timestep.step_type == StepType.LAST
        live = alive.astype(jnp.float32)
        out = Trajectory(
            obs=obs,
            action=action,
            reward=timestep.reward * live,
            incentive=incentive * live,
            next_obs=timestep.observation,
            done=(last & (timestep.discount[0] == 0.0)).astype(jnp.float32) * live,
            mask=live,
            compact=env.compact(env_state),  # None unless the replay stores less (Cleanup)
            compact_next=env.compact(next_state),
        )
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(alive, n, o), new, old)
        carry = (keep(next_state, env_state), keep(timestep.observation, obs), alive & ~last)
        return carry, out

    carry = (env_state, first.observation, jnp.asarray(True))
    _, traj = jax.lax.scan(step, carry, jax.random.split(steps_key, env.max_steps))
    return traj
