"""Typed, frozen configuration of an experiment, with the SPEC's presets.

`validate(config)` checks everything that can be checked without compiling, so a bad
config fails in milliseconds with a message that says what to change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

import jax


@dataclass(frozen=True)
class PGConfig:
    """REINFORCE agents (SPEC §2); defaults are the matrix-game column."""

    hidden: tuple[int, ...] = (16, 8)
    lr: float = 1e-3
    entropy_coef: float = 0.05
    gamma: float = 0.99
    return_mode: Literal["reward_to_go", "discounted_reward"] = "reward_to_go"
    # The agents' optimiser (SPEC §6 row 3: the authors ran ID's ER(5,2) agents with
    # Adam); ID's model of their step stays one plain SGD step at `lr` either way.
    optimizer: Literal["sgd", "adam"] = "sgd"
    # Weight initialisation: orthogonal(sqrt 2) (SPEC §2) or Glorot-uniform, the
    # TensorFlow default of the ID authors' code (SPEC §7).
    init: Literal["orthogonal", "glorot"] = "orthogonal"


@dataclass(frozen=True)
class ACConfig:
    """Actor-critic agents for image observations (SPEC §2, Cleanup column): actor and
    critic each Conv(conv_filters, 3x3, SAME) + ReLU -> hidden -> head; TD(0) critic
    toward r + gamma (1 - d) V_target(o'), mean squared, with a Polyak target; the actor
    follows the advantage of the just-updated critic, loss summed over steps."""

    conv_filters: int = 6
    hidden: tuple[int, ...] = (64, 64)
    lr_actor: float = 1.959e-4
    lr_critic: float = 7.445e-5
    entropy_coef: float = 0.0814
    gamma: float = 0.99
    polyak: float = 0.01  # target <- (1 - polyak) target + polyak critic


# The independent-AC baseline's own learning rates and entropy (SPEC §2).
INDEPENDENT_AC = ACConfig(lr_actor=6.73e-4, lr_critic=5.54e-4, entropy_coef=0.1)


@dataclass(frozen=True)
class NoMechanismConfig:
    """No incentives: agents learn from the environment reward alone."""


@dataclass(frozen=True)
class SharedRewardConfig:
    """No incentives, and every agent learns from the sum of all agents' environment
    rewards: the paper's upper bound on Cleanup (SPEC §2)."""


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
    batch_size: int = 64  # train batch; the validation batch has the same size
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


@dataclass(frozen=True)
class IDConfig:
    """The ID baseline (SPEC §4): an on-policy meta-gradient through each agent's own
    last SGD step. Defaults are the Escape Room values."""

    incentive_hidden: tuple[int, ...] = (64, 32)
    lr_meta: float = 7.93e-4  # Adam on the outer (team-return) loss
    lr_cost: float = 6.03e-5  # a separate Adam on the incentive cost
    gamma: float = 0.99
    incentive_max: float = 2.0  # r_inc = incentive_max * |tanh(.)|
    output_scale: float = 0.01  # orthogonal scale of the last layer: starts near zero
    conv_filters: int = 0  # as IQFlowConfig.conv_filters
    cost_weight: float = 0.0  # the cost's weight inside the meta loss (Cleanup: 1e-4)
    # What weights log pi in the outer loss: "return", the discounted team return-to-go
    # (ER), or "td_error", a centralised critic's TD error on the team reward (Cleanup),
    # the critic V(all observations) learning by TD(0) with Adam at lr_critic.
    # "per_step" (SPEC §6 row 4): each step's log pi weighted by gamma^t R_team,t,
    # that step's team reward alone, as the IQ-Flow authors' ID on ER.
    outer_weight: Literal["return", "td_error", "per_step"] = "return"
    critic_hidden: tuple[int, ...] = (64, 64)
    lr_critic: float = 2.4e-5
    # Which episode the cost charges (SPEC §6 row 5): "new", episode k+1 that the
    # outer loss scores (SPEC §4), or "rebuilt", episode k of the rebuilt inner step.
    cost_episode: Literal["new", "rebuilt"] = "new"
    # "agent": one incentive per agent (SPEC §4); "action" (SPEC §7): one per action,
    # shared by all agents, agent i receiving output[a_i], and the cost charged on
    # every output of every step, before the incentive_max scale, as the ID authors'.
    output_type: Literal["agent", "action"] = "agent"
    activation: Literal["abs_tanh", "sigmoid"] = "abs_tanh"  # r = max * act(.)
    init: Literal["orthogonal", "glorot"] = "orthogonal"  # glorot: no output bias (SPEC §7)
    # What the incentive net sees beside the joint action: "observations", every
    # agent's (SPEC §4), or "state", the environment's central state (SPEC §7: on ER
    # the one-hot position of every agent in id order).
    designer_input: Literal["observations", "state"] = "observations"
    # SPEC §6 row 8 (ID on Cleanup): None, the team critic bootstraps from itself;
    # a number, from a Polyak target moved by this much per step.
    critic_polyak: float | None = None
    critic_conv_filters: int | None = None  # None: conv_filters (row 8: 2 x 6)
    # The critic inside the rebuilt actor step (actor-critic agents): "before", that of
    # the agent state that played episode k (SPEC §4); "after", the agent's critic once
    # updated on episode k, the one its real actor step used (SPEC §6 row 8).
    inner_critic: Literal["before", "after"] = "before"


MechanismConfig = Union[NoMechanismConfig, SharedRewardConfig, IQFlowConfig, IDConfig]


RECIPES = ("paper", "authors", "id_authors")

MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16")


def matmul_precision_scope(precision: str):
    """The context under which a config's programs are traced: JAX's default
    precision for float32 matmuls, or the one the config names."""
    if precision == "default":
        return contextlib.nullcontext()
    return jax.default_matmul_precision(precision)


@dataclass(frozen=True)
class TrainConfig:
    """One experiment: environment, learners, mechanism and the run's length."""

    env: str = "ipd"
    env_params: Mapping[str, Any] | tuple = ()  # stored as sorted (name, value) pairs
    agent: PGConfig | ACConfig = field(default_factory=PGConfig)
    mechanism: MechanismConfig = field(default_factory=IQFlowConfig)
    episodes: int = 3000
    chunk_episodes: int = 30  # episodes per compiled chunk; the host acts in between
    eval_period: int = 300  # episodes between evaluations (a multiple of chunk_episodes);
    # the run's last episode is always evaluated too
    eval_episodes: int = 10
    num_seeds: int = 1
    seed: int = 0
    first_seed: int = 0  # this run trains seeds first_seed .. first_seed + num_seeds - 1
    # Re-initialise the agents every this many episodes (a multiple of chunk_episodes)
    # while the mechanism keeps learning; 0: never.
    agent_reset_period: int = 0
    # Keep the mechanism as it is (no update, no replay): a pretrained incentive
    # function paying fresh agents (Fig. 10; see jaxsim.checkpoint.load_mechanism).
    freeze_mechanism: bool = False
    # float32 matmuls: "default" is JAX's (full f32 on CPU, TF32 on recent NVIDIA GPUs,
    # bf16 passes on TPU); "float32" forces full precision everywhere.
    matmul_precision: str = "default"
    # Whose runs the presets reproduce (SPEC §6): "paper", the method as the text says
    # (§§1-5); "authors", every §6 row of the authors' released code that concerns the
    # experiment; "id_authors", the ID authors' own Escape Room recipe (§7). A label
    # the presets set with the rows; it keeps checkpoints of different recipes apart.
    recipe: str = "paper"
    # Beyond the paper (issue 16): "none", or a named set of changes to IQ-Flow
    # (VARIANTS, `with_variant`); a label like `recipe`, set with the changes.
    variant: str = "none"

    def __post_init__(self):
        # Pairs rather than a dict keep the config hashable (usable as a cache key).
        if isinstance(self.env_params, Mapping):
            object.__setattr__(self, "env_params", tuple(sorted(self.env_params.items())))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive_int(name: str, value) -> None:
    _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")


def _finite_in(name: str, value, low: float, high: float, low_open=False, high_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    _require(ok, f"{name} must be a finite number in {interval}, got {value!r}")


def _choice(name: str, value, valid: tuple) -> None:
    _require(value in valid, f"{name} must be one of {valid}, got {value!r}")


def _check_hidden(name: str, hidden) -> None:
    _require(
        isinstance(hidden, tuple) and all(_is_int(h) and h >= 1 for h in hidden),
        f"{name} must be a tuple of positive layer widths, got {hidden!r}",
    )


def validate(config: TrainConfig) -> None:
    """Raise ValueError on anything that cannot work, before any compilation."""
    import envs_jax

    env = envs_jax.make(config.env, **dict(config.env_params))
    _positive_int("episodes", config.episodes)
    _positive_int("chunk_episodes", config.chunk_episodes)
    _positive_int("eval_period", config.eval_period)
    _positive_int("eval_episodes", config.eval_episodes)
    _positive_int("num_seeds", config.num_seeds)
    _require(_is_int(config.seed) and config.seed >= 0,
             f"seed must be an integer >= 0, got {config.seed!r}")
    _require(_is_int(config.first_seed) and config.first_seed >= 0,
             f"first_seed must be an integer >= 0, got {config.first_seed!r}")
    _require(config.recipe in RECIPES,
             f"recipe must be one of {RECIPES}, got {config.recipe!r}")
    _require(config.variant in VARIANTS,
             f"variant must be one of {tuple(VARIANTS)}, got {config.variant!r}")
    _require(config.variant == "none" or isinstance(config.mechanism, IQFlowConfig),
             f"variant {config.variant!r} changes IQ-Flow; this config's mechanism is "
             f"{type(config.mechanism).__name__}")
    _require(config.matmul_precision in MATMUL_PRECISIONS,
             f"matmul_precision must be one of {MATMUL_PRECISIONS}, "
             f"got {config.matmul_precision!r}")
    _require(config.episodes % config.chunk_episodes == 0,
             f"episodes ({config.episodes}) must be a multiple of chunk_episodes "
             f"({config.chunk_episodes}) so that every chunk has the same compiled shape")
    _require(_is_int(config.agent_reset_period) and config.agent_reset_period >= 0
             and config.agent_reset_period % config.chunk_episodes == 0,
             f"agent_reset_period ({config.agent_reset_period}) must be 0 (never) or a "
             f"positive multiple of chunk_episodes ({config.chunk_episodes}): agents are "
             "reset between chunks")
    _require(config.eval_period % config.chunk_episodes == 0,
             f"eval_period ({config.eval_period}) must be a multiple of chunk_episodes "
             f"({config.chunk_episodes}): evaluation runs between chunks")

    agent = config.agent
    _require(isinstance(agent, (PGConfig, ACConfig)),
             f"unknown agent config {type(agent).__name__}; valid: PGConfig, ACConfig")
    _check_hidden("agent.hidden", agent.hidden)
    if isinstance(agent, ACConfig):
        _positive_int("agent.conv_filters", agent.conv_filters)
        for name in ("lr_actor", "lr_critic"):
            _finite_in(f"agent.{name}", getattr(agent, name), 0, math.inf, low_open=True)
        _finite_in("agent.entropy_coef", agent.entropy_coef, 0, math.inf)
        _finite_in("agent.gamma", agent.gamma, 0, 1)
        _finite_in("agent.polyak", agent.polyak, 0, 1, low_open=True)
        _require(len(env.observation_spec.shape) == 4,
                 f"ACConfig's conv networks need image observations [N, H, W, C]; "
                 f"{config.env} gives {env.observation_spec.shape}")
        return _validate_mechanism(config, env)
    _finite_in("agent.lr", agent.lr, 0, math.inf, low_open=True)
    _finite_in("agent.entropy_coef", agent.entropy_coef, 0, math.inf)
    _finite_in("agent.gamma", agent.gamma, 0, 1)
    _require(agent.return_mode in ("reward_to_go", "discounted_reward"),
             f"agent.return_mode must be 'reward_to_go' or 'discounted_reward', "
             f"got {agent.return_mode!r}")
    _choice("agent.optimizer", agent.optimizer, ("sgd", "adam"))
    _choice("agent.init", agent.init, ("orthogonal", "glorot"))
    _validate_mechanism(config, env)


def _validate_mechanism(config: TrainConfig, env) -> None:
    mech = config.mechanism
    if isinstance(mech, (NoMechanismConfig, SharedRewardConfig)):
        return
    if isinstance(mech, (IQFlowConfig, IDConfig)):
        filters = mech.conv_filters
        _require(_is_int(filters) and filters >= 0,
                 f"mechanism.conv_filters must be an integer >= 0, got {filters!r}")
        if filters:
            _require(len(env.observation_spec.shape) == 4,
                     f"mechanism.conv_filters > 0 needs image observations [N, H, W, C]; "
                     f"{config.env} gives {env.observation_spec.shape}")
            _require(len(mech.incentive_hidden) >= 1,
                     "mechanism.incentive_hidden needs a layer after the conv features")
            _require(len(getattr(mech, "critic_hidden", (1,))) >= 1,
                     "mechanism.critic_hidden needs a layer after the conv features")
    if isinstance(mech, IDConfig):
        _check_hidden("mechanism.incentive_hidden", mech.incentive_hidden)
        _check_hidden("mechanism.critic_hidden", mech.critic_hidden)
        for name in ("lr_meta", "incentive_max", "output_scale", "lr_critic"):
            _finite_in(f"mechanism.{name}", getattr(mech, name), 0, math.inf, low_open=True)
        _finite_in("mechanism.lr_cost", mech.lr_cost, 0, math.inf)
        _finite_in("mechanism.cost_weight", mech.cost_weight, 0, math.inf)
        _finite_in("mechanism.gamma", mech.gamma, 0, 1)
        _choice("mechanism.outer_weight", mech.outer_weight, ("return", "td_error", "per_step"))
        _choice("mechanism.cost_episode", mech.cost_episode, ("new", "rebuilt"))
        _choice("mechanism.output_type", mech.output_type, ("agent", "action"))
        _choice("mechanism.activation", mech.activation, ("abs_tanh", "sigmoid"))
        _choice("mechanism.init", mech.init, ("orthogonal", "glorot"))
        _choice("mechanism.designer_input", mech.designer_input, ("observations", "state"))
        _choice("mechanism.inner_critic", mech.inner_critic, ("before", "after"))
        if mech.critic_polyak is not None:
            _finite_in("mechanism.critic_polyak", mech.critic_polyak, 0, 1, low_open=True)
        if mech.critic_conv_filters is not None:
            _positive_int("mechanism.critic_conv_filters", mech.critic_conv_filters)
        _require(mech.designer_input == "observations" or hasattr(env, "central_state"),
                 f"mechanism.designer_input 'state' needs an environment with a central "
                 f"state (escape_room); {config.env} has none: use 'observations'")
        _require(mech.inner_critic == "before" or isinstance(config.agent, ACConfig),
                 "mechanism.inner_critic 'after' rebuilds an actor-critic step with its "
                 "updated critic; these agents have no critic: use 'before'")
        _require(mech.init == "orthogonal" or not mech.conv_filters,
                 "mechanism.init 'glorot' is the ID authors' MLP head; conv heads are "
                 "orthogonal: use 'orthogonal'")
        _require(mech.init == "orthogonal" or mech.output_scale == IDConfig.output_scale,
                 "mechanism.output_scale scales an orthogonal last layer; with init "
                 "'glorot' it would do nothing: leave it at its default")
        _require(mech.outer_weight == "td_error" or (mech.critic_polyak is None and
                                                     mech.critic_conv_filters is None),
                 "mechanism.critic_polyak and critic_conv_filters shape the team critic of "
                 "outer_weight 'td_error'; this config has none")
        _require(mech.critic_conv_filters is None or mech.conv_filters > 0,
                 "mechanism.critic_conv_filters needs image observations (conv_filters > 0)")
        return
    _require(isinstance(mech, IQFlowConfig),
             f"unknown mechanism config {type(mech).__name__}; valid: "
             "NoMechanismConfig, SharedRewardConfig, IQFlowConfig, IDConfig")
    _check_hidden("mechanism.incentive_hidden", mech.incentive_hidden)
    _check_hidden("mechanism.critic_hidden", mech.critic_hidden)
    for name in ("lr_incentive", "lr_coop", "lr_env", "lr_ind", "incentive_max"):
        _finite_in(f"mechanism.{name}", getattr(mech, name), 0, math.inf, low_open=True)
    for name in ("c1", "c2", "rmsprop_eps"):
        _finite_in(f"mechanism.{name}", getattr(mech, name), 0, math.inf)
    _finite_in("mechanism.gamma", mech.gamma, 0, 1)
    _finite_in("mechanism.expectile", mech.expectile, 0, 1, low_open=True, high_open=True)
    _finite_in("mechanism.polyak", mech.polyak, 0, 1, low_open=True)
    _finite_in("mechanism.rmsprop_decay", mech.rmsprop_decay, 0, 1, high_open=True)
    _choice("mechanism.q_layout", mech.q_layout, ("per_head", "shared_conv"))
    _choice("mechanism.incentive_activation", mech.incentive_activation,
            ("sigmoid", "abs_tanh"))
    _finite_in("mechanism.incentive_output_scale", mech.incentive_output_scale, 0, math.inf,
               low_open=True)
    _choice("mechanism.logit_bound_mode", mech.logit_bound_mode, ("penalty", "clip"))
    if mech.logit_bound is not None:
        _finite_in("mechanism.logit_bound", mech.logit_bound, 0, math.inf, low_open=True)
    _finite_in("mechanism.logit_penalty", mech.logit_penalty, 0, math.inf, low_open=True)
    _choice("mechanism.incentive_optimizer", mech.incentive_optimizer, ("rmsprop", "adam"))
    _choice("mechanism.incentive_input", mech.incentive_input, ("joint_action", "own_action"))
    if mech.incentive_eps is not None:
        _finite_in("mechanism.incentive_eps", mech.incentive_eps, 0, math.inf)
    _require(isinstance(mech.diagnostics, bool),
             f"mechanism.diagnostics must be True or False, got {mech.diagnostics!r}")
    _finite_in("mechanism.saturated_slope", mech.saturated_slope, 0, 1)
    _finite_in("mechanism.flat_incentive", mech.flat_incentive, 0, 1)
    _finite_in("mechanism.stuck_dilemma", mech.stuck_dilemma, 0, 1)
    _require(mech.q_layout == "per_head" or mech.conv_filters > 0,
             "mechanism.q_layout 'shared_conv' shares a conv over image observations; "
             "this config has no conv (conv_filters 0): use 'per_head'")
    _require(not mech.values_ignore_obs or mech.conv_filters == 0,
             "mechanism.values_ignore_obs is the authors' MLP critics' V (SPEC §6 row 2); "
             "their conv critics (Cleanup) read the observations: leave it False")
    _positive_int("mechanism.unroll_steps", mech.unroll_steps)
    _positive_int("mechanism.batch_size", mech.batch_size)
    _positive_int("mechanism.start_train", mech.start_train)
    capacity = replay_capacity(config, env.max_steps)
    _require(mech.start_train >= 2 * mech.batch_size,
             f"mechanism.start_train ({mech.start_train}) must be >= 2 * batch_size "
             f"({2 * mech.batch_size}): step B draws that many distinct transitions")
    _require(capacity >= mech.start_train,
             f"the replay buffer holds {capacity} transitions, fewer than start_train "
             f"({mech.start_train}): step B would never run; raise episodes or "
             "replay_capacity")


def replay_capacity(config: TrainConfig, max_steps: int) -> int:
    mech = config.mechanism
    if getattr(mech, "replay_capacity", None) is not None:
        _positive_int("mechanism.replay_capacity", mech.replay_capacity)
        return mech.replay_capacity
    return config.episodes * max_steps


# --- Presets: the SPEC's tables, and the recipes of SPEC §6-7 ---------------------------

MATRIX_GAMES = ("ipd", "chicken", "stag_hunt")

# SPEC §6 row 6: the authors' ID head, 2 |tanh| over a last layer orthogonal(sqrt 2) / 1000.
MINI_INIT_SCALE = math.sqrt(2.0) / 1000

# Beyond the paper (issue 16, README "Incentives that do not die"): IQ-Flow's fields
# each variant sets, on top of any recipe. "robust", measured in benchmarks/RESULTS.md
# ("Incentives that do not die"): the penalty that holds the pre-activation within
# |z| <= 5 (no flat tail to die in) and incentives that read each agent's own action
# (what is learnt for the others' common actions holds for their rare ones).
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "robust": {"logit_bound": 5.0, "logit_bound_mode": "penalty", "logit_penalty": 1.0,
               "incentive_input": "own_action"},
}


def with_variant(config: TrainConfig, variant: str) -> TrainConfig:
    """`config` with the variant's IQ-Flow fields and its label; a config of another
    mechanism is returned as it is (its label stays "none")."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {list(VARIANTS)}")
    if variant == "none" or not isinstance(config.mechanism, IQFlowConfig):
        return config
    return config.replace(mechanism=_replace(config.mechanism, **VARIANTS[variant]),
                          variant=variant)


def _check_recipe(recipe: str, valid: tuple[str, ...], experiment: str) -> None:
    if recipe not in valid:
        raise ValueError(f"recipe {recipe!r} does not apply to {experiment}; valid: "
                         f"{list(valid)}")


def _replace(part, **changes):
    return dataclasses.replace(part, **changes)


def matrix_game(game: str, alg: Literal["iqflow", "none"] = "iqflow", recipe: str = "paper",
                **overrides) -> TrainConfig:
    """SPEC §1.1, §2 and the matrix column of §3: PG agents (16-8), episode length 5.
    recipe "authors": SPEC §6 rows 1 (gamma^t r_t step weights) and 2 (V_env, V_ind
    that ignore the observations); the evaluation period stays (tables, not curves)."""
    if game not in MATRIX_GAMES:
        raise ValueError(f"unknown matrix game {game!r}; valid: {list(MATRIX_GAMES)}")
    mechanisms = {"iqflow": IQFlowConfig, "none": NoMechanismConfig}
    if alg not in mechanisms:
        raise ValueError(f"unknown algorithm {alg!r} for matrix games; valid: {list(mechanisms)}")
    _check_recipe(recipe, ("paper", "authors"), "the matrix games")
    agent, mechanism = PGConfig(), mechanisms[alg]()
    if recipe == "authors":
        agent = _replace(agent, return_mode="discounted_reward")
        if alg == "iqflow":
            mechanism = _replace(mechanism, values_ignore_obs=True)
    base = TrainConfig(env=game, agent=agent, mechanism=mechanism, recipe=recipe)
    return base.replace(**overrides)


def escape_room(n_agents: int = 5, n_required: int = 2,
                alg: Literal["iqflow", "id", "none"] = "iqflow", recipe: str = "paper",
                **overrides) -> TrainConfig:
    """SPEC §1.2, §2 and the ER column of §3: PG agents (64-64, lr 9.56e-5, entropy
    0.0166); IQ-Flow with a 64-32 incentive net, 64-64 critics, c1 = 0.5, c2 = 5e-3.
    25,000 episodes for ER(5, 2), 20,000 for ER(10, 5).

    recipe "authors" (SPEC §6): every algorithm's agents weight steps by gamma^t r_t
    (row 1) and are evaluated every 100 episodes (row 11); IQ-Flow's V_env and V_ind
    ignore the observations (row 2); ID weights its outer loss per step by
    gamma^t R_team,t (row 4), charges its cost on the rebuilt episode (row 5) and has
    the mini-init head (row 6); on ER(5,2) ID's agents use Adam (row 3), on ER(10,5)
    they keep SGD with entropy 0.1, ID's cost rate is 1.03e-5 and it trains 25,000
    episodes (row 7). recipe "id_authors" (SPEC §7): agents 64-32 with Glorot weights
    for every algorithm; ID's per-action head over the central state (64-16,
    2 sigmoid, Glorot, cost on every output of the rebuilt episode); 100,000 episodes,
    evaluated every 100."""
    _check_recipe(recipe, RECIPES, "Escape Room")
    mechanisms = {
        "iqflow": IQFlowConfig(incentive_hidden=(64, 32), critic_hidden=(64, 64),
                               lr_incentive=1e-3, lr_coop=1e-3, lr_env=1e-3, lr_ind=1e-3,
                               c1=0.5, c2=5e-3, start_train=300),
        "id": IDConfig(),
        "none": NoMechanismConfig(),
    }
    if alg not in mechanisms:
        raise ValueError(f"unknown algorithm {alg!r} for Escape Room; valid: {list(mechanisms)}")
    room = (n_agents, n_required)
    agent = PGConfig(hidden=(64, 64), lr=9.56e-5, entropy_coef=0.0166)
    mechanism = mechanisms[alg]
    schedule = dict(episodes=25000 if room == (5, 2) else 20000, chunk_episodes=250,
                    eval_period=500)
    if recipe == "authors":
        agent = _replace(agent, return_mode="discounted_reward")
        schedule.update(chunk_episodes=100, eval_period=100)
        if alg == "iqflow":
            mechanism = _replace(mechanism, values_ignore_obs=True)
        if alg == "id":
            mechanism = _replace(mechanism, outer_weight="per_step", cost_episode="rebuilt",
                                 output_scale=MINI_INIT_SCALE)
            if room == (5, 2):
                agent = _replace(agent, optimizer="adam")
            if room == (10, 5):
                agent = _replace(agent, entropy_coef=0.1)
                mechanism = _replace(mechanism, lr_cost=1.03e-5)
                schedule.update(episodes=25000)
    if recipe == "id_authors":
        agent = _replace(agent, hidden=(64, 32), init="glorot")
        schedule.update(episodes=100000, chunk_episodes=100, eval_period=100)
        if alg == "id":
            mechanism = _replace(mechanism, incentive_hidden=(64, 16), output_type="action",
                                 activation="sigmoid", init="glorot",
                                 designer_input="state", cost_episode="rebuilt")
    base = TrainConfig(env="escape_room", env_params={"n_agents": n_agents,
                                                      "n_required": n_required},
                       agent=agent, mechanism=mechanism, recipe=recipe, **schedule)
    return base.replace(**overrides)


CLEANUP_MAPS = ("7x7", "10x10")
CLEANUP_ALGORITHMS = ("ac", "shared", "shared_decentralised", "shared_centralised", "iqflow",
                      "id")
CENTRALISED = "centralised:"  # envs_jax.CENTRALISED: the joint-action controller


# SPEC §3, the Cleanup column: conv critics and incentive net, tiny eta learning rate.
# SPEC §4, Cleanup: one Adam on meta + 1e-4 cost, the outer loss weighted by a
# centralised critic's TD error.
CLEANUP_ID = IDConfig(incentive_hidden=(64, 64), conv_filters=6, lr_meta=1.24e-5, lr_cost=0.0,
                      cost_weight=1e-4, outer_weight="td_error", critic_hidden=(64, 64),
                      lr_critic=2.4e-5)
CLEANUP_IQFLOW = IQFlowConfig(incentive_hidden=(64, 64), critic_hidden=(64, 64),
                              conv_filters=6, lr_incentive=7.323e-6, lr_coop=4.0089e-5,
                              lr_env=4.0089e-5, lr_ind=1e-3, c1=0.25, c2=1.4924e-4,
                              start_train=200)


def cleanup(map_size: str = "7x7", alg: str = "ac", recipe: str = "paper",
            **overrides) -> TrainConfig:
    """SPEC §1.3/§1.4 and §2: conv actor-critic agents, 20,000 episodes of 50 steps,
    agents re-initialised every 1000 episodes, evaluated every 500. `ac`: independent
    AC (its own learning rates and entropy 0.1); `shared_decentralised`: every agent
    learns from the team's environment reward, with the AC agents of IQ-Flow's runs
    (SPEC §2's upper bound); `shared_centralised`: ONE AC controller with the
    independent-AC settings that sees agent 0's view and picks the joint action,
    learning from the team reward, never reset (SPEC §6 row 9); `shared`: the recipe's
    upper bound (paper: decentralised, authors: centralised); `iqflow`: the AC agents
    and IQ-Flow with conv networks (SPEC §3); `id`: those agents and the ID baseline of
    SPEC §4.

    recipe "authors" (SPEC §6, 7x7 only): evaluation every 100 episodes (row 11);
    IQ-Flow's agents reset every 2,000 episodes (row 10) and its Q critics share one
    conv (row 12); ID's agents have the independent-AC settings and are never reset,
    its team critic has a 12-filter conv and a Polyak target, its rebuilt actor step
    uses the updated critic and its cost charges the rebuilt episode (row 8); the
    independent-AC baseline is never reset (the authors' baseline trainer,
    trainer/train_ac_ssd.py, which also runs row 9's controller, has no resets)."""
    if map_size not in CLEANUP_MAPS:
        raise ValueError(f"unknown Cleanup map {map_size!r}; valid: {list(CLEANUP_MAPS)}")
    if alg not in CLEANUP_ALGORITHMS:
        raise ValueError(f"unknown algorithm {alg!r} for Cleanup; valid: "
                         f"{list(CLEANUP_ALGORITHMS)}")
    _check_recipe(recipe, ("paper", "authors") if map_size == "7x7" else ("paper",),
                  f"Cleanup {map_size} (the authors' 10x10 config, SPEC §6 row 15, is "
                  "another experiment)")
    if alg == "shared":
        alg = "shared_centralised" if recipe == "authors" else "shared_decentralised"
    presets = {"ac": (INDEPENDENT_AC, NoMechanismConfig()),
               "shared_decentralised": (ACConfig(), SharedRewardConfig()),
               "shared_centralised": (INDEPENDENT_AC, NoMechanismConfig()),
               "iqflow": (ACConfig(), CLEANUP_IQFLOW),
               "id": (ACConfig(), CLEANUP_ID)}
    agent, mechanism = presets[alg]
    env = f"cleanup_{map_size}"
    schedule = dict(episodes=20000, chunk_episodes=100, eval_period=500, agent_reset_period=1000)
    if alg == "shared_centralised":
        env = CENTRALISED + env
        schedule.update(agent_reset_period=0)
    if recipe == "authors":
        schedule.update(eval_period=100)
        if alg == "iqflow":
            schedule.update(agent_reset_period=2000)
            mechanism = _replace(mechanism, q_layout="shared_conv")
        if alg == "id":
            agent = INDEPENDENT_AC
            schedule.update(agent_reset_period=0)
            mechanism = _replace(mechanism, critic_polyak=0.01, critic_conv_filters=12,
                                 inner_critic="after", cost_episode="rebuilt")
        if alg == "ac":
            schedule.update(agent_reset_period=0)
    base = TrainConfig(env=env, agent=agent, mechanism=mechanism, recipe=recipe, **schedule)
    return base.replace(**overrides)
