"""The ID baseline: adaptive incentive design by an on-policy meta-gradient (SPEC §4).

Unlike IQ-Flow, ID reads the agents' parameters and assumes their learning rule (one
plain SGD step of the agent's own loss per episode). After episode k+1 it rebuilds
each agent's update on episode k differentiably, with reward r_env + r_inc(eta), from
the parameters that generated episode k, and scores the updated policies on episode
k+1 by the discounted team return. A second term charges the incentives paid in
episode k+1 (L1, discounted over time); each term has its own Adam.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.networks import JointNet, joint_action_one_hot
from agents.pg import discounted_reward_to_go
from jaxsim.config import IDConfig
from jaxsim.types import Trajectory, agent_view


@struct.dataclass
class IDState:
    """prev_traj and prev_params: the last episode and the agents' parameters that
    generated it (stacked over agents); has_prev: False before the first episode."""

    eta: dict
    meta_opt: optax.OptState
    cost_opt: optax.OptState
    prev_traj: Trajectory
    prev_params: dict
    has_prev: jax.Array


class IncentiveDesigner:
    reads_agents = True

    def __init__(self, config: IDConfig, env, agent):
        if agent is None or not hasattr(agent, "loss"):
            raise ValueError("the ID baseline needs an agent with a differentiable `loss` "
                             "and a plain SGD rule (PGAgent)")
        self.config = config
        self.env = env
        self.agent = agent
        self.num_agents = env.num_agents
        self.num_actions = env.num_actions
        self.obs_shape = tuple(env.observation_spec.shape[1:])
        self.eta_net = JointNet(hidden=tuple(config.incentive_hidden), out=env.num_agents,
                                conv_filters=config.conv_filters,
                                output_scale=config.output_scale)
        self.meta_optimizer = optax.adam(config.lr_meta)
        self.cost_optimizer = optax.adam(config.lr_cost)

    def incentives(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """obs [B, N, *obs_shape], action i32[B, N] -> f32[B, N] in [0, incentive_max);
        the same function in the rollout and inside the differentiated update."""
        logits = self.eta_net.apply(eta, obs, joint_action_one_hot(action, self.num_actions))
        return self.config.incentive_max * jnp.abs(jnp.tanh(logits))

    def incentive(self, state: IDState, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.incentives(state.eta, obs[None], action[None])[0]

    def init(self, key: jax.Array) -> IDState:
        eta_key, agent_key = jax.random.split(key)
        example_obs = jnp.zeros((1, self.num_agents, *self.obs_shape))
        example_action = jnp.zeros((1, self.num_agents), jnp.int32)
        eta = self.eta_net.init(eta_key, example_obs,
                                joint_action_one_hot(example_action, self.num_actions))
        agent_keys = jax.random.split(agent_key, self.num_agents)
        params = jax.vmap(self.agent.init)(agent_keys).params
        steps, n = self.env.max_steps, self.num_agents
        empty = Trajectory(
            obs=jnp.zeros((steps, n, *self.obs_shape)), action=jnp.zeros((steps, n), jnp.int32),
            reward=jnp.zeros((steps, n)), incentive=jnp.zeros((steps, n)),
            next_obs=jnp.zeros((steps, n, *self.obs_shape)), done=jnp.zeros((steps,)),
            mask=jnp.zeros((steps,)),
        )
        return IDState(eta=eta, meta_opt=self.meta_optimizer.init(eta),
                       cost_opt=self.cost_optimizer.init(eta), prev_traj=empty,
                       prev_params=jax.tree.map(jnp.zeros_like, params),
                       has_prev=jnp.asarray(False))

    def relearned_params(self, eta, prev_params, prev: Trajectory):
        """Each agent's SGD step on episode k with reward r_env + r_inc(eta)."""
        incentive = self.incentives(eta, prev.obs, prev.action) * prev.mask[:, None]
        lr = self.agent.config.lr

        def sgd_step(params, own):
            grads = jax.grad(lambda p: self.agent.loss(p, own)[0])(params)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads)

        return jax.vmap(sgd_step)(prev_params, agent_view(prev.replace(incentive=incentive)))

    def outer_loss(self, eta, state: IDState, traj: Trajectory) -> jax.Array:
        """-sum_i sum_t log pi(a_it | o_it; theta_i') G_t, G the discounted team
        return-to-go of episode k+1 and theta' the re-learned parameters."""
        params = self.relearned_params(eta, state.prev_params, state.prev_traj)
        team = discounted_reward_to_go(traj.reward.sum(-1), traj.mask, self.config.gamma)
        view = agent_view(traj)
        log_prob = jax.vmap(lambda p, o, a: self.agent.policy(p, o).log_prob(a))(
            params, view.obs, view.action)  # [N, T]
        return -jnp.sum(log_prob * (traj.mask * team)[None])

    def cost(self, eta, traj: Trajectory) -> jax.Array:
        """L1 of the incentives paid in the episode, discounted over time."""
        discount = self.config.gamma ** jnp.arange(traj.mask.shape[0])
        paid = jnp.abs(self.incentives(eta, traj.obs, traj.action)).sum(-1)
        return jnp.sum(discount * traj.mask * paid)

    def update(self, state: IDState, traj: Trajectory, key: jax.Array, *, agent_params):
        del key
        meta_loss, meta_grad = jax.value_and_grad(self.outer_loss)(state.eta, state, traj)
        cost, cost_grad = jax.value_and_grad(self.cost)(state.eta, traj)
        meta_grad = jax.tree.map(lambda g: g * state.has_prev, meta_grad)
        meta_updates, meta_opt = self.meta_optimizer.update(meta_grad, state.meta_opt)
        cost_updates, cost_opt = self.cost_optimizer.update(cost_grad, state.cost_opt)
        eta = optax.apply_updates(optax.apply_updates(state.eta, meta_updates), cost_updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(state.has_prev, n, o),
                                             new, old)
        new_state = IDState(eta=eta, meta_opt=keep(meta_opt, state.meta_opt), cost_opt=cost_opt,
                            prev_traj=traj, prev_params=agent_params,
                            has_prev=jnp.asarray(True))
        return new_state, {"id/meta_loss": meta_loss * state.has_prev, "id/cost": cost}
