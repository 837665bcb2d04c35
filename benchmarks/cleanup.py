"""Cleanup: the paper's Figs. 7-9 (SPEC §1.3, §1.4, §2, §5).

    python -m benchmarks.cleanup --alg all --seeds 8 --episodes 2000 --out cleanup.json
    python -m benchmarks.cleanup --ablation --seeds 8 --episodes 2000   # Fig. 8
    python -m benchmarks.cleanup --alg pretrained --mechanism-from runs/ckpt/X/iqflow  # Fig. 10

Trains each algorithm's agents on one map for every seed in one compiled program and
writes the learning curves of the total environment return (mean and 95% interval
across seeds, evaluated every `--eval-period` episodes), the incentive each agent
received over training, and a JSON with the Escape Room benchmark's keys plus
`incentive_mean_per_agent`. Algorithms: `iqflow` (IQ-Flow with conv critics and
incentive net), `id` (the ID baseline, its outer loss weighted by a centralised
critic's TD error), `ac` (independent actor-critic agents) and `shared` (the same
agents learning from the team's reward, the upper bound); `--ablation` runs IQ-Flow
with c1 = c2 = 0, with c1 = 0, and with both costs (Fig. 8); `--alg pretrained
--mechanism-from CKPT` runs fresh agents under the incentive network of an IQ-Flow run's
checkpoint, frozen, beside the shared-reward agents (Fig. 10); `--alg iqflow
--mechanism-from CKPT` starts from that network and goes on learning, and
`--freeze-mechanism` keeps it as it is. Ctrl-C (or SIGTERM)
stops a run cleanly after the chunk in flight and writes what it has.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks import driver
from benchmarks.common import (RunArgs, incentive_sums, merge_run_figures, per_action,
                               plot_return_curves, print_learning_table, run_figures,
                               run_names, seed_weighted,
                               with_incentive_options, with_rows)
from benchmarks.driver import Benchmark
from envs_jax.cleanup import ACTION_NAMES
from jaxsim.config import cleanup
from jaxsim.runner import run

# Also --alg all (Fig. 7): the four algorithms with both shared-reward upper bounds, the
# recipe's as "shared" (as before recipes) and the other by its own name (distinct_runs).
ALGORITHMS = ("iqflow", "id", "ac", "shared", "shared_decentralised", "shared_centralised")
SHARED_OF = {"paper": "shared_decentralised", "authors": "shared_centralised"}
# Fig. 8: IQ-Flow without its costs, without cost 1, and as specified.
ABLATION = {"iqflow_no_costs": (0.0, 0.0), "iqflow_no_c1": (0.0, None), "iqflow": (None, None)}


@dataclass
class Args(RunArgs):
    map: Literal["7x7", "10x10"] = "7x7"
    alg: Literal["iqflow", "id", "ac", "shared", "shared_decentralised", "shared_centralised",
                 "all", "pretrained"] = "iqflow"
    """shared: the recipe's upper bound (paper: decentralised agents each given the team
    reward; authors: one centralised controller over the joint action, SPEC §6 row 9);
    all: iqflow, id, ac and both shared baselines (Fig. 7)"""
    mechanism_from: str | None = None
    """checkpoint directory of an IQ-Flow (or ID) run whose incentive network, seed i for
    seed i, replaces the fresh one at the start: with --alg iqflow or id it goes on
    learning, with --freeze-mechanism it pays fresh agents unchanged; --alg pretrained
    is IQ-Flow frozen beside the shared-reward agents (Fig. 10)"""
    freeze_mechanism: bool = False
    """keep the loaded mechanism as it is (no updates, no replay); needs --mechanism-from"""
    episodes: int = 20000
    chunk_episodes: int = 100
    eval_period: int | None = None
    """default: the recipe's (paper 500, authors 100: SPEC §6 row 11)"""
    agent_reset_period: int | None = None
    """fresh agents every this many episodes (0: never); default: the recipe's (paper
    1000; authors: IQ-Flow 2000, row 10, the others never, rows 8-9)"""
    q_layout: Literal["per_head", "shared_conv"] | None = None
    """SPEC §6 row 12: IQ-Flow's Q heads each with its own conv (SPEC §3) or sharing one
    conv per critic (the authors'). Default: the recipe's"""
    id_inner_critic: Literal["before", "after"] | None = None
    """SPEC §6 row 8: the critic in ID's rebuilt actor step, the agent's before its
    update on the rebuilt episode (SPEC §4) or after it (the authors')"""
    id_critic_polyak: float | None = None
    """SPEC §6 row 8: ID's team critic bootstraps from a Polyak target moved by this
    much per step (authors: 0.01), or from itself with 0 (paper). Default: the recipe's"""
    id_critic_conv_filters: int | None = None
    """SPEC §6 row 8: the conv width of ID's team critic (authors: 12; paper: that of
    the incentive net, 6). Default: the recipe's"""
    id_cost_episode: Literal["new", "rebuilt"] | None = None
    """SPEC §6 rows 5 and 8: ID's cost on the new episode or the rebuilt one"""
    ablation: bool = False
    """IQ-Flow's cost ablation (Fig. 8) instead of --alg"""
    remat_unroll: bool = False
    """IQ-Flow: recompute the K unrolled critic steps' activations in the backward pass
    (21 instead of 81 MB of temporaries per seed; on an H200 the same speed, and what
    lets 2,048 seeds fit one GPU; 22% slower on a CPU)"""
    replay_capacity: int | None = None
    """IQ-Flow: keep each seed's last N transitions (default: every transition of the
    run, as the SPEC; 117 bytes each on 7x7, so 20,000 episodes are 117 MB a seed:
    64 seeds 7.5 GB, 4,096 seeds 479 GB, more than any one GPU holds)"""
    threshold: float | None = None
    """report the first evaluation whose mean return reaches this"""
    plots: str = "runs/cleanup"
    quick: bool = False
    """a first look in a few minutes on 2 CPU cores: every algorithm of Fig. 7 (--alg
    all), 2 seeds, 100 episodes in chunks of 50, evaluated every 50; the same table as
    the full run (which is --alg all --seeds 64)"""


QUICK = dict(alg="all", seeds=2, episodes=100, chunk_episodes=50, eval_period=50)


def rows(args: Args) -> dict:
    """{dotted config field: (value or None for the recipe's, the flag)}."""
    return {"eval_period": (args.eval_period, "--eval-period"),
            "agent_reset_period": (args.agent_reset_period, "--agent-reset-period"),
            "mechanism.q_layout": (args.q_layout, "--q-layout"),
            "mechanism.inner_critic": (args.id_inner_critic, "--id-inner-critic"),
            "mechanism.critic_polyak": (args.id_critic_polyak, "--id-critic-polyak"),
            "mechanism.critic_conv_filters": (args.id_critic_conv_filters,
                                              "--id-critic-conv-filters"),
            "mechanism.cost_episode": (args.id_cost_episode, "--id-cost-episode")}


def make_config(args: Args, alg: str, recipe: str = "paper", taken: set | None = None):
    config = cleanup(args.map, alg if alg in ALGORITHMS else "iqflow", recipe=recipe,
                     num_seeds=args.seeds, seed=args.seed, first_seed=args.first_seed,
                     matmul_precision=args.matmul_precision, episodes=args.episodes,
                     chunk_episodes=args.chunk_episodes)
    config = with_incentive_options(config, args, taken)
    config, applied = with_rows(config, rows(args), taken)
    if args.id_critic_polyak == 0 and "mechanism.critic_polyak" in applied:
        config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                              critic_polyak=None))
    if alg == "pretrained" or (args.freeze_mechanism and alg in ("iqflow", "id")):
        config = config.replace(freeze_mechanism=True)
        mech = config.mechanism  # frozen: no updates, so no replay beyond the minimum
        if hasattr(mech, "replay_capacity"):
            config = config.replace(mechanism=dataclasses.replace(
                mech, replay_capacity=mech.start_train))
    if (args.replay_capacity is not None and not config.freeze_mechanism
            and hasattr(config.mechanism, "replay_capacity")):
        config = config.replace(mechanism=dataclasses.replace(
            config.mechanism, replay_capacity=args.replay_capacity))
    if args.remat_unroll and hasattr(config.mechanism, "remat_unroll"):
        config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                              remat_unroll=True))
    if alg in ABLATION:
        c1, c2 = ABLATION[alg]
        mech = config.mechanism
        config = config.replace(mechanism=dataclasses.replace(
            mech, c1=mech.c1 if c1 is None else c1, c2=mech.c2 if c2 is None else c2))
    return config


def algorithms(args: Args) -> list[str]:
    if args.alg == "pretrained" and not args.ablation and not args.mechanism_from:
        raise ValueError("--alg pretrained needs --mechanism-from: the checkpoint "
                         "directory of an IQ-Flow run (e.g. runs/ckpt/NAME/iqflow)")
    if args.freeze_mechanism and not args.mechanism_from:
        raise ValueError("--freeze-mechanism needs --mechanism-from: the checkpoint "
                         "directory of the IQ-Flow or ID run whose mechanism pays the agents")
    if args.mechanism_from:  # one check of where it goes and that it exists, for every use
        if args.ablation or args.alg not in ("iqflow", "id", "pretrained"):
            raise ValueError(f"--mechanism-from loads an incentive network into --alg iqflow "
                             f"or id (or --alg pretrained), not into "
                             f"{'the ablation' if args.ablation else '--alg ' + args.alg}")
        if not os.path.isdir(args.mechanism_from):
            raise ValueError(f"--mechanism-from {args.mechanism_from}: no such directory")
    if args.ablation:
        return list(ABLATION)
    if args.alg == "pretrained":  # Fig. 10, against both shared-reward baselines
        return ["pretrained", "shared", "shared_decentralised", "shared_centralised"]
    return list(ALGORITHMS) if args.alg == "all" else [args.alg]


def distinct_runs(names: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Drops the run that only repeats `shared` under another name: under each recipe
    `shared` is one of the two named baselines."""
    algs = {alg for _, alg, _ in names}
    return [(name, alg, recipe) for name, alg, recipe in names
            if not ("shared" in algs and alg == SHARED_OF.get(recipe))]


def run_one(args: Args, name: str, alg: str, recipe: str = "paper") -> dict:
    """{name: figures} of one algorithm's run: one entry, or one per sweep point
    (`alg[c1=0,c2=0]`)."""
    source = args.mechanism_from if alg in ("pretrained", "iqflow", "id") else None
    return driver.run_swept(args, make_config(args, alg, recipe), name, f"cleanup-{args.map}",
                            lambda config, result: figures(args, config, result), run,
                            mechanism_from=source)


def figures(args: Args, config, result) -> dict:
    incentive = result.episode.incentive_per_agent if len(result.episodes) else None
    by_action = {}
    if len(result.episodes):
        last = result.episodes > 0.9 * result.episodes[-1]
        paid, taken = incentive_sums(result.episode, last)
        by_action = {"incentive_by_action": per_action(paid, taken),
                     "actions_taken_by_action": taken.round(4).tolist()}
    return {
        **run_figures(args, config, result, args.threshold),
        "train_episodes": [int(e) for e in result.episodes],
        "train_return_mean": (result.episode.total_return.mean(1).round(4).tolist()
                              if len(result.episodes) else []),
        "incentive_per_agent_curve": (incentive.mean(1).round(5).tolist()
                                      if incentive is not None else []),
        "incentive_mean_per_agent": (incentive.mean((0, 1)).round(5).tolist()
                                     if incentive is not None and len(incentive) else []),
        **by_action,
    }


def plot(args: Args, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.plots, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_return_curves(ax, results)
    periods = {r.get("config", {}).get("agent_reset_period") for r in results.values()}
    period = periods.pop() if len(periods) == 1 else None  # marked only if all runs share it
    if period:
        for x in range(period, args.episodes, period):
            ax.axvline(x, color="k", lw=0.3, alpha=0.3)
    ax.set_title(f"Cleanup {args.map}: mean and 95% CI across seeds")
    ax.legend()
    fig.tight_layout()
    name = ("ablation" if args.ablation else "pretrained" if args.alg == "pretrained"
            else "returns")
    fig.savefig(os.path.join(args.plots, f"cleanup_{args.map}_{name}.png"), dpi=110)
    plt.close(fig)

    paying = {a: r for a, r in results.items()
              if a.startswith(("iqflow", "id", "pretrained")) and r["incentive_per_agent_curve"]}
    if not paying:
        return
    fig, axes = plt.subplots(2, len(paying), figsize=(5.5 * len(paying), 7), squeeze=False)
    for col, (alg, r) in enumerate(paying.items()):
        ax = axes[0, col]  # Fig. 9: the incentive each agent received per episode
        curve = np.asarray(r["incentive_per_agent_curve"])
        for agent in range(curve.shape[1]):
            ax.plot(r["train_episodes"], curve[:, agent], label=f"agent {agent}")
        ax.set_xlabel("episode")
        ax.set_ylabel("incentive received per episode")
        ax.set_title(f"{alg}: incentives over training")
        ax.legend()
        ax = axes[1, col]  # per action taken, last 10% of training
        table = np.nan_to_num(np.asarray(r["incentive_by_action"], float))  # [N, A]
        width = 0.8 / table.shape[0]
        for agent in range(table.shape[0]):
            ax.bar(np.arange(table.shape[1]) + agent * width, table[agent], width,
                   label=f"agent {agent}")
        ax.set_xticks(np.arange(table.shape[1]) + 0.4 - width / 2, ACTION_NAMES,
                      rotation=30)
        ax.set_ylabel("incentive per action taken")
        ax.set_title(f"{alg}: by action, last 10% of training")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"cleanup_{args.map}_{name}_incentives.png"),
                dpi=110)
    plt.close(fig)


def merge_run(parts: list[dict]) -> dict:
    """One algorithm's figures from runs of disjoint seed ranges made side by side."""
    if len({tuple(r["train_episodes"]) for r in parts}) != 1:
        raise ValueError("the runs trained different chunks; train them as far")
    merged = {**merge_run_figures(parts), "train_episodes": parts[0]["train_episodes"]}
    for key in ("train_return_mean", "incentive_per_agent_curve", "incentive_mean_per_agent"):
        merged[key] = np.round(seed_weighted(parts, key), 5 if "incentive" in key else 4
                               ).tolist()
    if all("incentive_by_action" in r for r in parts):
        seeds = np.array([r["seeds"] for r in parts], float)
        taken = [np.asarray(r["actions_taken_by_action"], float) for r in parts]
        paid = [np.nan_to_num(np.asarray(r["incentive_by_action"], float)) * t
                for r, t in zip(parts, taken, strict=True)]
        total = lambda xs: sum(w * x for w, x in zip(seeds, xs, strict=True)) / seeds.sum()  # noqa: E731
        merged["incentive_by_action"] = per_action(total(paid), total(taken))
        merged["actions_taken_by_action"] = total(taken).round(4).tolist()
    return merged


def check_merge(payloads: list[dict]) -> None:
    maps = {p["args"]["map"] for p in payloads}
    if len(maps) != 1:
        raise ValueError(f"these files hold different maps: {sorted(maps)}")


def after_merge(args: Args, payload: dict) -> Args:
    longest = max(r["episodes"] for r in payload["algorithms"].values())
    return dataclasses.replace(args, map=payload["args"]["map"], alg="all", episodes=longest)


def outputs(args: Args, payload: dict) -> None:
    plot(args, payload["algorithms"])
    print_learning_table(f"Cleanup {args.map}", payload["algorithms"], args.threshold)


__all__ = ["BENCHMARK", "Args", "algorithms", "distinct_runs", "main", "make_config",
           "run_names"]

BENCHMARK = Benchmark(
    experiment=lambda args: f"--alg {args.alg} on Cleanup",
    algorithms=algorithms,
    make_config=lambda args, alg, recipe, taken, group: make_config(args, alg, recipe, taken),
    rows=rows,
    run=lambda args, group, name, alg, recipe: run_one(args, name, alg, recipe),
    merge_run=merge_run,
    outputs=outputs,
    names=distinct_runs,
    check_merge=check_merge,
    after_merge=after_merge,
)


def main(args: Args) -> dict:
    if args.quick:
        args = dataclasses.replace(args, quick=False, **QUICK)
    return driver.main(BENCHMARK, args)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
