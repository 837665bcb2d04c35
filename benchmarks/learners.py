"""Any learner under any mechanism (issue 19): the paper's central claim, tested.

    python -m benchmarks.learners --env ipd er cleanup --seeds 8 \
        --out benchmarks/results/learners/learners_8s.json

The paper says IQ-Flow "does not make any assumptions about agents' policies or
learning algorithms", where ID differentiates through a model of the agents' own
update; every experiment of the paper uses one learner whose update ID models
exactly. Here every mechanism (none, shared reward, IQ-Flow, ID) meets every learner
(the paper's PG on the matrix game and Escape Room and AC on Cleanup, PPO, DQN, and
a mixed team of them) on the IPD, ER(5, 2) and Cleanup 7x7. Each run is the suite's
preset of that mechanism on that environment (jaxsim.config: the paper's settings;
ID on the IPD, where the paper has none, with IDConfig's defaults, its Escape Room
values) with its learner replaced: DQN keeps its own defaults (agents.dqn); PPO keeps
PureJaxRL's (agents.ppo) on Cleanup, where both have the AC agents' Conv(6) torso,
and on the IPD and ER, whose episodes last 1 to 5 steps, learns from the whole
episode's raw GAE advantages (one minibatch, advantage_norm "none": standardised
within a minibatch of one step, ER's usual successful episode, an advantage is 0, and
PPO alone on ER(5, 2)'s team reward stayed at 13 of 28; RESULTS.md); pg and ac, and a mixed
team's first member, are the preset's own learner (on Cleanup the independent-AC
settings without a mechanism, the IQ-Flow column's AC under the others, as in the
paper's Fig. 7). ID models PG and AC agents by their own step; PPO, DQN and mixed
teams it can only model wrongly, as one SGD step of REINFORCE on their declared
policy (a softmax over Q for DQN: IDConfig.agent_model "pg_step"), which the table
names. "shared" (every agent learns from the team's reward, no mechanism) is each
learner alone on a cooperative task it should solve: a failure under a mechanism
where shared succeeds is the mechanism's, not the learner's.

Reported per run: the final evaluated return (mean, 95% interval across seeds), the
fraction of seeds at the cooperative optimum (IPD: mutual cooperation, 30, within 5%;
ER(5, 2): 27 of 28, the suite's Escape Room threshold; Cleanup 7x7: 35, 90% of the
scripted cleaner-and-harvester's 38.9), the first evaluation whose mean reaches that
level, and throughput. One PNG per environment, one panel per learner.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agents import DQNConfig, MixedConfig, PPOConfig
from benchmarks import driver
from benchmarks.common import (RunArgs, merge_run_figures, mean_ci95, plot_return_curves,
                               run_figures, run_options, with_incentive_options, with_rows)
from benchmarks.driver import Benchmark
from envs_jax.escape_room import EscapeRoom
from envs_jax.matrix_games import PAYOFFS
from jaxsim.config import cleanup, escape_room, matrix_game
from jaxsim.runner import run
from mechanism.id import IDConfig
from mechanism.none import SharedRewardConfig

ENVS = ("ipd", "er", "cleanup")
MECHANISMS = ("none", "shared", "iqflow", "id")
LEARNERS = ("pg", "ac", "ppo", "dqn", "mixed")
IMAGE_ENVS = ("cleanup",)  # AC's conv networks; PG is the vector environments'
EPISODES = {"ipd": 3000, "er": 10000, "cleanup": 3000}  # the reduced scale
TITLES = {"ipd": "Iterated Prisoner's Dilemma", "er": "Escape Room ER(5, 2)",
          "cleanup": "Cleanup 7x7"}
IPD_OPTIMUM = 5 * float(PAYOFFS["ipd"].sum(-1).max())  # 5 steps of mutual cooperation
# The cooperative optimum and the level a seed must reach to count as at it.
OPTIMUM = {"ipd": (IPD_OPTIMUM, 0.95 * IPD_OPTIMUM),
           "er": (float(EscapeRoom(5, 2).optimal_return),
                  float(EscapeRoom(5, 2).optimal_return - 1)),
           "cleanup": (38.9, 35.0)}  # the scripted division of labour (RESULTS.md)
# PPO on the IPD and ER (episodes of 1-5 steps): the whole episode, raw advantages.
SHORT_EPISODE_PPO = PPOConfig(num_minibatches=1, advantage_norm="none")
# Mixed teams: agent i's learner, the paper's first (pg or ac).
MIXED = {"ipd": ("paper", "ppo"), "er": ("paper", "ppo", "dqn", "paper", "ppo"),
         "cleanup": ("paper", "ppo")}


@dataclass
class Args(RunArgs):
    env: tuple[Literal["ipd", "er", "cleanup"], ...] = ENVS
    mechanism: tuple[Literal["none", "shared", "iqflow", "id"], ...] = MECHANISMS
    learner: tuple[Literal["pg", "ac", "ppo", "dqn", "mixed"], ...] = ()
    """default: all. pg runs on the matrix game and Escape Room, ac on Cleanup (the
    paper's learner of each); ppo, dqn and mixed on every environment"""
    seeds: int = 8
    episodes: int | None = None
    """every environment's length (default: IPD 3,000, ER 10,000, Cleanup 3,000)"""
    chunk_episodes: int | None = None
    """every environment's chunk (default: each preset's: IPD 30, ER 250, Cleanup 100)"""
    eval_period: int | None = None
    """every environment's evaluation period (default: each preset's: 300, 500, 500)"""
    pg_return: Literal["reward_to_go", "discounted_reward"] | None = None
    """SPEC §6 row 1 for the PG agents (alone or in a mixed team): reward-to-go (SPEC
    §2, the default) or gamma^t r_t"""
    id_outer_weight: Literal["return", "td_error", "per_step"] | None = None
    """SPEC §6 row 4 for ID: what weights log pi in its outer loss (default: each
    preset's). With --pg-return discounted_reward, per_step is the setting where ID
    solves ER(5, 2) with PG agents (RESULTS.md, "Which SPEC §6 rows decide")"""
    plots: str = "runs/learners"


def applies(env: str, learner: str) -> bool:
    if learner == "pg":
        return env not in IMAGE_ENVS
    if learner == "ac":
        return env in IMAGE_ENVS
    return True


def split(alg: str) -> tuple[str, str]:
    mechanism, _, learner = alg.partition("+")
    return mechanism, learner


def check_args(args: Args) -> None:
    """Refuse what the benchmark cannot run, before anything is built."""
    if args.recipe != ("paper",):
        raise ValueError("benchmarks.learners runs the paper's recipe (its settings for "
                         "every mechanism and environment); --recipe does not apply")
    if args.sweep:
        raise ValueError("--sweep does not apply to benchmarks.learners: sweep one "
                         "experiment's benchmark instead")
    for learner in args.learner:
        if not any(applies(env, learner) for env in args.env):
            raise ValueError(f"--learner {learner} runs on none of --env {list(args.env)} "
                             "(pg: ipd and er; ac: cleanup)")
    for name, values in (("env", args.env), ("mechanism", args.mechanism),
                         ("learner", args.learner)):
        if len(set(values)) != len(values):
            raise ValueError(f"--{name} names a value twice: {list(values)}")


def algorithms(args: Args) -> list[str]:
    check_args(args)
    learners = args.learner or LEARNERS
    return [f"{m}+{learner}" for m in args.mechanism for learner in learners]


def preset(env: str, mechanism: str, episodes: int, **common):
    """The paper's config of `mechanism` on `env`, with the paper's learner."""
    if env == "ipd":
        base = matrix_game("ipd", "iqflow" if mechanism == "iqflow" else "none",
                           episodes=episodes, **common)
        extra = {"shared": SharedRewardConfig(), "id": IDConfig()}
        return base.replace(mechanism=extra[mechanism]) if mechanism in extra else base
    if env == "er":
        alg = {"none": "none", "shared": "none", "iqflow": "iqflow", "id": "id"}[mechanism]
        base = escape_room(5, 2, alg, episodes=episodes, **common)
        return base.replace(mechanism=SharedRewardConfig()) if mechanism == "shared" else base
    alg = {"none": "ac", "shared": "shared_decentralised"}.get(mechanism, mechanism)
    return cleanup("7x7", alg, episodes=episodes, **common)


def learner_config(env: str, learner: str, paper):
    """The agent config of `learner` on `env`; `paper`: the preset's own learner."""
    conv = {"conv_filters": paper.conv_filters} if env in IMAGE_ENVS else {}
    if learner in ("pg", "ac", "paper"):
        return paper
    if learner == "ppo":
        return PPOConfig(**conv) if conv else SHORT_EPISODE_PPO
    if learner == "dqn":
        return DQNConfig(**conv)
    return MixedConfig(members=tuple(learner_config(env, m, paper) for m in MIXED[env]))


def make_config(args: Args, alg: str, env: str, taken: set | None = None):
    mechanism, learner = split(alg)
    episodes = args.episodes or EPISODES[env]
    schedule = {name: value for name, value in (("chunk_episodes", args.chunk_episodes),
                                                  ("eval_period", args.eval_period))
                if value is not None}
    config = preset(env, mechanism, episodes, num_seeds=args.seeds, seed=args.seed,
                    first_seed=args.first_seed, matmul_precision=args.matmul_precision,
                    **schedule)
    agent_rows = {k: v for k, v in rows(args).items() if k.startswith("agent.")}
    if learner in ("pg", "ac", "mixed"):  # the rows of the preset's own learner, first
        config, _ = with_rows(config, agent_rows, taken)
    config = config.replace(agent=learner_config(env, learner, config.agent))
    config, _ = with_rows(config, {k: v for k, v in rows(args).items() if k not in agent_rows},
                          taken)
    if mechanism == "id" and learner not in ("pg", "ac"):  # a model ID knows to be wrong
        config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                              agent_model="pg_step"))
    return with_incentive_options(config, args, taken)


def rows(args: Args) -> dict:
    """{dotted config field: (value or None for the preset's, the flag)}."""
    return {"agent.return_mode": (args.pg_return, "--pg-return"),
            "mechanism.outer_weight": (args.id_outer_weight, "--id-outer-weight")}


def at_optimum(per_seed, level: float) -> float | None:
    values = np.asarray(per_seed, float)
    return float(np.mean(values >= level)) if values.size else None


def with_optimum(env: str, figures: dict) -> dict:
    """`figures` with the optimum, the level a seed must reach, the final evaluation's
    95% interval and the fraction of seeds at the optimum, all from the last
    evaluation's per-seed returns (stored to 4 decimals: evaluated returns here are
    multiples of 0.1, so the rounding never crosses a level)."""
    optimum, level = OPTIMUM[env]
    per_seed = figures["eval_return_per_seed"]
    final = per_seed[-1] if len(per_seed) else []
    interval = mean_ci95(final)["ci95"] if len(final) else [None, None]
    return {**figures, "optimum": optimum, "optimum_level": level,
            "final_return_ci95": interval,
            "fraction_at_optimum": at_optimum(final, level)}


def run_one(args: Args, env: str, name: str, alg: str) -> dict:
    config = make_config(args, alg, env)
    result = run(config, wandb_name=f"learners-{env}-{name}", wandb_group=f"learners-{env}",
                 **run_options(args, os.path.join(env, name), fresh_if_missing=True))
    figures = run_figures(dataclasses.replace(args, seeds=config.num_seeds), config, result,
                          OPTIMUM[env][1])
    model = config.mechanism.agent_model if isinstance(config.mechanism, IDConfig) else None
    return {name: {**with_optimum(env, figures), "environment": env, "id_agent_model": model}}


def merge_run(parts: list[dict]) -> dict:
    env = parts[0]["environment"]
    return {**with_optimum(env, merge_run_figures(parts)), "environment": env,
            "id_agent_model": parts[0]["id_agent_model"]}


def print_table(env: str, results: dict) -> None:
    optimum, level = OPTIMUM[env]
    print(f"\n{TITLES[env]}: optimum {optimum:g}, a seed at it from {level:g}")
    print(f"{'mechanism':<9} {'learner':<7} seeds episodes  final_return  {'95% interval':>16}"
          f"  at_optimum  {'first>=' + format(level, 'g'):>11}  seed-eps/s  id_model")
    for alg, r in results.items():
        mechanism, learner = split(alg)
        final = r["final_return_mean"]
        low, high = r["final_return_ci95"]
        interval = "-" if low is None else f"[{low:.2f}, {high:.2f}]"
        share = "-" if r["fraction_at_optimum"] is None else f"{r['fraction_at_optimum']:.2f}"
        first = r["first_episode_at_or_above"]
        model = r.get("id_agent_model") or "-"
        rate = r["episodes_per_s"]
        print(f"{mechanism:<9} {learner:<7} {r['seeds']:5d} {r['episodes']:8d}"
              f"  {float('nan') if final is None else final:12.2f}  {interval:>16}"
              f"  {share:>10}  {'-' if first is None else first:>11}"
              f"  {'-' if rate is None else format(rate, '.1f'):>10}  {model}")


def plot(args: Args, env: str, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learners = list(dict.fromkeys(split(alg)[1] for alg in results))
    if not learners:
        return
    os.makedirs(args.plots, exist_ok=True)
    fig, axes = plt.subplots(1, len(learners), figsize=(4.6 * len(learners), 3.8),
                             squeeze=False, sharey=True)
    optimum, level = OPTIMUM[env]
    for ax, learner in zip(axes[0], learners, strict=True):
        plot_return_curves(ax, {split(alg)[0]: r for alg, r in results.items()
                                if split(alg)[1] == learner})
        ax.axhline(optimum, color="k", lw=0.6, ls="--", label=f"optimum {optimum:g}")
        ax.set_title(f"{learner} agents")
        ax.legend(fontsize=7)
    fig.suptitle(f"{TITLES[env]}: mechanism x learner, mean and 95% CI across seeds")
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"learners_{env}.png"), dpi=110)
    plt.close(fig)


def outputs(args: Args, payload: dict) -> None:
    for env, results in payload["environments"].items():
        plot(args, env, results)
    for env, results in payload["environments"].items():
        print_table(env, results)


BENCHMARK = Benchmark(
    experiment=lambda args: "benchmarks.learners",
    algorithms=algorithms,
    make_config=lambda args, alg, recipe, taken, env: make_config(args, alg, env, taken),
    rows=rows,
    run=lambda args, env, name, alg, recipe: run_one(args, env, name, alg),
    merge_run=merge_run,
    outputs=outputs,
    groups=lambda args: list(args.env),
    results_key="environments",
    keep=lambda args, env, alg: applies(env, split(alg)[1]),
)


def main(args: Args) -> dict:
    return driver.main(BENCHMARK, args)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
