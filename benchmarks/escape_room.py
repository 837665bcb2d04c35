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
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks.common import RunArgs, mean_ci95, write_json
from envs_jax.escape_room import EscapeRoom
from jaxsim.config import escape_room, validate
from jaxsim.runner import run

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
    plots: str = "runs/escape_room"


def make_config(args: Args, alg: str):
    overrides = dict(num_seeds=args.seeds, seed=args.seed, chunk_episodes=args.chunk_episodes,
                     eval_period=args.eval_period)
    if args.episodes is not None:
        overrides["episodes"] = args.episodes
    return escape_room(args.n, args.m, ALGORITHMS[alg], **overrides)


def incentive_by_action(metrics: dict, last: np.ndarray) -> np.ndarray:
    """Mean incentive an agent received per time it took each action, over the chunks
    in `last`: `[N, A]`, NaN for actions never taken."""
    paid = metrics["incentive_by_action_sum"][last].mean(axis=(0, 1))  # [N, A]
    taken = (metrics["action_freq"] * metrics["episode_length"][..., None, None])[last]
    taken = taken.mean(axis=(0, 1))
    return np.where(taken > 0, paid / np.maximum(taken, 1e-12), np.nan)


def run_one(args: Args, alg: str, threshold: float) -> dict:
    config = make_config(args, alg)
    result = run(config, wandb_mode=args.wandb_mode, wandb_dir=args.wandb_dir,
                 wandb_name=f"er-{args.n}-{args.m}-{alg}", wandb_group=f"er-{args.n}-{args.m}",
                 progress=args.progress)
    returns = result.eval_metrics["eval/return"]  # [evals, seeds]
    stats = [mean_ci95(row) for row in returns]
    means = np.array([s["mean"] for s in stats])
    reached = np.flatnonzero(means >= threshold)
    last = result.episodes > 0.9 * result.episodes[-1]
    return {
        "episodes": int(result.episodes[-1]) if len(result.episodes) else 0,
        "seeds": args.seeds,
        "interrupted": result.interrupted,
        "eval_episodes": result.eval_episodes.tolist(),
        "eval_return_mean": means.round(4).tolist(),
        "eval_return_ci95": [np.round(s["ci95"], 4).tolist() for s in stats],
        "final_return_mean": float(means[-1]) if len(means) else None,
        "final_return_per_seed": returns[-1].round(3).tolist() if len(means) else [],
        "first_episode_at_or_above": int(result.eval_episodes[reached[0]]) if len(reached)
        else None,
        "threshold": threshold,
        "incentive_by_action": incentive_by_action(result.metrics, last).round(4).tolist(),
        "episodes_per_s": result.timing["episodes_per_s"],
        "env_steps_per_s": result.timing["env_steps_per_s"],
        "compile_s": result.timing["compile_s"],
        "wandb_dir": result.wandb_dir,
    }


def plot(args: Args, results: dict, optimum: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.plots, exist_ok=True)
    tag = f"er_{args.n}_{args.m}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for alg, r in results.items():
        x, mean = np.array(r["eval_episodes"]), np.array(r["eval_return_mean"])
        ci = np.array(r["eval_return_ci95"]).reshape(-1, 2)
        ax.plot(x, mean, label=alg)
        ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.25)
    ax.axhline(optimum, color="k", lw=0.6, ls="--", label=f"optimum {optimum:g}")
    ax.set_xlabel("episode")
    ax.set_ylabel("total environment return (eval)")
    ax.set_title(f"ER({args.n}, {args.m}): mean and 95% CI over {args.seeds} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"{tag}_returns.png"), dpi=110)
    plt.close(fig)

    paying = {a: r for a, r in results.items() if a != "pg"}
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


def main(args: Args) -> dict:
    algs = list(ALGORITHMS) if args.alg == "all" else [args.alg]
    for alg in algs:  # every config is checked before anything compiles
        validate(make_config(args, alg))
    optimum = EscapeRoom(args.n, args.m).optimal_return
    results: dict = {}
    for alg in algs:
        results[alg] = run_one(args, alg, threshold=optimum - 1)
        if results[alg]["interrupted"]:
            break
    payload = {"args": dataclasses.asdict(args), "optimum": optimum, "algorithms": results}
    write_json(args.out, payload)
    plot(args, results, optimum)
    print(f"\nER({args.n}, {args.m}), optimum {optimum}, {args.seeds} seeds")
    print("alg      final_return  first_eval>=%-4g  episodes/s  compile_s" % (optimum - 1))
    for alg, r in results.items():
        first = "-" if r["first_episode_at_or_above"] is None else r["first_episode_at_or_above"]
        final = float("nan") if r["final_return_mean"] is None else r["final_return_mean"]
        print(f"{alg:<8} {final:12.2f}  {first!s:>16}  {r['episodes_per_s']:10.1f}"
              f"  {r['compile_s']:9.1f}")
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
