"""The data that flows between the parts of one episode step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents.base import AgentTrajectory


@struct.dataclass
class Trajectory:
    """One episode of all agents, time-major, padded to the env's `max_steps`.

    obs, next_obs: f32[T, N, *obs_shape]; action: i32[T, N];
    reward: f32[T, N] environment reward; incentive: f32[T, N] r_inc given at rollout;
    done: f32[T] 1 where the step ended the episode by termination;
    mask: f32[T] 1 on steps that happened, 0 on the padding after an early end;
    compact, compact_next: for environments with `compact(state)` (Cleanup), what a
    replay buffer stores instead of obs / next_obs (`env.render(*compact)` gives them
    back); None for the others.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    incentive: jax.Array
    next_obs: jax.Array
    done: jax.Array
    mask: jax.Array
    compact: Any = None
    compact_next: Any = None


def agent_view(traj: Trajectory, shared_reward: bool = False) -> AgentTrajectory:
    """Split an episode into each agent's own data, agent axis first. Agents learn
    from r_env + r_inc and see nothing of the others; with `shared_reward` every agent
    learns from the sum of all agents' environment rewards (the paper's upper bound)."""
    num_agents = traj.action.shape[1]
    per_agent = lambda x: jnp.broadcast_to(x, (num_agents,) + x.shape)
    if shared_reward:
        reward = per_agent(traj.reward.sum(axis=1))
    else:
        reward = (traj.reward + traj.incentive).T
    return AgentTrajectory(
        obs=jnp.moveaxis(traj.obs, 1, 0),
        action=traj.action.T,
        reward=reward,
        mask=per_agent(traj.mask),
        next_obs=jnp.moveaxis(traj.next_obs, 1, 0),
        done=per_agent(traj.done),
    )
