"""Step B of IQ-Flow: the meta-gradient of the incentive parameters eta through K
unrolled critic updates (paper Eqs. 4-9, SPEC §3)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from mechanism.iqflow.critics import IQLCritic
from mechanism.replay import Transition


def meta_loss_terms(q_ind: jax.Array, q_coop: jax.Array, q_env: jax.Array,
                    margin: float | jax.Array = 0.0) -> dict:
    """The meta-objective's terms on a validation batch, each `f32[B, N, A]` in.

    a_coop = argmax Q_coop, a_b = argmax Q_ind (unrolled), a_env = argmax Q_env.
    meta  = -mean_{b,i} 1(a_b != a_coop) log softmax(Q_ind)[a_coop]        (Eq. 5)
    cost1 = mean_{b,i,a} 1(a_env == a_coop) |Q_ind(a)|                      (Eq. 6)
    cost2 = mean_{b,i,a} 1(a_env != a_coop) |Q_ind(a)|                      (Eq. 7)
    Only `q_ind` carries gradient; the argmaxes are labels and masks.
    `margin` m (beyond the paper; 0, the plain number, is Eq. 5 as written): a row
    counts in the meta term while Q_ind(a_coop) - max_{a != a_coop} Q_ind(a) < m, so
    a_coop is pushed on until it leads by m, not only until it leads.
    """
    a_coop = jnp.argmax(q_coop, axis=-1)
    a_env = jnp.argmax(q_env, axis=-1)
    a_b = jnp.argmax(q_ind, axis=-1)
    if isinstance(margin, (int, float)) and margin == 0:
        dilemma = (a_b != a_coop).astype(q_ind.dtype)  # [B, N]
    else:  # a traced margin (a sweep): at 0 Eq. 5's own rows, ties included
        q = jax.lax.stop_gradient(q_ind)
        coop = jax.nn.one_hot(a_coop, q.shape[-1], dtype=bool)
        lead = (jnp.take_along_axis(q, a_coop[..., None], axis=-1)[..., 0]
                - jnp.max(jnp.where(coop, -jnp.inf, q), axis=-1))
        dilemma = jnp.where(margin > 0, lead < margin, a_b != a_coop).astype(q_ind.dtype)
    log_p_coop = jnp.take_along_axis(
        jax.nn.log_softmax(q_ind, axis=-1), a_coop[..., None], axis=-1
    )[..., 0]
    agree = (a_env == a_coop).astype(q_ind.dtype)[..., None]  # [B, N, 1]
    abs_q = jnp.abs(q_ind)
    return {
        "meta": -jnp.mean(dilemma * log_p_coop),
        "cost1": jnp.mean(agree * abs_q),
        "cost2": jnp.mean((1.0 - agree) * abs_q),
        "dilemma_fraction": jnp.mean(dilemma),
        "env_coop_agree_fraction": jnp.mean(agree),
    }


def unroll_q_ind(
    q_params,
    eta,
    *,
    critic: IQLCritic,
    incentive_fn: Callable,
    v_params,
    opt_state,
    batch: Transition,
    steps: int,
    remat: bool = False,
):
    """K optimiser steps of Q_ind on the train batch, with reward r_env + r_inc(eta).

    Every step applies the critic's optimiser from its *current* state `opt_state`
    (for RMSprop: nu' = decay * nu + (1 - decay) g^2, step g / sqrt(nu' + eps)); the
    state is not advanced from one unrolled step to the next and is discarded after.
    V_ind is held fixed. Differentiable in `eta`, second order included (Eq. 4).
    `remat` recomputes each step's activations in the backward pass (less memory).
    """
    reward = batch.reward + incentive_fn(eta, batch.obs, batch.action)
    target = critic.td_target(v_params, batch, reward)

    def step(q, _):
        grad = jax.grad(critic.q_loss)(q, batch, target)
        updates, _ = critic.optimizer.update(grad, opt_state, q)
        return optax.apply_updates(q, updates), None

    if remat:
        step = jax.checkpoint(step)
    q_final, _ = jax.lax.scan(step, q_params, None, length=steps)
    return q_final


def meta_objective(
    eta,
    *,
    c1: float,
    c2: float,
    critic_ind: IQLCritic,
    q_ind_params,
    q_coop_val: jax.Array,
    q_env_val: jax.Array,
    validation: Transition,
    keep_q: bool = False,
    margin: float | jax.Array = 0.0,
    **unroll_kwargs,
) -> tuple[jax.Array, dict]:
    """L = meta + c1 cost1 + c2 cost2 on the validation batch, through the unroll (Eq. 8).
    keep_q: the terms also hold the validation Q values they were read from ("q_ind",
    unrolled, "q_coop", "q_env"), for diagnostics. margin: as in `meta_loss_terms`."""
    q_unrolled = unroll_q_ind(q_ind_params, eta, critic=critic_ind, **unroll_kwargs)
    q_ind_val = critic_ind.q_values(q_unrolled, validation.obs, validation.action)
    terms = meta_loss_terms(q_ind_val, q_coop_val, q_env_val, margin)
    loss = terms["meta"] + c1 * terms["cost1"] + c2 * terms["cost2"]
    if keep_q:
        terms = {**terms, "q_ind": q_ind_val, "q_coop": q_coop_val, "q_env": q_env_val}
    return loss, terms
