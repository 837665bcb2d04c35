"""Cleanup: the paper's Figs. 7-9 (SPEC §1.3, §1.4, §2, §5).

    python -m benchmarks.cleanup --alg all --seeds 8 --episodes 2000 --out cleanup.json

Trains each algorithm's agents on one map for every seed in one compiled program and
writes the learning curves of the total environment return (mean and 95% interval
across seeds, evaluated every `--eval-period` episodes), the incentive each agent
received over training, and a JSON with the Escape Room benchmark's keys plus
`incentive_mean_per_agent`. Algorithms so far: `ac` (independent actor-critic agents)
and `shared` (the same agents learning from the team's reward, the upper bound).
IQ-Flow and ID on Cleanup are not built yet: asking for them fails before anything
compiles. Ctrl-C stops a run cleanly after the current chunk and writes what it has.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks.common import (RunArgs, plot_return_curves, print_learning_table,
                               run_options, summarise, write_json)
from jaxsim.config import cleanup, validate
from jaxsim.runner import run

ALGORITHMS = ("ac", "shared")
NOT_BUILT = ("iqflow", "id")


@dataclass
class Args(RunArgs):
    map: Literal["7x7", "10x10"] = "7x7"
    alg: Literal["ac", "shared", "all", "iqflow", "id"] = "ac"
    episodes: int = 20000
    chunk_episodes: int = 100
    eval_period: int = 500
    agent_reset_period: int = 1000
    """fresh agents every this many episodes (0: never)"""
    threshold: float | None = None
    """report the first evaluation whose mean return reaches this"""
    plots: str = "runs/cleanup"


def make_config(args: Args, alg: str):
    return cleanup(args.map, alg, num_seeds=args.seeds, seed=args.seed,
                   first_seed=args.first_seed, matmul_precision=args.matmul_precision,
                   episodes=args.episodes, chunk_episodes=args.chunk_episodes,
                   eval_period=args.eval_period, agent_reset_period=args.agent_reset_period)


def algorithms(args: Args) -> list[str]:
    if args.alg in NOT_BUILT:
        raise ValueError(f"--alg {args.alg} on Cleanup is not built yet (issue 4, item 3); "
                         f"available: {', '.join(ALGORITHMS)}, all")
    return list(ALGORITHMS) if args.alg == "all" else [args.alg]


def run_one(args: Args, alg: str) -> dict:
    config = make_config(args, alg)
    result = run(config, wandb_name=f"cleanup-{args.map}-{alg}",
                 wandb_group=f"cleanup-{args.map}", **run_options(args, alg))
    returns = result.eval_metrics.get("eval/return", np.zeros((0, args.seeds)))
    incentive = result.metrics.get("incentive_per_agent")  # [chunks, seeds, N]
    return {
        "episodes": int(result.episodes[-1]) if len(result.episodes) else 0,
        "episodes_planned": config.episodes,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "interrupted": result.interrupted,
        **summarise(result.eval_episodes, returns, args.threshold),
        "train_episodes": [int(e) for e in result.episodes],
        "train_return_mean": (result.metrics["return"].mean(1).round(4).tolist()
                              if len(result.episodes) else []),
        "incentive_per_agent_curve": (incentive.mean(1).round(5).tolist()
                                      if incentive is not None else []),
        "incentive_mean_per_agent": (incentive.mean((0, 1)).round(5).tolist()
                                     if incentive is not None and len(incentive) else []),
        "episodes_per_s": result.timing["episodes_per_s"],
        "env_steps_per_s": result.timing["env_steps_per_s"],
        "compile_s": result.timing["compile_s"],
        "wandb_dir": result.wandb_dir,
    }


def plot(args: Args, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.plots, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_return_curves(ax, results)
    if args.agent_reset_period:
        for x in range(args.agent_reset_period, args.episodes, args.agent_reset_period):
            ax.axvline(x, color="k", lw=0.3, alpha=0.3)
    ax.set_title(f"Cleanup {args.map}: mean and 95% CI across seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"cleanup_{args.map}_returns.png"), dpi=110)
    plt.close(fig)


def main(args: Args) -> dict:
    algs = algorithms(args)
    for alg in algs:  # every config is checked before anything compiles
        validate(make_config(args, alg))
    results: dict = {}
    for alg in algs:
        results[alg] = run_one(args, alg)
        if results[alg]["interrupted"]:
            break
    payload = {"args": dataclasses.asdict(args), "algorithms": results}
    write_json(args.out, payload)
    plot(args, results)
    print_learning_table(f"Cleanup {args.map}", results, args.threshold)
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
