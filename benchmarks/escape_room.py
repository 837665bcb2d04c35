"""Escape Room ER(N, M): IQ-Flow against ID and plain PG agents (paper Figs. 5-6).

    python -m benchmarks.escape_room --n 5 --m 2 --alg all --seeds 64 \
        --out benchmarks/results/escape_room_5_2.json

Each algorithm trains every seed in one compiled program. Reported per algorithm: the
evaluated total environment return over training (mean and 95% interval across seeds,
10 episodes per seed per evaluation), the final mean, the first evaluation whose mean
reaches the optimum minus one (27 for ER(5,2), 44 for ER(10,5)), throughput, and the
incentive each agent received for each action at the end. One PNG holds every
algorithm's curve, another the incentives by action.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks.common import (RunArgs, incentive_sums, join_job, per_action, plot_return_curves,
                               print_learning_table, run_figures, run_options, summarise,
                               write_json)
from envs_jax.escape_room import EscapeRoom
from jaxsim.config import escape_room, validate
from jaxsim.runner import run
from jaxsim.sweep import parse_sweep, split_result

ALGORITHMS = {"iqflow": "iqflow", "id": "id", "pg": "none"}


@dataclass
class Args(RunArgs):
    n: int = 5
    m: int = 2
    alg: Literal["iqflow", "id", "pg", "all"] = "all"
    episodes: int | None = None
    """default: the SPEC's 25,000 for ER(5,2), 20,000 otherwise"""
    chunk_episodes: int = 250
    eval_period: int = 500
    pg_return: Literal["reward_to_go", "discounted_reward"] = "reward_to_go"
    """what weights each PG agent's log-probabilities: the discounted reward-to-go
    (SPEC §2) or gamma^t r_t, as the paper's public code does (ID models the same rule)"""
    id_outer_weight: Literal["return", "td_error"] = "return"
    """what weights log pi in ID's outer loss: the team's discounted return-to-go (SPEC
    §4 for ER) or a centralised critic's TD error on the team reward (SPEC §4's Cleanup
    rule, a learned baseline)"""
    plots: str = "runs/escape_room"
    merge: tuple[str, ...] = ()
    """JSON files to combine (no training): each algorithm's runs over disjoint seed
    ranges become one result over all seeds; files may hold different algorithms"""


def make_config(args: Args, alg: str):
    overrides = dict(num_seeds=args.seeds, seed=args.seed, first_seed=args.first_seed,
                     matmul_precision=args.matmul_precision,
                     chunk_episodes=args.chunk_episodes,
                     eval_period=args.eval_period)
    if args.episodes is not None:
        overrides["episodes"] = args.episodes
    config = escape_room(args.n, args.m, ALGORITHMS[alg], **overrides)
    config = config.replace(agent=dataclasses.replace(config.agent, return_mode=args.pg_return))
    if hasattr(config.mechanism, "outer_weight"):
        config = config.replace(mechanism=dataclasses.replace(
            config.mechanism, outer_weight=args.id_outer_weight))
    return config


def run_one(args: Args, alg: str, threshold: float) -> dict:
    """{name: figures} of one algorithm's run: one entry, or one per sweep point."""
    config = make_config(args, alg)
    result = run(config, wandb_name=f"er-{args.n}-{args.m}-{alg}",
                 wandb_group=f"er-{args.n}-{args.m}", **run_options(args, alg),
                 sweep=parse_sweep(args.sweep, config))
    return {alg + suffix: figures(args, config, part, threshold)
            for suffix, part in split_result(result)}


def figures(args: Args, config, result, threshold: float) -> dict:
    by_action = {"incentive_by_action": [], "incentive_paid_by_action": [],
                 "actions_taken_by_action": []}  # a run stopped before its first chunk
    if len(result.episodes):
        last = result.episodes > 0.9 * result.episodes[-1]
        paid, taken = incentive_sums(result.metrics, last)
        by_action = {"incentive_by_action": per_action(paid, taken),
                     "incentive_paid_by_action": paid.round(6).tolist(),
                     "actions_taken_by_action": taken.round(6).tolist()}
    return {**run_figures(args, config, result, threshold), **by_action}


def _sum_or_none(values):
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))


def merge(parts: list[dict]) -> dict:
    """One algorithm's result from runs of disjoint seed ranges (`--first-seed`) made
    side by side: the curve's figures recomputed over all seeds, throughput summed."""
    parts = sorted(parts, key=lambda r: r["first_seed"])
    starts = [r["first_seed"] for r in parts]
    ends = [r["first_seed"] + r["seeds"] for r in parts]
    if starts[1:] != ends[:-1]:
        raise ValueError(f"seed ranges {list(zip(starts, ends, strict=True))} are not contiguous")
    if len({tuple(r["eval_episodes"]) for r in parts}) != 1:
        raise ValueError("the runs were evaluated at different episodes; train them as far")
    seeds = np.array([r["seeds"] for r in parts], float)
    returns = np.concatenate([np.asarray(r["eval_return_per_seed"], float) for r in parts], 1)
    weighted = lambda key: sum(w * np.asarray(r[key]) for w, r in zip(seeds, parts, strict=True))
    paid, taken = weighted("incentive_paid_by_action"), weighted("actions_taken_by_action")
    return {
        "episodes": parts[0]["episodes"],
        "episodes_planned": parts[0]["episodes_planned"],
        "seeds": int(seeds.sum()),
        "first_seed": starts[0],
        "interrupted": any(r["interrupted"] for r in parts),
        **summarise(parts[0]["eval_episodes"], returns, parts[0]["threshold"]),
        "incentive_by_action": per_action(paid, taken),
        "incentive_paid_by_action": (paid / seeds.sum()).round(6).tolist(),
        "actions_taken_by_action": (taken / seeds.sum()).round(6).tolist(),
        # side by side, so their rates add up; unknown if any part trained nothing timed
        "episodes_per_s": _sum_or_none(r["episodes_per_s"] for r in parts),
        "env_steps_per_s": _sum_or_none(r["env_steps_per_s"] for r in parts),
        "compile_s": max(r["compile_s"] for r in parts),
        "merged_from": len(parts),
    }


def plot(args: Args, results: dict, optimum: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.plots, exist_ok=True)
    tag = f"er_{args.n}_{args.m}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_return_curves(ax, results)
    ax.axhline(optimum, color="k", lw=0.6, ls="--", label=f"optimum {optimum:g}")
    ax.set_title(f"ER({args.n}, {args.m}): mean and 95% CI across seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"{tag}_returns.png"), dpi=110)
    plt.close(fig)

    paying = {a: r for a, r in results.items()  # with a table: trained at least a chunk
              if not a.startswith("pg") and r["incentive_by_action"]}
    if paying:
        fig, axes = plt.subplots(1, len(paying), figsize=(5 * len(paying), 3.8), squeeze=False)
        for ax, (alg, r) in zip(axes[0], paying.items(), strict=True):
            table = np.array(r["incentive_by_action"], dtype=float)  # [N, A]
            width = 0.25
            for a, name in enumerate(("lever", "start", "door")):
                ax.bar(np.arange(args.n) + (a - 1) * width, np.nan_to_num(table[:, a]), width,
                       label=name)
            ax.set_xlabel("agent")
            ax.set_ylabel("incentive per action taken")
            ax.set_title(f"{alg}: incentives, last 10% of training")
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.plots, f"{tag}_incentives.png"), dpi=110)
        plt.close(fig)


def merge_files(args: Args) -> dict:
    payloads = []
    for path in args.merge:
        with open(path) as f:
            payloads.append(json.load(f))
    shape = {(p["args"]["n"], p["args"]["m"]) for p in payloads}
    if len(shape) != 1:
        raise ValueError(f"these files hold different rooms: {sorted(shape)}")
    rules = {p["args"].get("pg_return", "reward_to_go") for p in payloads}
    if len(rules) != 1:
        raise ValueError(f"these files' PG agents learn by different rules: {sorted(rules)}")
    weights = {p["args"].get("id_outer_weight", "return") for p in payloads
               if "id" in p["algorithms"]}
    if len(weights) > 1:
        raise ValueError(f"these files' ID runs weight their outer loss differently: "
                         f"{sorted(weights)}")
    algs = [a for a in ALGORITHMS if any(a in p["algorithms"] for p in payloads)]
    results = {a: merge([p["algorithms"][a] for p in payloads if a in p["algorithms"]])
               for a in algs}
    seeds = {r["seeds"] for r in results.values()}
    merged_args = {**payloads[0]["args"], "merge": list(args.merge),
                   "seeds": seeds.pop() if len(seeds) == 1 else sorted(seeds)}
    return {"args": merged_args, "optimum": payloads[0]["optimum"], "algorithms": results}


def main(args: Args) -> dict:
    if args.merge:
        payload = merge_files(args)
        args = dataclasses.replace(args, n=payload["args"]["n"], m=payload["args"]["m"],
                                   seeds=payload["args"]["seeds"])
    else:
        args = join_job(args)  # several hosts: before any device is touched
        algs = list(ALGORITHMS) if args.alg == "all" else [args.alg]
        for alg in algs:  # every config and sweep point is checked before anything compiles
            validate(make_config(args, alg))
            parse_sweep(args.sweep, make_config(args, alg))
        optimum = EscapeRoom(args.n, args.m).optimal_return
        results: dict = {}
        for alg in algs:
            ran = run_one(args, alg, threshold=optimum - 1)
            results.update(ran)
            if any(r["interrupted"] for r in ran.values()):
                break
        payload = {"args": dataclasses.asdict(args), "optimum": optimum, "algorithms": results}
    optimum, results = payload["optimum"], payload["algorithms"]
    write_json(args.out, payload)
    plot(args, results, optimum)
    print_learning_table(f"ER({args.n}, {args.m}), optimum {optimum}", results, optimum - 1)
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
