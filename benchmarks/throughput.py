"""Throughput, in one process, at several batch sizes.

    python -m benchmarks.throughput --env ipd --alg iqflow --seeds 1 64 --episodes 300
    python -m benchmarks.throughput --env cleanup_7x7 --seeds 1 64 1024 4096

Matrix games: the full training program. Each seed count compiles once (compile time
reported apart) and then trains for `--episodes` episodes; figures are seed-episodes
and env-steps per second of training alone, and each count's ratio to the first, so
the speed-up of vmapped seeds is measured on one machine in one run.

Cleanup: the environment alone, uniform random actions, observations rendered every
step (summed into a checksum so that none of the rendering can be skipped), episodes
reset inside the compiled scan; `--seeds` are the numbers of environments.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

import envs_jax
from benchmarks.common import machine_info, write_json
from jaxsim.config import MATRIX_GAMES, matrix_game, validate
from jaxsim.runner import run


@dataclass
class Args:
    env: Literal["ipd", "chicken", "stag_hunt", "cleanup_7x7", "cleanup_10x10"] = "ipd"
    alg: Literal["iqflow", "none"] = "iqflow"
    seeds: tuple[int, ...] = (1, 64)
    episodes: int = 300
    chunk_episodes: int = 30
    out: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] = "disabled"
    wandb_dir: str = "wandb_runs"
    progress: bool = False
    min_seconds: float = 1.0
    """Cleanup: repeat the timed call until this long has passed"""
    diagnostics: Literal["on", "off", "both"] = "on"
    """IQ-Flow's per-chunk diagnostics (issue 16); both: each seed count with and
    without them, and the ratio (the price of watching)"""


def make_config(args: Args, seeds: int, diagnostics: bool = True):
    assert args.env in MATRIX_GAMES
    config = matrix_game(args.env, args.alg, episodes=args.episodes, num_seeds=seeds,
                         chunk_episodes=args.chunk_episodes, eval_period=args.episodes)
    if args.alg == "iqflow":
        config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                              diagnostics=diagnostics))
    return config


def random_play(env, num_envs: int, episodes: int):
    """A jitted `f(key) -> checksum` playing `episodes` episodes in each of `num_envs`
    environments with uniform random actions."""

    def one_env(key):
        def episode(total, key):
            reset_key, steps_key = jax.random.split(key)
            state, first = env.reset(reset_key)

            def step(carry, k):
                state, total = carry
                action = jax.random.randint(k, (env.num_agents,), 0, env.num_actions)
                state, ts = env.step(state, action)
                return (state, total + jnp.sum(ts.observation) + jnp.sum(ts.reward)), None

            keys = jax.random.split(steps_key, env.max_steps)
            (_, total), _ = jax.lax.scan(step, (state, total + jnp.sum(first.observation)), keys)
            return total, None

        return jax.lax.scan(episode, jnp.zeros(()), jax.random.split(key, episodes))[0]

    return jax.jit(lambda key: jax.vmap(one_env)(jax.random.split(key, num_envs)).sum())


def env_main(args: Args) -> dict:
    env = envs_jax.make(args.env)
    rows = []
    for num_envs in args.seeds:
        play = random_play(env, num_envs, args.episodes)
        start = time.perf_counter()
        compiled = play.lower(jax.random.PRNGKey(0)).compile()
        compile_s = time.perf_counter() - start
        compiled(jax.random.PRNGKey(1)).block_until_ready()  # warm
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < args.min_seconds:
            compiled(jax.random.PRNGKey(2 + calls)).block_until_ready()
            calls += 1
        seconds = time.perf_counter() - start
        steps = calls * num_envs * args.episodes * env.max_steps
        rows.append({"envs": num_envs, "env_steps_per_s": steps / seconds,
                     "compile_s": compile_s, "seconds": seconds, "calls": calls})
    for row in rows:
        row["ratio_to_first"] = row["env_steps_per_s"] / rows[0]["env_steps_per_s"]
    best = max(rows, key=lambda r: r["env_steps_per_s"])
    payload = {"args": dataclasses.asdict(args), **machine_info(), "rows": rows, "best": best}
    write_json(args.out, payload)
    print(f"\n{args.env}, random actions, observations rendered, on {payload['device']} "
          f"({payload['cpu_count']} cpus)")
    print(" envs  env-steps/s  compile_s  ratio to first")
    for row in rows:
        print(f"{row['envs']:>5}  {row['env_steps_per_s']:11.0f}  {row['compile_s']:9.1f}"
              f"  {row['ratio_to_first']:15.2f}")
    print(f"best: {best['env_steps_per_s']:.0f} env-steps/s at {best['envs']} environments")
    return payload


def main(args: Args) -> dict:
    if args.env.startswith("cleanup"):
        return env_main(args)
    if args.diagnostics != "on" and args.alg != "iqflow":
        raise ValueError("--diagnostics concerns IQ-Flow's diagnostics: use --alg iqflow")
    watch = {"on": (True,), "off": (False,), "both": (True, False)}[args.diagnostics]
    configs = [make_config(args, n, d) for n in args.seeds for d in watch]
    for config in configs:
        validate(config)
    rows = []
    for config in configs:
        result = run(config, wandb_mode=args.wandb_mode, wandb_dir=args.wandb_dir,
                     wandb_name=f"throughput-{args.env}-{args.alg}-{config.num_seeds}",
                     progress=args.progress)
        diagnostics = getattr(config.mechanism, "diagnostics", None)
        rows.append({"seeds": config.num_seeds, "diagnostics": diagnostics,
                     **{k: result.timing[k] for k in ("episodes_per_s", "env_steps_per_s",
                                                      "compile_s", "train_s", "devices")}})
    base = rows[0]["episodes_per_s"]
    for row in rows:
        row["ratio_to_first"] = row["episodes_per_s"] / base
        row["ms_per_seed_episode"] = 1000.0 / row["episodes_per_s"]
    if args.diagnostics == "both":  # with / without, at each seed count
        for watched, bare in zip(rows[::2], rows[1::2], strict=True):
            watched["speed_vs_without_diagnostics"] = (watched["episodes_per_s"]
                                                       / bare["episodes_per_s"])
    payload = {"args": dataclasses.asdict(args), **machine_info(), "rows": rows}
    write_json(args.out, payload)
    print(f"\n{args.env} {args.alg} on {payload['device']} ({payload['cpu_count']} cpus)")
    print("seeds  diagnostics  seed-episodes/s  env-steps/s  ms/seed-episode  compile_s  ratio"
          "  vs without diagnostics")
    for row in rows:
        versus = row.get("speed_vs_without_diagnostics")
        print(f"{row['seeds']:>5}  {str(row['diagnostics']):>11}  {row['episodes_per_s']:15.1f}"
              f"  {row['env_steps_per_s']:11.1f}  {row['ms_per_seed_episode']:15.3f}"
              f"  {row['compile_s']:9.1f}  {row['ratio_to_first']:5.2f}"
              f"  {'-' if versus is None else format(versus, '.3f'):>22}")
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
