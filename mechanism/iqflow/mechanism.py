"""IQ-Flow: offline IQL critics and a meta-learned incentive function (SPEC §3).

Per episode, after the episode's transitions enter the replay buffer:
  A. one IQL step of Q/V coop, env and ind on a batch of 64 (incentives recomputed
     with the current eta, held constant), then the targets' Polyak update;
  B. once the buffer holds `start_train` steps, 2 x 64 distinct transitions: K
     unrolled RMSprop steps of Q_ind (each from the critic optimiser's current
     statistics) on the first half, the masked meta-loss on the second, and one
     RMSprop step of eta through the unroll.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.networks import JointNet, joint_action_one_hot
from jaxsim.config import IQFlowConfig
from jaxsim.types import Trajectory
from mechanism import replay
from mechanism.iqflow.critics import CriticState, IQLCritic
from mechanism.iqflow.meta import meta_objective


@struct.dataclass
class IQFlowState:
    eta: dict  # incentive network parameters
    eta_opt: optax.OptState
    coop: CriticState
    env: CriticState
    ind: CriticState
    buffer: replay.ReplayBuffer


class IQFlow:
    """`env`, when given and able to `compact` its state (Cleanup), makes the replay
    buffer store compact states and render observations only for sampled rows."""

    def __init__(self, config: IQFlowConfig, obs_shape: tuple[int, ...], num_agents: int,
                 num_actions: int, capacity: int, env=None):
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.num_agents = num_agents
        self.num_actions = num_actions
        self.capacity = capacity
        self.env = env if env is not None and hasattr(env, "compact") else None
        self.eta_net = JointNet(hidden=tuple(config.incentive_hidden), out=num_agents,
                                conv_filters=config.conv_filters)

        def rmsprop(lr):
            return optax.rmsprop(lr, decay=config.rmsprop_decay, eps=config.rmsprop_eps)

        self.eta_optimizer = rmsprop(config.lr_incentive)
        common = dict(hidden=config.critic_hidden, num_agents=num_agents,
                      num_actions=num_actions, obs_shape=self.obs_shape,
                      expectile=config.expectile, gamma=config.gamma, polyak=config.polyak,
                      conv_filters=config.conv_filters, q_layout=config.q_layout)
        self.critic_coop = IQLCritic(v_outputs=1, optimizer=optax.adam(config.lr_coop), **common)
        # SPEC §6 row 2 concerns V_env and V_ind only; V_coop always reads the state.
        individual = dict(common, values_ignore_obs=config.values_ignore_obs)
        self.critic_env = IQLCritic(v_outputs=num_agents, optimizer=rmsprop(config.lr_env),
                                    **individual)
        self.critic_ind = IQLCritic(v_outputs=num_agents, optimizer=rmsprop(config.lr_ind),
                                    **individual)

    # --- incentives -------------------------------------------------------------------
    def incentives(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """r_inc for a batch: obs [B, N, *obs_shape], action i32[B, N] -> f32[B, N] in
        (0, incentive_max). Input: every observation and the joint action one-hot."""
        logits = self.eta_net.apply(eta, obs, joint_action_one_hot(action, self.num_actions))
        return self.config.incentive_max * jax.nn.sigmoid(logits)

    def incentive(self, state: IQFlowState, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.incentives(state.eta, obs[None], action[None])[0]

    # --- state ------------------------------------------------------------------------
    def init(self, key: jax.Array) -> IQFlowState:
        k_eta, k_coop, k_env, k_ind = jax.random.split(key, 4)
        if self.env is not None:
            stored = replay.example_transition(self.env, compact=True)
        else:
            stored = replay.float_transition(self.num_agents, self.obs_shape)
        obs = jnp.zeros((1, self.num_agents, *self.obs_shape), jnp.float32)
        action = jnp.zeros((1, self.num_agents * self.num_actions), jnp.float32)
        eta = self.eta_net.init(k_eta, obs, action)
        return IQFlowState(
            eta=eta, eta_opt=self.eta_optimizer.init(eta),
            coop=self.critic_coop.init(k_coop), env=self.critic_env.init(k_env),
            ind=self.critic_ind.init(k_ind), buffer=replay.init(stored, self.capacity),
        )

    def transitions(self, buffer: replay.ReplayBuffer, rows: jax.Array) -> replay.Transition:
        """Rows of the buffer as the critics read them (rendered if stored compact)."""
        data = replay.gather(buffer, rows)
        return data if self.env is None else replay.render_rows(self.env, data)

    # --- learning ---------------------------------------------------------------------
    def update_critics(self, state: IQFlowState, batch: replay.Transition):
        """Step A: one IQL step of all six critics."""
        r_inc = jax.lax.stop_gradient(self.incentives(state.eta, batch.obs, batch.action))
        team = jnp.broadcast_to(batch.reward.sum(-1, keepdims=True), batch.reward.shape)
        coop, m_coop = self.critic_coop.update(state.coop, batch, team)
        env, m_env = self.critic_env.update(state.env, batch, batch.reward)
        ind, m_ind = self.critic_ind.update(state.ind, batch, batch.reward + r_inc)
        metrics = {f"{name}/{k}": v for name, m in (("coop", m_coop), ("env", m_env),
                                                      ("ind", m_ind)) for k, v in m.items()}
        return state.replace(coop=coop, env=env, ind=ind), metrics

    def meta_gradient(self, state: IQFlowState, train: replay.Transition,
                      validation: replay.Transition):
        """Step B's loss, its terms and d loss / d eta through K unrolled steps."""
        cfg = self.config
        q_coop_val = self.critic_coop.q_values(state.coop.q, validation.obs, validation.action)
        q_env_val = self.critic_env.q_values(state.env.q, validation.obs, validation.action)
        objective = jax.value_and_grad(meta_objective, has_aux=True)
        (loss, terms), grad = objective(
            state.eta, c1=cfg.c1, c2=cfg.c2, critic_ind=self.critic_ind,
            q_ind_params=state.ind.q, q_coop_val=q_coop_val, q_env_val=q_env_val,
            validation=validation, incentive_fn=self.incentives, v_params=state.ind.v,
            opt_state=state.ind.q_opt, batch=train, steps=cfg.unroll_steps, remat=cfg.remat_unroll,
        )
        return loss, terms, grad

    def update_incentive(self, state: IQFlowState, key: jax.Array):
        """Step B, applied only once the buffer holds `start_train` transitions."""
        batch = self.config.batch_size
        rows = replay.sample_distinct_rows(key, state.buffer.size, 2 * batch)
        train = self.transitions(state.buffer, rows[:batch])
        validation = self.transitions(state.buffer, rows[batch:])
        loss, terms, grad = self.meta_gradient(state, train, validation)
        updates, eta_opt = self.eta_optimizer.update(grad, state.eta_opt, state.eta)
        eta = optax.apply_updates(state.eta, updates)
        ready = state.buffer.size >= self.config.start_train
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ready, n, o), new, old)
        state = state.replace(eta=keep(eta, state.eta), eta_opt=keep(eta_opt, state.eta_opt))
        metrics = {f"meta/{k}": v * ready for k, v in terms.items()}
        metrics["meta/loss"] = loss * ready
        metrics["meta/active"] = ready.astype(jnp.float32)
        return state, metrics

    def update(self, state: IQFlowState, traj: Trajectory, key: jax.Array):
        compact = self.env is not None
        items = replay.Transition(obs=traj.compact if compact else traj.obs,
                                  action=traj.action, reward=traj.reward,
                                  next_obs=traj.compact_next if compact else traj.next_obs,
                                  done=traj.done)
        state = state.replace(buffer=replay.add(state.buffer, items, traj.mask))
        key_a, key_b = jax.random.split(key)
        rows = replay.uniform_rows(state.buffer, key_a, self.config.batch_size)
        batch = self.transitions(state.buffer, rows)
        state, metrics_a = self.update_critics(state, batch)
        state, metrics_b = self.update_incentive(state, key_b)
        return state, {**metrics_a, **metrics_b}
