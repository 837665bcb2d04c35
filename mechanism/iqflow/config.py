"""IQ-Flow's config (SPEC §3), its checks and its replay capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from envs_jax import checks
from mechanism.base import check_conv_layout


@dataclass(frozen=True)
class IQFlowConfig:
    """IQ-Flow (SPEC §3); defaults are the matrix-game column."""

    incentive_hidden: tuple[int, ...] = (16, 8)
    critic_hidden: tuple[int, ...] = (16, 8)
    lr_incentive: float = 3e-3
    lr_coop: float = 1e-3
    lr_env: float = 1e-3
    lr_ind: float = 1e-3
    c1: float = 0.0
    c2: float = 0.0
    gamma: float = 0.99
    expectile: float = 0.85
    unroll_steps: int = 20  # K
    batch_size: int = 64  # train batch; the validation batch has the same size (twice
    # that where meta_actions is "both": the same rows, as played and as redrawn)
    start_train: int = 200  # env steps in the buffer before step B runs
    polyak: float = 0.01
    incentive_max: float = 2.0  # r_inc = incentive_max * sigmoid(.) lies in (0, max)
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-8
    replay_capacity: int | None = None  # None: every transition of the run
    # 0: MLPs over the flat observations; > 0 (image observations, Cleanup): one
    # Conv(conv_filters, 3x3) over each agent's image before the first hidden layer,
    # the actions joining after it (SPEC §3).
    conv_filters: int = 0
    # Recompute each unrolled critic step's activations in the backward pass instead
    # of keeping all K of them (jax.checkpoint): the same gradient, a fraction of the
    # memory (Cleanup: most of a seed's temporary memory), some extra compute.
    remat_unroll: bool = False
    # SPEC §6 row 2 (MLP environments): the authors' V_env and V_ind apply their MLP to
    # the fixed vector (critic_hidden..., N) instead of the observations, so each is one
    # learned value per agent whatever the state; V_coop stays a network over them.
    values_ignore_obs: bool = False
    # SPEC §6 row 12 (image observations): "per_head", each Q head its own conv and
    # the others' actions joining after the first Dense (SPEC §3); "shared_conv", one
    # conv per Q critic over every agent's image, shared by its heads, each head's MLP
    # taking the flat conv features and the others' actions at its first layer.
    q_layout: Literal["per_head", "shared_conv"] = "per_head"

    # --- Beyond the paper (issue 16): incentives that do not die. The defaults are the
    # paper's; `robust` (VARIANTS) sets the ones measured to help.
    # r_inc = incentive_max * sigmoid(z) (SPEC §3), or incentive_max * |tanh(z)| (SPEC §6
    # row 13's head): zero incentive is then z = 0, the activation's steepest point,
    # instead of a flat tail where the meta-gradient vanishes.
    incentive_activation: Literal["sigmoid", "abs_tanh"] = "sigmoid"
    # Orthogonal scale of the incentive net's last layer (row 13: sqrt(2) / 1000, so
    # that z starts near 0).
    incentive_output_scale: float = math.sqrt(2.0)
    # A bound b on the pre-activation z. "penalty": step B's loss gains
    # logit_penalty * mean (max(|z| - b, 0))^2 over its train and validation rows, so z
    # is pulled back once past b; "clip": r_inc reads clip(z, -b, b) while the gradient
    # passes to z unchanged (straight through), so the slope never falls below the
    # activation's at b. None: no bound (the paper).
    logit_bound: float | None = None
    logit_bound_mode: Literal["penalty", "clip"] = "penalty"
    logit_penalty: float = 1.0
    # Step B's optimiser (SPEC §3: RMSprop, as the critics) and its eps (None: the
    # critics' rmsprop_eps). RMSprop divides by sqrt(nu + eps), Adam by sqrt(nu) + eps.
    incentive_optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    incentive_eps: float | None = None
    # What of the joint action agent i's incentive reads beside the observations:
    # "joint_action", every agent's (SPEC §3); "own_action", its own alone (the others'
    # one-hot slots zeroed for output i), so what it learns for one of the others'
    # actions holds for all, rarely seen ones included.
    incentive_input: Literal["joint_action", "own_action"] = "joint_action"
    # The others' actions step B's validation rows are scored at: "replay", as played
    # (SPEC §3); "uniform", each row's joint action redrawn uniformly (so agent i is
    # asked for a_coop against others' actions the agents rarely play); "both", every
    # row twice, as played and redrawn. The unroll's train rows stay as played; the
    # logit penalty and the diagnostics read the validation rows as scored.
    meta_actions: Literal["replay", "uniform", "both"] = "replay"
    # A margin m in Eq. 5's mask: a validation row counts while Q_ind(a_coop) leads
    # the other actions by less than m (0: while a_b != a_coop, the paper). The
    # diagnostics' `diag/dilemma` and the alarm keep a_b != a_coop.
    meta_margin: float = 0.0
    # The expectile of the team critic alone (V_coop; None: `expectile`, SPEC §3). Q_coop
    # names a_coop, so it is the one critic whose reading of rarely played joint actions
    # decides which action step B pushes the incentives towards: at 0.85 V_coop follows
    # what the replay's pairs did next, at a higher one the best of what they did.
    coop_expectile: float | None = None
    # The team critic's discount alone (None: `gamma`). 0 makes a_coop the myopic team
    # optimum given the others' actions, which no estimate of later states can turn.
    coop_gamma: float | None = None

    # Diagnostics, once per chunk on a fresh step-B draw (nothing the run learns from):
    # the incentive net's pre-activations, the activation's slope, the fraction of rows
    # where a_env == a_coop, step B's gradient split into its terms and its step.
    diagnostics: bool = True
    # An agent's incentive counts as stuck when, over the draw, its mean slope is below
    # `saturated_slope` of the activation's steepest, its spread over the rows below
    # `flat_incentive` of incentive_max (it pays every action alike: a bang-bang
    # incentive, 0 for some actions and the maximum for others, is saturated too, and
    # healthy), and step B still finds it in a dilemma on `stuck_dilemma` of the rows.
    saturated_slope: float = 1e-3
    flat_incentive: float = 5e-3
    stuck_dilemma: float = 0.05


def replay_capacity(config: IQFlowConfig, run, max_steps: int) -> int:
    """Transitions the buffer holds: `replay_capacity`, or every one of the run
    (`run.episodes` episodes of at most `max_steps`)."""
    if config.replay_capacity is not None:
        checks.positive_int("mechanism.replay_capacity", config.replay_capacity)
        return config.replay_capacity
    return run.episodes * max_steps


def check(mech: IQFlowConfig, env, run) -> None:
    """Raise ValueError on an IQ-Flow config that cannot work with `env` and `run`."""
    check_conv_layout(mech, env, run.env)
    checks.hidden_layers("mechanism.incentive_hidden", mech.incentive_hidden)
    checks.hidden_layers("mechanism.critic_hidden", mech.critic_hidden)
    for name in ("lr_incentive", "lr_coop", "lr_env", "lr_ind", "incentive_max"):
        checks.positive(f"mechanism.{name}", getattr(mech, name))
    for name in ("c1", "c2", "rmsprop_eps", "meta_margin"):
        checks.non_negative(f"mechanism.{name}", getattr(mech, name))
    checks.finite_in("mechanism.gamma", mech.gamma, 0, 1)
    checks.finite_in("mechanism.expectile", mech.expectile, 0, 1, low_open=True,
                     high_open=True)
    if mech.coop_expectile is not None:
        checks.finite_in("mechanism.coop_expectile", mech.coop_expectile, 0, 1,
                         low_open=True, high_open=True)
    if mech.coop_gamma is not None:
        checks.finite_in("mechanism.coop_gamma", mech.coop_gamma, 0, 1)
    checks.finite_in("mechanism.polyak", mech.polyak, 0, 1, low_open=True)
    checks.finite_in("mechanism.rmsprop_decay", mech.rmsprop_decay, 0, 1, high_open=True)
    checks.choice("mechanism.q_layout", mech.q_layout, ("per_head", "shared_conv"))
    checks.choice("mechanism.incentive_activation", mech.incentive_activation,
                  ("sigmoid", "abs_tanh"))
    checks.positive("mechanism.incentive_output_scale", mech.incentive_output_scale)
    checks.choice("mechanism.logit_bound_mode", mech.logit_bound_mode, ("penalty", "clip"))
    if mech.logit_bound is not None:
        checks.positive("mechanism.logit_bound", mech.logit_bound)
    checks.positive("mechanism.logit_penalty", mech.logit_penalty)
    checks.choice("mechanism.incentive_optimizer", mech.incentive_optimizer,
                  ("rmsprop", "adam"))
    checks.choice("mechanism.incentive_input", mech.incentive_input,
                  ("joint_action", "own_action"))
    checks.choice("mechanism.meta_actions", mech.meta_actions, ("replay", "uniform", "both"))
    if mech.incentive_eps is not None:
        checks.non_negative("mechanism.incentive_eps", mech.incentive_eps)
    checks.require(isinstance(mech.diagnostics, bool),
                   f"mechanism.diagnostics must be True or False, got {mech.diagnostics!r}")
    checks.finite_in("mechanism.saturated_slope", mech.saturated_slope, 0, 1)
    checks.finite_in("mechanism.flat_incentive", mech.flat_incentive, 0, 1)
    checks.finite_in("mechanism.stuck_dilemma", mech.stuck_dilemma, 0, 1)
    checks.require(mech.q_layout == "per_head" or mech.conv_filters > 0,
                   "mechanism.q_layout 'shared_conv' shares a conv over image observations; "
                   "this config has no conv (conv_filters 0): use 'per_head'")
    checks.require(not mech.values_ignore_obs or mech.conv_filters == 0,
                   "mechanism.values_ignore_obs is the authors' MLP critics' V (SPEC §6 row "
                   "2); their conv critics (Cleanup) read the observations: leave it False")
    checks.positive_int("mechanism.unroll_steps", mech.unroll_steps)
    checks.positive_int("mechanism.batch_size", mech.batch_size)
    checks.positive_int("mechanism.start_train", mech.start_train)
    capacity = replay_capacity(mech, run, env.max_steps)
    checks.require(mech.start_train >= 2 * mech.batch_size,
                   f"mechanism.start_train ({mech.start_train}) must be >= 2 * batch_size "
                   f"({2 * mech.batch_size}): step B draws that many distinct transitions")
    checks.require(capacity >= mech.start_train,
                   f"the replay buffer holds {capacity} transitions, fewer than start_train "
                   f"({mech.start_train}): step B would never run; raise episodes or "
                   "replay_capacity")
