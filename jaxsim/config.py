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

import agents
import envs_jax
import mechanism
from agents.ac import INDEPENDENT_AC, ACConfig
from agents.dqn import DQNConfig
from agents.pg import PGConfig
from agents.ppo import PPOConfig
from agents.team import MixedConfig
from envs_jax.checks import is_int as _is_int
from envs_jax.checks import positive_int as _positive_int
from envs_jax.checks import require as _require
from mechanism.id import IDConfig
from mechanism.iqflow.config import IQFlowConfig
from mechanism.none import NoMechanismConfig, SharedRewardConfig


# Each part's config lives with the part (its module validates it); named here, with
# the run's own config and the SPEC's presets, for the experiments that combine them.
AgentConfig = Union[PGConfig, ACConfig, PPOConfig, DQNConfig, MixedConfig]
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
    agent: AgentConfig = field(default_factory=PGConfig)  # MixedConfig: one per agent
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


def validate(config: TrainConfig) -> None:
    """Raise ValueError on anything that cannot work, before any compilation."""
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
    _require(_is_int(config.agent_reset_period) and config.agent_reset_period >= 0
             and config.agent_reset_period % config.chunk_episodes == 0,
             f"agent_reset_period ({config.agent_reset_period}) must be 0 (never) or a "
             f"positive multiple of chunk_episodes ({config.chunk_episodes}): agents are "
             "reset between chunks")
    _require(config.eval_period % config.chunk_episodes == 0,
             f"eval_period ({config.eval_period}) must be a multiple of chunk_episodes "
             f"({config.chunk_episodes}): evaluation runs between chunks")

    agents.check(config.agent, env, config)
    mechanism.check(config.mechanism, env, config)


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
