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

from benchmarks import driver
from benchmarks.common import (RunArgs, incentive_sums, merge_run_figures, per_action,
                               plot_return_curves, print_learning_table, run_figures,
                               with_incentive_options, with_rows)
from benchmarks.driver import Benchmark
from envs_jax.escape_room import EscapeRoom
from jaxsim.config import escape_room
from jaxsim.runner import run

ALGORITHMS = {"iqflow": "iqflow", "id": "id", "pg": "none"}


@dataclass
class Args(RunArgs):
    n: int = 5
    m: int = 2
    alg: Literal["iqflow", "id", "pg", "all"] = "all"
    episodes: int | None = None
    """default: the recipe's (paper: 25,000 for ER(5,2), 20,000 otherwise; authors:
    25,000 for ID on ER(10,5); id_authors: 100,000)"""
    chunk_episodes: int | None = None
    """default: the recipe's (paper 250, authors and id_authors 100)"""
    eval_period: int | None = None
    """default: the recipe's (paper 500, authors and id_authors 100: SPEC §6 row 11)"""
    pg_return: Literal["reward_to_go", "discounted_reward"] | None = None
    """SPEC §6 row 1: what weights each PG agent's log-probabilities, the discounted
    reward-to-go (SPEC §2) or gamma^t r_t (the authors' code); ID models the same rule.
    Default: the recipe's"""
    agent_optimizer: Literal["sgd", "adam"] | None = None
    """SPEC §6 row 3: the PG agents' optimiser (ID's model of their step stays plain
    SGD). Default: the recipe's (authors: adam for ID's agents on ER(5,2))"""
    v_ignores_obs: bool | None = None
    """SPEC §6 row 2: IQ-Flow's V_env and V_ind as one learned value per agent (the
    authors' code applies their MLP to a fixed vector). Default: the recipe's"""
    id_outer_weight: Literal["return", "td_error", "per_step"] | None = None
    """SPEC §6 row 4: what weights log pi in ID's outer loss: the team's discounted
    return-to-go (SPEC §4), a centralised critic's TD error on the team reward (SPEC
    §4's Cleanup rule, a learned baseline) or gamma^t R_team,t per step (the authors')"""
    id_cost_episode: Literal["new", "rebuilt"] | None = None
    """SPEC §6 row 5: ID's cost on the new episode (SPEC §4) or on the one its inner
    step is rebuilt on (the authors')"""
    id_output_scale: float | None = None
    """SPEC §6 row 6: orthogonal scale of ID's last incentive layer (paper 0.01,
    authors sqrt(2)/1000)"""
    plots: str = "runs/escape_room"


def rows(args: Args) -> dict:
    """{dotted config field: (value or None for the recipe's, the flag)} of every row
    flag."""
    return {"episodes": (args.episodes, "--episodes"),
            "chunk_episodes": (args.chunk_episodes, "--chunk-episodes"),
            "eval_period": (args.eval_period, "--eval-period"),
            "agent.return_mode": (args.pg_return, "--pg-return"),
            "agent.optimizer": (args.agent_optimizer, "--agent-optimizer"),
            "mechanism.values_ignore_obs": (args.v_ignores_obs, "--v-ignores-obs"),
            "mechanism.outer_weight": (args.id_outer_weight, "--id-outer-weight"),
            "mechanism.cost_episode": (args.id_cost_episode, "--id-cost-episode"),
            "mechanism.output_scale": (args.id_output_scale, "--id-output-scale")}


def make_config(args: Args, alg: str, recipe: str = "paper", taken: set | None = None):
    config = escape_room(args.n, args.m, ALGORITHMS[alg], recipe=recipe, num_seeds=args.seeds,
                         seed=args.seed, first_seed=args.first_seed,
                         matmul_precision=args.matmul_precision)
    config = with_incentive_options(config, args, taken)
    config, _ = with_rows(config, rows(args), taken)
    return config


def run_one(args: Args, name: str, alg: str, recipe: str, threshold: float) -> dict:
    """{name: figures} of one algorithm's run: one entry, or one per sweep point."""
    return driver.run_swept(args, make_config(args, alg, recipe), name, f"er-{args.n}-{args.m}",
                            lambda config, result: figures(args, config, result, threshold),
                            run)


def figures(args: Args, config, result, threshold: float) -> dict:
    by_action = {"incentive_by_action": [], "incentive_paid_by_action": [],
                 "actions_taken_by_action": []}  # a run stopped before its first chunk
    if len(result.episodes):
        last = result.episodes > 0.9 * result.episodes[-1]
        paid, taken = incentive_sums(result.episode, last)
        by_action = {"incentive_by_action": per_action(paid, taken),
                     "incentive_paid_by_action": paid.round(6).tolist(),
                     "actions_taken_by_action": taken.round(6).tolist()}
    return {**run_figures(args, config, result, threshold), **by_action}


def merge_run(parts: list[dict]) -> dict:
    """One algorithm's figures from runs of disjoint seed ranges made side by side."""
    seeds = np.array([r["seeds"] for r in parts], float)
    weighted = lambda key: sum(w * np.asarray(r[key]) for w, r in zip(seeds, parts, strict=True))  # noqa: E731
    paid, taken = weighted("incentive_paid_by_action"), weighted("actions_taken_by_action")
    return {**merge_run_figures(parts),
            "incentive_by_action": per_action(paid, taken),
            "incentive_paid_by_action": (paid / seeds.sum()).round(6).tolist(),
            "actions_taken_by_action": (taken / seeds.sum()).round(6).tolist()}


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


def check_merge(payloads: list[dict]) -> None:
    """One room; files from before configs were in the JSON: the flags in their args
    must agree."""
    shape = {(p["args"]["n"], p["args"]["m"]) for p in payloads}
    if len(shape) != 1:
        raise ValueError(f"these files hold different rooms: {sorted(shape)}")
    rules = {p["args"].get("pg_return") or "reward_to_go" for p in payloads
             if "config" not in next(iter(p["algorithms"].values()), {})}
    if len(rules) > 1:
        raise ValueError(f"these files' PG agents learn by different rules: {sorted(rules)}")
    weights = {p["args"].get("id_outer_weight") or "return" for p in payloads
               if "id" in p["algorithms"]
               and "config" not in p["algorithms"]["id"]}
    if len(weights) > 1:
        raise ValueError(f"these files' ID runs weight their outer loss differently: "
                         f"{sorted(weights)}")


def outputs(args: Args, payload: dict) -> None:
    optimum, results = payload["optimum"], payload["algorithms"]
    plot(args, results, optimum)
    print_learning_table(f"ER({args.n}, {args.m}), optimum {optimum}", results, optimum - 1)


BENCHMARK = Benchmark(
    experiment=lambda args: f"--alg {args.alg} on Escape Room",
    algorithms=lambda args: list(ALGORITHMS) if args.alg == "all" else [args.alg],
    make_config=lambda args, alg, recipe, taken, group: make_config(args, alg, recipe, taken),
    rows=rows,
    run=lambda args, group, name, alg, recipe: run_one(
        args, name, alg, recipe, threshold=EscapeRoom(args.n, args.m).optimal_return - 1),
    merge_run=merge_run,
    outputs=outputs,
    header=lambda args: {"optimum": EscapeRoom(args.n, args.m).optimal_return},
    check_merge=check_merge,
    after_merge=lambda args, payload: dataclasses.replace(
        args, n=payload["args"]["n"], m=payload["args"]["m"], seeds=payload["args"]["seeds"]),
)


def main(args: Args) -> dict:
    return driver.main(BENCHMARK, args)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
