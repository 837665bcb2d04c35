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

from benchmarks.common import (RunArgs, check_runs, incentive_sums, join_job, per_action,
                               plot_return_curves, print_learning_table, run_figures, run_names,
                               run_options, summarise, with_incentive_options, with_rows,
                               write_json)
from envs_jax.escape_room import EscapeRoom
from jaxsim.config import escape_room
from jaxsim.runner import run
from jaxsim.sweep import parse_sweep, split_result

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
    merge: tuple[str, ...] = ()
    """JSON files to combine (no training): each algorithm's runs over disjoint seed
    ranges become one result over all seeds; files may hold different algorithms"""


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
    config = make_config(args, alg, recipe)
    result = run(config, wandb_name=f"er-{args.n}-{args.m}-{name}",
                 wandb_group=f"er-{args.n}-{args.m}", **run_options(args, name),
                 sweep=parse_sweep(args.sweep, config))
    return {name + suffix: figures(args, part.config, part, threshold)
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
    config = parts[0].get("config")
    return {
        "recipe": parts[0].get("recipe", "paper"),
        "config": config and {**config, "num_seeds": int(seeds.sum()), "first_seed": starts[0]},
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


def _without_seeds(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("num_seeds", "first_seed")}


def merge_files(args: Args) -> dict:
    payloads = []
    for path in args.merge:
        with open(path) as f:
            payloads.append(json.load(f))
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
    algs = list(dict.fromkeys(a for p in payloads for a in p["algorithms"]))
    for alg in algs:  # runs of one name must be one config but for their seeds
        recipes = {p["algorithms"][alg].get("recipe", "paper") for p in payloads
                   if alg in p["algorithms"]}  # files from before recipes hold paper runs
        if len(recipes) > 1:
            raise ValueError(f"these files' {alg} runs are of different recipes: "
                             f"{sorted(recipes)}")
        configs = {json.dumps(_without_seeds(p["algorithms"][alg]["config"]), sort_keys=True)
                   for p in payloads if "config" in p["algorithms"].get(alg, {})}
        if len(configs) > 1:
            raise ValueError(f"these files' {alg} runs have different configs (recipe or "
                             "rows): merge only the seeds of one run")
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
        names = run_names(args, algs)
        check_runs(args, names, make_config, rows(args), f"--alg {args.alg} on Escape Room")
        optimum = EscapeRoom(args.n, args.m).optimal_return
        results: dict = {}
        for name, alg, recipe in names:
            ran = run_one(args, name, alg, recipe, threshold=optimum - 1)
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
