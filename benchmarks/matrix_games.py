"""Iterated matrix games: IQ-Flow removes the social dilemma (paper Figs. 2-4).

    python -m benchmarks.matrix_games --game all --alg both --seeds 64 --episodes 3000 \
        --out benchmarks/results/matrix_games.json

For every game and algorithm it trains all seeds in one compiled program and reports
the cooperation rate over the last 10% of episodes, whether the incentivised one-step
payoffs (r_env + r_inc) and IQ-Flow's Q_ind values satisfy T < R and P < S in every
state at the end, and throughput. It draws the payoff and Q tables after 30, 210, 390,
570 and 750 episodes and the R - T / S - P curves over training (PNG and text).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import driver
from benchmarks.common import (RunArgs, sum_or_none, mean_ci95, run_options, seed_weighted,
                               with_incentive_options, with_rows)
from benchmarks.driver import Benchmark
from jaxsim.checkpoint import config_json
from envs_jax.matrix_games import PAYOFFS, STATE_NAMES, dilemma_gaps, state_observation
from jaxsim.config import MATRIX_GAMES, matrix_game
from jaxsim.runner import run
from mechanism.iqflow import IQFlow

SNAPSHOTS = (30, 210, 390, 570, 750)
JOINT_ACTIONS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int32)


@dataclass
class Args(RunArgs):
    game: Literal["ipd", "chicken", "stag_hunt", "all"] = "all"
    alg: Literal["iqflow", "none", "both"] = "both"
    episodes: int = 3000
    episode_length: int = 5
    chunk_episodes: int = 30
    eval_period: int = 300
    lr_incentive: float | None = None
    """override IQ-Flow's incentive learning rate (SPEC: 3e-3)"""
    pg_return: Literal["reward_to_go", "discounted_reward"] | None = None
    """SPEC §6 row 1: the PG agents' step weights, reward-to-go (SPEC §2) or gamma^t r_t
    (the authors' code). Default: the recipe's"""
    v_ignores_obs: bool | None = None
    """SPEC §6 row 2: IQ-Flow's V_env and V_ind as one learned value per agent (the
    authors' code). Default: the recipe's"""
    plots: str = "runs/matrix_games"
    """folder for the PNG and text tables (the committed results live in benchmarks/results)"""


# --- reading tables out of a trained mechanism -------------------------------------------

def table_probe(mechanism: IQFlow, game: str):
    """A jitted `state -> tables` over seeds. Every table is `[seeds, state, a0, a1,
    player]`: the incentivised payoff r_env + r_inc, and Q_ind / Q_env of each player
    read at its own action given the other's (the paper's Figs. 2-3), and Q_coop's the
    same way (the team's value; its greedy action is step B's a_coop)."""
    obs = jax.vmap(state_observation)(jnp.arange(5))  # [5, 2, 5]
    obs = jnp.repeat(obs, 4, axis=0)  # [20, 2, 5]: state-major, then joint action
    action = jnp.tile(jnp.asarray(JOINT_ACTIONS), (5, 1))  # [20, 2]
    payoff = jnp.asarray(PAYOFFS[game])  # [a0, a1, player]

    def own_action_table(q):  # [20, player, own action] -> [5, a0, a1, player]
        own = jnp.take_along_axis(q, action[:, :, None], axis=-1)[..., 0]
        return own.reshape(5, 2, 2, 2)

    def tables(mech_state):
        incentive = mechanism.incentives(mech_state.eta, obs, action).reshape(5, 2, 2, 2)
        return {
            "payoff": payoff[None] + incentive,
            "q_ind": own_action_table(mechanism.critic_ind.q_values(mech_state.ind.q, obs, action)),
            "q_env": own_action_table(mechanism.critic_env.q_values(mech_state.env.q, obs, action)),
            "q_coop": own_action_table(
                mechanism.critic_coop.q_values(mech_state.coop.q, obs, action)),
        }

    return jax.jit(jax.vmap(tables))


def removed(gaps: np.ndarray) -> np.ndarray:
    """True where R - T > 0 and S - P > 0 for both players: gaps `[..., player, 2]`."""
    return np.all(gaps > 0, axis=(-1, -2))


def dilemma_summary(final_table: np.ndarray) -> dict:
    """Fraction of seeds whose table has T < R and P < S in every state (and per
    state), plus each seed's tightest margin, so failures can be traced."""
    gaps = dilemma_gaps(final_table)  # [seeds, state, player, 2]
    per_state = removed(gaps)  # [seeds, state]
    return {
        "all_states": float(per_state.all(-1).mean()),
        "per_state": {name: float(per_state[:, s].mean()) for s, name in enumerate(STATE_NAMES)},
        "seed_min_margin": gaps.min(axis=(-1, -2, -3)).round(4).tolist(),
    }


# --- one game, one algorithm ---------------------------------------------------------------

def run_one(args: Args, game: str, alg: str, recipe: str = "paper", name: str | None = None
            ) -> dict:
    name = name or alg
    config = make_config(args, game, alg, recipe)
    if len(args.recipe) > 1:  # each recipe's tables and plots in a folder of its own
        args = dataclasses.replace(args, plots=os.path.join(args.plots, recipe))
    if alg == "iqflow":
        from jaxsim.train import Experiment

        probe = table_probe(Experiment(config).mechanism, game)

        def on_chunk(state, episode):
            return jax.device_get(probe(state.mechanism))
    else:
        on_chunk = None

    result = run(config, wandb_name=f"matrix-{game}-{name}", wandb_group=f"matrix-{game}",
                 on_chunk=on_chunk, **run_options(args, f"{game}-{name}",
                                                           fresh_if_missing=True))
    return figures(args, game, alg, config, result)


def figures(args: Args, game: str, alg: str, config, result) -> dict:
    """One run's JSON figures; IQ-Flow's tables and plots are written on the way."""
    seeds, first_seed = args.seeds, args.first_seed
    if result.timing.get("processes", 1) > 1:  # this host's contiguous share of the seeds
        local = result.timing["local_runs"]
        seeds, first_seed = len(local), args.first_seed + local[0]
    summary = {
        "recipe": config.recipe,
        "variant": config.variant,
        "config": config_json(config),
        "alarms": result.alarms,  # IQ-Flow's saturation warnings (issue 16)
        "episodes": int(result.episodes[-1]) if len(result.episodes) else 0,
        "episodes_planned": config.episodes,
        "seeds": seeds,
        "first_seed": first_seed,
        "interrupted": result.interrupted,
        "episodes_per_s": result.timing["episodes_per_s"],
        "env_steps_per_s": result.timing["env_steps_per_s"],
        "compile_s": result.timing["compile_s"],
        "wandb_dir": result.wandb_dir,
    }
    if not len(result.eval_episodes):  # stopped before its first evaluation
        return summary
    coop = result.episode.action_freq[..., 0].mean(-1)  # [chunks, seeds]
    last = result.episodes > 0.9 * result.episodes[-1]
    final_eval = result.eval_metrics["eval/return"][-1]
    summary.update({
        "coop_rate": mean_ci95(coop[last].mean(0)),
        "coop_rate_per_seed": coop[last].mean(0).round(4).tolist(),
        "final_eval_return": mean_ci95(final_eval),
        "final_eval_return_per_seed": np.round(final_eval, 4).tolist(),
        "coop_rate_curve": {"episodes": result.episodes.tolist(),
                            "mean": coop.mean(-1).round(4).tolist()},
    })
    if alg == "iqflow":
        table_rows = [(episode, tables) for episode, tables in result.probes]
        if not table_rows:  # resumed from a checkpoint written before they were saved
            print(f"{game}: no tables were read after the chunks of this run (a checkpoint "
                  "from before they travelled in it): rerun it for them", file=sys.stderr)
            return summary
        write_tables_and_plots(args, game, table_rows, result.episodes, coop)
    else:
        original = np.broadcast_to(PAYOFFS[game], (seeds, 5, 2, 2, 2))
        table_rows = [(episode, {"payoff": original}) for episode in result.episodes]
    final = table_rows[-1][1]
    return {
        **summary,
        # Each seed's final tables `[seed, state, a0, a1, player]`, to trace failures.
        "final_tables": {k: np.asarray(v).round(4).tolist() for k, v in final.items()},
        **dilemma_figures(final),
    }


def dilemma_figures(final: dict) -> dict:
    """Whether the final payoff (and IQ-Flow's Q_ind) tables `[seed, ...]` keep the
    dilemma: the fraction of seeds free of it everywhere, per state, each seed's margin."""
    out = {"q_dilemma_removed": None}  # no Q tables: no mechanism
    for kind, prefix in (("payoff", "payoff"), ("q_ind", "q")):
        if kind in final:
            summary = dilemma_summary(np.asarray(final[kind]))
            out[f"{prefix}_dilemma_removed"] = summary["all_states"]
            out[f"{prefix}_dilemma_removed_per_state"] = summary["per_state"]
            out[f"{prefix}_seed_min_margin"] = summary["seed_min_margin"]
    return out


def rows(args: Args) -> dict:
    """{dotted config field: (value or None for the recipe's, the flag)}."""
    return {"agent.return_mode": (args.pg_return, "--pg-return"),
            "mechanism.values_ignore_obs": (args.v_ignores_obs, "--v-ignores-obs"),
            "mechanism.lr_incentive": (args.lr_incentive, "--lr-incentive")}


def make_config(args: Args, game: str, alg: str, recipe: str = "paper",
                taken: set | None = None):
    config = matrix_game(
        game, alg, recipe=recipe, episodes=args.episodes, num_seeds=args.seeds, seed=args.seed,
        first_seed=args.first_seed, matmul_precision=args.matmul_precision,
        chunk_episodes=args.chunk_episodes, eval_period=args.eval_period,
        env_params={"episode_length": args.episode_length},
    )
    config = with_incentive_options(config, args, taken)
    config, _ = with_rows(config, rows(args), taken)
    return config


# --- figures -----------------------------------------------------------------------------

def snapshot_rows(table_rows, wanted=SNAPSHOTS):
    by_episode = dict(table_rows)
    return [(e, by_episode[e]) for e in wanted if e in by_episode]


def format_tables(game: str, table_rows) -> str:
    lines = [f"# {game}: seed-mean tables, rows = player 0's action (C, D), "
             "columns = player 1's action (C, D); each cell (player 0, player 1)"]
    snaps = snapshot_rows(table_rows) + [table_rows[-1]]
    for kind in ("payoff", "q_env", "q_ind", "q_coop"):
        for episode, tables in snaps:
            if kind not in tables:  # Q_coop: not read by runs from before it was
                continue
            mean = np.asarray(tables[kind]).mean(0)
            lines.append(f"\n## {kind} after {episode} episodes")
            for s, name in enumerate(STATE_NAMES):
                cells = [[f"({mean[s, a0, a1, 0]:6.2f},{mean[s, a0, a1, 1]:6.2f})"
                          for a1 in range(2)] for a0 in range(2)]
                lines.append(f"{name:>5}: C {'  '.join(cells[0])}")
                lines.append(f"{'':>5}  D {'  '.join(cells[1])}")
    return "\n".join(lines) + "\n"


def dilemma_curves(table_rows) -> dict[str, np.ndarray]:
    """R - T and S - P of every seed over training: `[rows, seeds, state, player, 2]`."""
    return {kind: np.stack([dilemma_gaps(t[kind]) for _, t in table_rows])
            for kind in ("payoff", "q_ind")}


def format_curves(game: str, episodes, curves) -> str:
    lines = [f"# {game}: seed-mean R - T and S - P of player 0 over training; "
             "both > 0 in a state means cooperating is greedy there"]
    for kind, gaps in curves.items():
        mean = gaps.mean(1)
        header = "  ".join(f"{name + ' R-T':>9} {name + ' S-P':>9}" for name in STATE_NAMES)
        lines += [f"\n## {kind}", f"{'episode':>7}  {header}"]
        for row, episode in enumerate(episodes):
            values = "  ".join(f"{mean[row, s, 0, 0]:9.3f} {mean[row, s, 0, 1]:9.3f}"
                               for s in range(len(STATE_NAMES)))
            lines.append(f"{episode:>7}  {values}")
    return "\n".join(lines) + "\n"


def write_tables_and_plots(args: Args, game: str, table_rows, episodes, coop) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.plots, exist_ok=True)
    with open(os.path.join(args.plots, f"{game}_tables.txt"), "w") as handle:
        handle.write(format_tables(game, table_rows))

    snaps = snapshot_rows(table_rows)
    original = np.asarray(PAYOFFS[game])
    for kind, title in (("payoff", "r_env + r_inc"), ("q_ind", "Q_ind")):
        columns = [("original" if kind == "payoff" else "Q_env (final)",
                    original if kind == "payoff" else
                    np.asarray(table_rows[-1][1]["q_env"]).mean(0))]
        columns += [(f"{e} ep", np.asarray(t[kind]).mean(0)) for e, t in snaps]
        fig, axes = plt.subplots(5, len(columns), figsize=(2.1 * len(columns), 9.5),
                                 squeeze=False)
        for c, (label, table) in enumerate(columns):
            for s, name in enumerate(STATE_NAMES):
                cell = table if table.ndim == 3 else table[s]
                ax = axes[s, c]
                ax.imshow(cell[..., 0], cmap="viridis")
                for a0 in range(2):
                    for a1 in range(2):
                        ax.text(a1, a0, f"{cell[a0, a1, 0]:.2f}", ha="center", va="center",
                                color="w", fontsize=9)
                ax.set_xticks([0, 1], ["C", "D"])
                ax.set_yticks([0, 1], ["C", "D"])
                if s == 0:
                    ax.set_title(label, fontsize=9)
                if c == 0:
                    ax.set_ylabel(name)
        fig.suptitle(f"{game}: player 0 {title}, seed mean ({args.seeds} seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(args.plots, f"{game}_{kind}_tables.png"), dpi=110)
        plt.close(fig)

    plot_dilemma_curves(args, game, table_rows, episodes, coop)


def plot_dilemma_curves(args: Args, game: str, table_rows, episodes, coop) -> None:
    """R - T and S - P over training, for the payoffs and for Q_ind (paper Fig. 4)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 6, figsize=(20, 6.5), squeeze=False)
    eps = np.array([e for e, _ in table_rows])
    curves = dilemma_curves(table_rows)
    with open(os.path.join(args.plots, f"{game}_dilemma_curves.txt"), "w") as handle:
        handle.write(format_curves(game, eps, curves))
    for row, kind in enumerate(("payoff", "q_ind")):
        gaps = curves[kind]
        for s, name in enumerate(STATE_NAMES):
            ax = axes[row, s]
            for g, label in enumerate(("R - T", "S - P")):
                series = gaps[:, :, s, 0, g]
                mean = series.mean(1)
                half = 1.96 * series.std(1) / np.sqrt(series.shape[1])
                ax.plot(eps, mean, label=label)
                ax.fill_between(eps, mean - half, mean + half, alpha=0.25)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_title(f"{kind} {name} (player 0)", fontsize=9)
            ax.set_xlabel("episode")
        axes[row, 0].legend(fontsize=8)
    ax = axes[0, 5]
    ax.plot(episodes, coop.mean(-1))
    ax.set_title("cooperation rate", fontsize=9)
    ax.set_ylim(0, 1)
    axes[1, 5].axis("off")
    fig.suptitle(f"{game}: R - T and S - P over training (mean, 95% CI over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, f"{game}_dilemma_curves.png"), dpi=100)
    plt.close(fig)


# --- entry point ---------------------------------------------------------------------------

def merge_run(parts: list[dict]) -> dict:
    """One game's run of one algorithm from runs of disjoint seed ranges: every
    seed's figures recomputed (the tables drawn over training are each file's own)."""
    if any("final_eval_return_per_seed" not in r for r in parts):
        raise ValueError("a file predates per-seed evaluation returns in the matrix-game "
                         "JSON: rerun it to merge")
    if len({tuple(r["coop_rate_curve"]["episodes"]) for r in parts}) != 1:
        raise ValueError("the runs trained different chunks; train them as far")
    seeds = sum(r["seeds"] for r in parts)
    coop = np.concatenate([r["coop_rate_per_seed"] for r in parts])
    final_eval = np.concatenate([r["final_eval_return_per_seed"] for r in parts])
    tables = {k: np.concatenate([r["final_tables"][k] for r in parts])  # the tables all
              for k in parts[0]["final_tables"]                           # parts hold
              if all(k in r["final_tables"] for r in parts)}
    merged = {**parts[0], "seeds": seeds, "first_seed": parts[0]["first_seed"],
              "config": {**parts[0]["config"], "num_seeds": seeds},
              "interrupted": any(r["interrupted"] for r in parts),
              "alarms": [a for r in parts for a in r["alarms"]],
              "coop_rate": mean_ci95(coop), "coop_rate_per_seed": coop.tolist(),
              "final_eval_return": mean_ci95(final_eval),
              "final_eval_return_per_seed": final_eval.tolist(),
              "final_tables": {k: v.tolist() for k, v in tables.items()},
              "coop_rate_curve": {"episodes": parts[0]["coop_rate_curve"]["episodes"],
                                  "mean": seed_weighted([{**r, "c": r["coop_rate_curve"]["mean"]}
                                                         for r in parts], "c").round(4).tolist()},
              "episodes_per_s": sum_or_none(r["episodes_per_s"] for r in parts),
              "env_steps_per_s": sum_or_none(r["env_steps_per_s"] for r in parts),
              "compile_s": max(r["compile_s"] or 0.0 for r in parts), "wandb_dir": None}
    return {**merged, **dilemma_figures(tables)}


def check_args(args: Args) -> None:
    if args.sweep:
        raise ValueError("--sweep is wired into benchmarks.escape_room and benchmarks.cleanup; "
                         "the matrix-game tables are per run: give each value its own run")


def algorithms(args: Args) -> list[str]:
    check_args(args)
    return ["iqflow", "none"] if args.alg == "both" else [args.alg]


BENCHMARK = Benchmark(
    experiment=lambda args: f"--alg {args.alg} on the matrix games",
    algorithms=algorithms,
    make_config=lambda args, alg, recipe, taken, game: make_config(args, game, alg, recipe,
                                                                   taken),
    rows=rows,
    run=lambda args, game, name, alg, recipe: {name: run_one(args, game, alg, recipe, name)},
    merge_run=merge_run,
    outputs=lambda args, payload: print_summary(payload),
    groups=lambda args: list(MATRIX_GAMES if args.game == "all" else (args.game,)),
    results_key="games",
)


def main(args: Args) -> dict:
    return driver.main(BENCHMARK, args)


def print_summary(results: dict) -> None:
    width = max([7, *(len(a) for algs in results["games"].values() for a in algs)])
    print(f"\ngame       {'alg':<{width}} coop_rate [95% CI]        payoff_removed  q_removed  "
          "episodes/s  env_steps/s  compile_s")
    for game, algs in results["games"].items():
        for alg, r in algs.items():
            if "coop_rate" not in r:  # stopped before its first evaluation
                print(f"{game:<10} {alg:<{width}} stopped after {r['episodes']} episodes")
                continue
            lo, hi = r["coop_rate"]["ci95"]
            rate = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            q = rate(r.get("q_dilemma_removed"), ".2f")  # none without a mechanism or tables
            payoff = rate(r.get("payoff_dilemma_removed"), ".2f")
            print(f"{game:<10} {alg:<{width}} {r['coop_rate']['mean']:.3f} [{lo:.3f}, {hi:.3f}]"
                  f"     {payoff:<4}            {q:<9}  "
                  f"{rate(r['episodes_per_s'], '10.1f'):>10}  "
                  f"{rate(r['env_steps_per_s'], '11.1f'):>11}  {rate(r['compile_s'], '.1f')}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
