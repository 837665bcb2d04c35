"""The data that flows between the parts of one episode step."""

from __future__ import annotations

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
    mask: f32[T] 1 on steps that happened, 0 on the padding after an early end.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    incentive: jax.Array
    next_obs: jax.Array
    done: jax.Array
    mask: jax.Array


def agent_view(traj: Trajectory) -> AgentTrajectory:
    """Split an episode into each agent's own data, agent axis first. Agents learn
    from r_env + r_inc and see nothing of the others."""
    num_agents = traj.action.shape[1]
    return AgentTrajectory(
        obs=jnp.moveaxis(traj.obs, 1, 0),
        action=traj.action.T,
        reward=(traj.reward + traj.incentive).T,
        mask=jnp.broadcast_to(traj.mask, (num_agents,) + traj.mask.shape),
    )
