"""Why IQ-Flow's incentive dies in some seeds: its per-chunk diagnostics, seed by seed.

    python -m benchmarks.incentive_health --env ipd --seeds 64 --episodes 3000 --out FILE
    python -m benchmarks.incentive_health --env cleanup --first-seed 2 --seeds 3 \\
        --episodes 5900 --out FILE      # issue 16: the two seeds that died, and seed 3

Trains IQ-Flow under the preset of `--env` (and `--recipe`, `--variant`, the incentive
flags) with its diagnostics on (`IQFlow.diagnostics`, once per chunk), then, per seed
and agent: whether the seed ends healthy (matrix games: the incentivised payoffs free
of the dilemma in every state; Escape Room and Cleanup: the last evaluated return at or
above `--healthy-return`), the saturation warnings the run raised, and the chunk where
the incentive first became saturated and flat, every action paid alike (the warning's
test without its dilemma condition: "onset"). For each
onset it reports what step B did over the `--window` chunks before it: the norms of the
meta term's and each cost's share of d loss / d eta, the optimiser's step against the
gradient (RMSprop divides the gradient's size out, until it falls below the eps
floor), the fraction of eta at that floor, the pre-activation's mean and the dilemma
and a_env == a_coop fractions, beside the same figures of the healthy seeds over the
same chunks. The JSON keeps every seed's curves at the chunks that end an evaluation
period, and the failing seeds' at every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks.common import RunArgs, join_job, run_options, with_incentive_options, write_json
from jaxsim.checkpoint import config_json
from jaxsim.config import MATRIX_GAMES, cleanup, escape_room, matrix_game, validate
from jaxsim.runner import run
from jaxsim.train import Experiment

@dataclass
class Args(RunArgs):
    env: Literal["ipd", "chicken", "stag_hunt", "escape_room", "cleanup"] = "ipd"
    episodes: int | None = None
    """default: the preset's (matrix 3000, ER(5,2) 25,000, Cleanup 20,000)"""
    n: int = 5
    """Escape Room: agents"""
    m: int = 2
    """Escape Room: agents needed at the lever"""
    map: Literal["7x7", "10x10"] = "7x7"
    healthy_return: float | None = None
    """Escape Room / Cleanup: a seed is healthy if its last evaluation reaches this
    (default: 35 on Cleanup, the shared-reward level; ER: optimum - 1)"""
    window: int = 10
    """chunks before each onset that the report averages"""


def make_config(args: Args):
    recipe = args.recipe[0]
    common = dict(recipe=recipe, num_seeds=args.seeds, seed=args.seed,
                  first_seed=args.first_seed, matmul_precision=args.matmul_precision)
    if args.env in MATRIX_GAMES:
        config = matrix_game(args.env, "iqflow", **common)
    elif args.env == "escape_room":
        config = escape_room(args.n, args.m, "iqflow", **common)
    else:
        config = cleanup(args.map, "iqflow", **common)
    if args.episodes is not None:
        config = config.replace(episodes=args.episodes)
    config = with_incentive_options(config, args)
    if not config.mechanism.diagnostics:
        raise ValueError("--no-diagnostics: this benchmark reads the diagnostics")
    validate(config)
    return config


def healthy_seeds(args: Args, config, result) -> tuple[np.ndarray, dict]:
    """Per seed: healthy or not, and what decided it."""
    if args.env in MATRIX_GAMES:
        from benchmarks.matrix_games import removed, table_probe
        from envs_jax.matrix_games import dilemma_gaps
        tables = table_probe(Experiment(config).mechanism, args.env)(result.state.mechanism)
        payoff = removed(dilemma_gaps(np.asarray(tables["payoff"]))).all(-1)
        q_ind = removed(dilemma_gaps(np.asarray(tables["q_ind"]))).all(-1)
        return payoff, {"payoff_dilemma_removed": payoff.tolist(),
                        "q_dilemma_removed": q_ind.tolist()}
    final = np.asarray(result.eval_metrics["eval/return"][-1])
    if args.healthy_return is not None:
        level = args.healthy_return
    elif args.env == "cleanup":
        level = 35.0
    else:
        level = 10 * (args.n - args.m) - 1  # ER's optimum (the lever pullers get 0) - 1
    return final >= level, {"final_eval_return": final.round(3).tolist(),
                            "healthy_return": level}


def onsets(stuck: np.ndarray) -> np.ndarray:
    """Per run and agent, the first chunk where `stuck` `[chunks, runs, N]` holds
    (-1: never)."""
    first = stuck.argmax(0)
    return np.where(stuck.any(0), first, -1)


def window_figures(diag: dict, chunks: slice, runs, agent: int) -> dict:
    """Medians over `chunks` and `runs` of step B's figures (agent's where per agent)."""
    out = {}
    for name, values in diag.items():
        part = values[chunks][:, runs]
        if part.ndim == 3:
            part = part[..., agent]
        out[name] = float(np.median(part)) if part.size else None
    if out.get("grad_total"):
        out["step_per_grad"] = (out["step_norm"] / out["grad_total"]
                                if out["grad_total"] > 0 else None)
    return out


def analyse(args: Args, config, result) -> dict:
    healthy, basis = healthy_seeds(args, config, result)
    diag = {k[len("diag/"):]: np.asarray(v, np.float64) for k, v in result.metrics.items()
            if k.startswith("diag/")}
    mech = config.mechanism
    steepest = Experiment(config).mechanism.slope(np.zeros(()))[1]  # the activation's peak
    threshold = mech.saturated_slope * steepest
    flat = mech.flat_incentive * mech.incentive_max
    # Saturated and flat (every action paid alike), the alarm's test without the dilemma.
    first = onsets((diag["slope"] < threshold) & (diag["incentive_std"] < flat))
    seeds = [config.first_seed + i for i in range(config.num_seeds)]
    episodes = result.episodes
    good = np.flatnonzero(healthy)
    report = []
    for run_index, seed in enumerate(seeds):
        for agent in range(first.shape[1]):
            onset = int(first[run_index, agent])
            if onset < 0:
                continue
            chunks = slice(max(onset - args.window, 0), onset)
            report.append({
                "seed": seed, "agent": agent, "healthy": bool(healthy[run_index]),
                "onset_episode": int(episodes[onset]),
                "before_onset": window_figures(diag, chunks, [run_index], agent),
                "healthy_seeds_then": window_figures(diag, chunks, good, agent)
                if len(good) else None,
            })
    at_evals = np.isin(episodes, result.eval_episodes)
    failing = np.flatnonzero(~healthy)
    return {
        "env": args.env, "recipe": config.recipe, "variant": config.variant,
        "seeds": seeds, "episodes": int(episodes[-1]) if len(episodes) else 0,
        "interrupted": result.interrupted,
        "healthy": healthy.tolist(), **basis,
        "healthy_fraction": float(healthy.mean()),
        "slope_threshold": threshold, "flat_threshold": flat,
        "alarms": result.alarms,
        "onsets": report,
        "curves_at_evals": {"episodes": episodes[at_evals].tolist(),
                            **{k: v[at_evals].round(6).tolist() for k, v in diag.items()}},
        "failing_seed_curves": {"seeds": [seeds[i] for i in failing],
                                "episodes": episodes.tolist(),
                                **{k: v[:, failing].round(6).tolist() for k, v in diag.items()}},
        "config": config_json(config),
        "episodes_per_s": result.timing["episodes_per_s"],
    }


def print_report(payload: dict) -> None:
    print(f"\nIQ-Flow incentive health on {payload['env']} ({payload['recipe']}, variant "
          f"{payload['variant']}): {sum(payload['healthy'])} of {len(payload['seeds'])} seeds "
          f"healthy after {payload['episodes']} episodes; {len(payload['alarms'])} "
          "saturation warnings")
    print("seed agent healthy onset   logit   meta_grad  cost1_grad cost2_grad step/grad "
          "eps_floor dilemma agree | healthy seeds: logit meta_grad")
    for row in payload["onsets"]:
        b, h = row["before_onset"], row["healthy_seeds_then"] or {}
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{row['seed']:4d} {row['agent']:5d} {str(row['healthy']):>7} "
              f"{row['onset_episode']:6d} {fmt(b['logit_mean'], '7.2f')} "
              f"{fmt(b['grad_meta'], '10.2e')} {fmt(b['grad_cost1'], '10.2e')} "
              f"{fmt(b['grad_cost2'], '10.2e')} {fmt(b.get('step_per_grad'), '9.2e')} "
              f"{fmt(b['eps_floor_fraction'], '9.2f')} {fmt(b['dilemma'], '7.2f')} "
              f"{fmt(b['env_coop_agree'], '5.2f')} | {fmt(h.get('logit_mean'), '7.2f')} "
              f"{fmt(h.get('grad_meta'), '10.2e')}")
    print(f"healthy fraction: {payload['healthy_fraction']:.3f}")


def main(args: Args) -> dict:
    if len(args.recipe) != 1:
        raise ValueError("--recipe: one recipe per run of this benchmark")
    if args.merge:
        raise ValueError("--merge does not apply to the health report: train the seeds "
                         "together (its per-seed curves are read from one run)")
    args = join_job(args)
    config = make_config(args)
    result = run(config, wandb_name=f"health-{args.env}", wandb_group="incentive-health",
                 **run_options(args, f"health-{args.env}"))
    payload = analyse(args, config, result)
    write_json(args.out, payload)
    print_report(payload)
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
