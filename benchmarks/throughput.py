"""Throughput of the full training program at several seed counts, in one process.

    python -m benchmarks.throughput --env ipd --alg iqflow --seeds 1 64 --episodes 300

Each seed count compiles once (compile time reported apart) and then trains for
`--episodes` episodes; figures are seed-episodes and env-steps per second of training
alone, and each count's ratio to the first, so the speed-up of vmapped seeds is
measured on one machine in one run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from typing import Literal

import jax

from benchmarks.common import write_json
from jaxsim.config import MATRIX_GAMES, matrix_game, validate
from jaxsim.runner import run


@dataclass
class Args:
    env: Literal["ipd", "chicken", "stag_hunt"] = "ipd"
    alg: Literal["iqflow", "none"] = "iqflow"
    seeds: tuple[int, ...] = (1, 64)
    episodes: int = 300
    chunk_episodes: int = 30
    out: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] = "disabled"
    wandb_dir: str = "wandb_runs"
    progress: bool = False


def make_config(args: Args, seeds: int):
    assert args.env in MATRIX_GAMES
    return matrix_game(args.env, args.alg, episodes=args.episodes, num_seeds=seeds,
                       chunk_episodes=args.chunk_episodes, eval_period=args.episodes)


def main(args: Args) -> dict:
    configs = [make_config(args, n) for n in args.seeds]
    for config in configs:
        validate(config)
    rows = []
    for config in configs:
        result = run(config, wandb_mode=args.wandb_mode, wandb_dir=args.wandb_dir,
                     wandb_name=f"throughput-{args.env}-{args.alg}-{config.num_seeds}",
                     progress=args.progress)
        rows.append({"seeds": config.num_seeds, **{k: result.timing[k] for k in (
            "episodes_per_s", "env_steps_per_s", "compile_s", "train_s")}})
    base = rows[0]["episodes_per_s"]
    for row in rows:
        row["ratio_to_first"] = row["episodes_per_s"] / base
        row["ms_per_seed_episode"] = 1000.0 / row["episodes_per_s"]
    payload = {"args": dataclasses.asdict(args), "device": str(jax.devices()[0]),
               "machine": platform.machine(), "cpu_count": os.cpu_count(),
               "rows": rows}
    write_json(args.out, payload)
    print(f"\n{args.env} {args.alg} on {payload['device']} ({payload['cpu_count']} cpus)")
    print("seeds  seed-episodes/s  env-steps/s  ms/seed-episode  compile_s  ratio")
    for row in rows:
        print(f"{row['seeds']:>5}  {row['episodes_per_s']:15.1f}  {row['env_steps_per_s']:11.1f}"
              f"  {row['ms_per_seed_episode']:15.3f}  {row['compile_s']:9.1f}"
              f"  {row['ratio_to_first']:5.2f}")
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
