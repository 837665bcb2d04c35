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

import functools

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.base import Trajectory
from agents.networks import JointNet, joint_action_one_hot
from mechanism import replay
from mechanism.base import Mechanism
from mechanism.iqflow.config import IQFlowConfig, check, replay_capacity
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


class IQFlow(Mechanism):
    """`env`, when given and one whose replay stores a compact form of its states
    (`MultiAgentEnv.compact`: Cleanup), makes the buffer store those and render
    observations only for sampled rows."""

    check_config = staticmethod(check)

    @classmethod
    def from_config(cls, config: IQFlowConfig, env, run) -> "IQFlow":
        """Its buffer holds `replay_capacity` transitions, or every one of `run`."""
        return cls(config, env.observation_spec.shape[1:], env.num_agents, env.num_actions,
                   replay_capacity(config, run, env.max_steps), env)

    def __init__(self, config: IQFlowConfig, obs_shape: tuple[int, ...], num_agents: int,
                 num_actions: int, capacity: int, env=None):
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.num_agents = num_agents
        self.num_actions = num_actions
        self.capacity = capacity
        self.env = env if env is not None and env.stores_compact else None
        self.eta_net = JointNet(hidden=tuple(config.incentive_hidden), out=num_agents,
                                conv_filters=config.conv_filters,
                                output_scale=config.incentive_output_scale)

        def rmsprop(lr, eps=config.rmsprop_eps):
            return optax.rmsprop(lr, decay=config.rmsprop_decay, eps=eps)

        eps = config.rmsprop_eps if config.incentive_eps is None else config.incentive_eps
        if config.incentive_optimizer == "adam":
            self.eta_optimizer = optax.adam(config.lr_incentive, eps=eps)
        else:
            self.eta_optimizer = rmsprop(config.lr_incentive, eps)
        common = dict(hidden=config.critic_hidden, num_agents=num_agents,
                      num_actions=num_actions, obs_shape=self.obs_shape,
                      expectile=config.expectile, gamma=config.gamma, polyak=config.polyak,
                      conv_filters=config.conv_filters, q_layout=config.q_layout)
        coop = dict(common)  # the team critic's own expectile and discount, where set
        if config.coop_expectile is not None:
            coop.update(expectile=config.coop_expectile)
        if config.coop_gamma is not None:
            coop.update(gamma=config.coop_gamma)
        self.critic_coop = IQLCritic(v_outputs=1, optimizer=optax.adam(config.lr_coop), **coop)
        # SPEC §6 row 2 concerns V_env and V_ind only; V_coop always reads the state.
        individual = dict(common, values_ignore_obs=config.values_ignore_obs)
        self.critic_env = IQLCritic(v_outputs=num_agents, optimizer=rmsprop(config.lr_env),
                                    **individual)
        self.critic_ind = IQLCritic(v_outputs=num_agents, optimizer=rmsprop(config.lr_ind),
                                    **individual)

    # --- incentives -------------------------------------------------------------------
    def logits(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The incentive net's pre-activation z: obs [B, N, *obs_shape], action i32[B, N]
        -> f32[B, N]. Input: every observation and the joint action one-hot, or for
        output i (incentive_input "own_action") agent i's one-hot alone."""
        joint = joint_action_one_hot(action, self.num_actions)
        if self.config.incentive_input == "joint_action":
            return self.eta_net.apply(eta, obs, joint)
        blocks = jnp.repeat(jnp.eye(self.num_agents, dtype=joint.dtype), self.num_actions, 1)

        def output_of(i):  # output i of the net that sees agent i's action only
            return self.eta_net.apply(eta, obs, joint * blocks[i])[:, i]

        return jax.vmap(output_of, out_axes=1)(jnp.arange(self.num_agents))

    def activate(self, z: jax.Array) -> jax.Array:
        """r_inc from z: incentive_max * sigmoid(z) (SPEC §3) or * |tanh(z)| (row 13),
        of z clipped to the logit bound (straight through) where the config says so."""
        cfg = self.config
        if cfg.logit_bound is not None and cfg.logit_bound_mode == "clip":
            z = z + jax.lax.stop_gradient(jnp.clip(z, -cfg.logit_bound, cfg.logit_bound) - z)
        if cfg.incentive_activation == "abs_tanh":
            return cfg.incentive_max * jnp.abs(jnp.tanh(z))
        return cfg.incentive_max * jax.nn.sigmoid(z)

    def slope(self, z: jax.Array) -> tuple[jax.Array, float]:
        """|d r_inc / d z| at z (as `activate` differentiates it) and its largest value."""
        cfg = self.config
        if cfg.logit_bound is not None and cfg.logit_bound_mode == "clip":
            z = jnp.clip(z, -cfg.logit_bound, cfg.logit_bound)
        if cfg.incentive_activation == "abs_tanh":
            return cfg.incentive_max * (1 - jnp.tanh(z) ** 2), cfg.incentive_max
        paid = jax.nn.sigmoid(z)
        return cfg.incentive_max * paid * (1 - paid), cfg.incentive_max / 4

    def incentives(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """r_inc for a batch: obs [B, N, *obs_shape], action i32[B, N] -> f32[B, N] in
        [0, incentive_max)."""
        return self.activate(self.logits(eta, obs, action))

    def logit_penalty(self, eta, *batches: replay.Transition) -> jax.Array:
        """mean (max(|z| - logit_bound, 0))^2 over each of `batches`' rows, averaged over
        the batches."""
        excess = [jax.nn.relu(jnp.abs(self.logits(eta, b.obs, b.action)) - self.config.logit_bound)
                  for b in batches]
        return sum(jnp.mean(e ** 2) for e in excess) / len(excess)

    @property
    def penalised(self) -> bool:
        return self.config.logit_bound is not None and self.config.logit_bound_mode == "penalty"

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

    def step_b_rows(self, state: IQFlowState, key: jax.Array):
        """Step B's draw: 2 x batch_size distinct rows of the buffer, the first half the
        unroll's train rows, the second the validation rows, scored at the joint actions
        `meta_actions` names (as played; redrawn uniformly; or both, 2 x batch_size)."""
        batch, where = self.config.batch_size, self.config.meta_actions
        if where != "replay":  # a key of its own; "replay" draws exactly as before
            key, key_actions = jax.random.split(key)
        rows = replay.sample_distinct_rows(key, state.buffer.size, 2 * batch)
        train = self.transitions(state.buffer, rows[:batch])
        validation = self.transitions(state.buffer, rows[batch:])
        if where == "replay":
            return train, validation
        drawn = validation.replace(action=jax.random.randint(
            key_actions, validation.action.shape, 0, self.num_actions,
            validation.action.dtype))
        if where == "uniform":
            return train, drawn
        return train, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), validation, drawn)

    def step_b_objective(self, state: IQFlowState, train: replay.Transition,
                         validation: replay.Transition, keep_q: bool = False):
        """`eta -> (loss, terms)` of step B on these batches: Eq. 8 through K unrolled
        steps (`meta_objective`, keep_q as there), plus the logit penalty where set."""
        cfg = self.config
        q_coop_val = self.critic_coop.q_values(state.coop.q, validation.obs, validation.action)
        q_env_val = self.critic_env.q_values(state.env.q, validation.obs, validation.action)
        plain = functools.partial(
            meta_objective, c1=cfg.c1, c2=cfg.c2, critic_ind=self.critic_ind,
            q_ind_params=state.ind.q, q_coop_val=q_coop_val, q_env_val=q_env_val,
            validation=validation, keep_q=keep_q, margin=cfg.meta_margin,
            incentive_fn=self.incentives,
            v_params=state.ind.v, opt_state=state.ind.q_opt, batch=train,
            steps=cfg.unroll_steps, remat=cfg.remat_unroll)
        if not self.penalised:
            return plain

        def objective(eta):  # the logit bound's penalty joins step B's loss
            loss, terms = plain(eta)
            penalty = self.logit_penalty(eta, train, validation)
            return loss + cfg.logit_penalty * penalty, {**terms, "logit_penalty": penalty}

        return objective

    def meta_gradient(self, state: IQFlowState, train: replay.Transition,
                      validation: replay.Transition):
        """Step B's loss, its terms and d loss / d eta through K unrolled steps."""
        objective = self.step_b_objective(state, train, validation)
        (loss, terms), grad = jax.value_and_grad(objective, has_aux=True)(state.eta)
        return loss, terms, grad

    # --- diagnostics (issue 16) -------------------------------------------------------
    def diagnostics(self, state: IQFlowState, key: jax.Array) -> dict:
        """What step B sees and does, on one fresh draw of its rows (`step_b_rows`), as
        training draws them (nothing here feeds back into the run). Per agent `[N]`:
        the incentive net's pre-activation z on the validation rows (mean, spread), the activation's
        mean slope |d r_inc / d z|, the incentive paid (mean, spread), the fraction of
        rows where a_env == a_coop and where the unrolled Q_ind is in a dilemma
        (a_b != a_coop), and `alarm/incentive_saturated`: step B active, the slope
        below `saturated_slope` of the steepest, the incentive flat (spread below
        `flat_incentive` of its maximum: every action paid alike) and the dilemma on
        `stuck_dilemma` of the rows or more.
        Scalars: the norm of each term's weighted share of d loss / d eta (the meta term
        of Eq. 5, c1 cost1, c2 cost2, and the logit penalty where set), of their sum,
        of the optimiser's step from it, and the fraction of eta's entries whose
        second-moment estimate sits below the optimiser's eps floor."""
        cfg = self.config
        if not cfg.diagnostics:
            return {}
        train, validation = self.step_b_rows(state, key)
        out, terms = self.gradient_diagnostics(state, train, validation)
        out.update(self.incentive_diagnostics(state, validation, terms))
        return out

    def gradient_diagnostics(self, state: IQFlowState, train: replay.Transition,
                             validation: replay.Transition) -> tuple[dict, dict]:
        """`diagnostics`' scalars, and step B's terms (with its Q values) on the draw."""
        cfg = self.config
        names, weights = ["meta", "cost1", "cost2"], [1.0, cfg.c1, cfg.c2]
        if self.penalised:
            names, weights = names + ["logit_penalty"], weights + [cfg.logit_penalty]
        objective = self.step_b_objective(state, train, validation, keep_q=True)

        def terms_of(eta):  # step B's terms, each to be differentiated alone
            terms = objective(eta)[1]
            return jnp.stack([terms[name] for name in names]), terms

        _, pullback, terms = jax.vjp(terms_of, state.eta, has_aux=True)
        # One backward pass per term, in sequence (lax.map): the memory of one.
        shares = jax.lax.map(lambda w: pullback(w)[0],
                              jnp.diag(jnp.stack([jnp.asarray(w, jnp.float32) for w in weights])))
        norm = lambda tree: jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))  # noqa: E731
        total = jax.tree.map(lambda g: g.sum(0), shares)
        step, _ = self.eta_optimizer.update(total, state.eta_opt, state.eta)
        out = {f"diag/grad_{name}": norm(jax.tree.map(lambda g, i=i: g[i], shares))
               for i, name in enumerate(names)}
        out["diag/grad_total"] = norm(total)
        out["diag/step_norm"] = norm(step)
        nu = jax.tree.leaves(optax.tree_utils.tree_get(state.eta_opt, "nu"))
        eps = cfg.rmsprop_eps if cfg.incentive_eps is None else cfg.incentive_eps
        floor = [(n < eps) if cfg.incentive_optimizer == "rmsprop" else (jnp.sqrt(n) < eps)
                 for n in nu]
        out["diag/eps_floor_fraction"] = (sum(f.sum() for f in floor)
                                          / sum(f.size for f in floor)).astype(jnp.float32)
        return out, terms

    def incentive_diagnostics(self, state: IQFlowState, validation: replay.Transition,
                              terms: dict) -> dict:
        """`diagnostics`' per-agent figures and its alarm, from the validation rows."""
        cfg = self.config
        z = self.logits(state.eta, validation.obs, validation.action)  # [B, N]
        slope, steepest = self.slope(z)
        paid = self.activate(z)
        a_coop = jnp.argmax(terms["q_coop"], -1)
        agree = (jnp.argmax(terms["q_env"], -1) == a_coop).mean(0)
        dilemma = (jnp.argmax(terms["q_ind"], -1) != a_coop).mean(0)
        ready = state.buffer.size >= cfg.start_train
        saturated = ((slope.mean(0) < cfg.saturated_slope * steepest)
                     & (paid.std(0) < cfg.flat_incentive * cfg.incentive_max)
                     & (dilemma >= cfg.stuck_dilemma) & ready)
        return {
            "diag/logit_mean": z.mean(0), "diag/logit_std": z.std(0),
            "diag/slope": slope.mean(0), "diag/incentive": paid.mean(0),
            "diag/incentive_std": paid.std(0),
            "diag/env_coop_agree": agree.astype(jnp.float32),
            "diag/dilemma": dilemma.astype(jnp.float32),
            "alarm/incentive_saturated": saturated.astype(jnp.float32),
        }

    def update_incentive(self, state: IQFlowState, key: jax.Array):
        """Step B, applied only once the buffer holds `start_train` transitions."""
        train, validation = self.step_b_rows(state, key)
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
