"""Where the IQ-Flow episode step's time goes, beside this machine's dense matmul rate.

    python -m benchmarks.step_profile --n 5 --m 2 --seeds 4 64 --out step.json
    python -m benchmarks.step_profile --env cleanup_7x7 --seeds 64 --out step.json

In one process: the rate of a large f32 matmul (the machine's practical peak), then
for each seed count the whole compiled episode step (rollout, replay, step A, step B,
agents) with the SPEC's K and with K = 1, timed over chunks after the buffer has
passed `start_train`. The matmul FLOPs per seed-episode are counted on the chunk's
jaxpr (every dot_general and convolution, times the length of each scan around it; XLA's cost
analysis counts a loop body once), hence the matmul GFLOP/s reached and its fraction
of the matmul rate.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine_info, write_json
from jaxsim.config import CLEANUP_MAPS, cleanup, escape_room, validate
from jaxsim.train import Experiment, seed_keys


@dataclass
class Args:
    env: str = "escape_room"
    """escape_room (ER(n, m)), cleanup_7x7 or cleanup_10x10"""
    n: int = 5
    m: int = 2
    seeds: tuple[int, ...] = (4, 64)
    unroll: tuple[int, ...] = (20, 1)
    """unrolled critic steps K to time; the SPEC's is 20"""
    chunk_episodes: int = 20
    max_warm_chunks: int = 20
    """chunks run before timing, until step B runs in every seed"""
    timed_chunks: int = 3
    matmul_size: int = 1024
    replay_capacity: int | None = 10_000
    """rows in each seed's buffer (None: the whole run's). Time does not depend on it,
    memory does: 4096 seeds of ER(5,2) with the whole run's 125,000 rows need 300 GB"""
    out: str | None = None
    """written after every row, so a run stopped part-way keeps the rows it timed"""


def matmul_gflops(size: int, repeats: int = 20) -> float:
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def dot_flops(jaxpr) -> float:
    """FLOPs of every dot_general in a (closed) jaxpr, scans counted `length` times,
    both branches of a cond counted (none in the step), while bodies counted once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            contracted = float(np.prod([lhs[d] for d in lhs_contract]))
            total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * contracted
            continue
        if eqn.primitive.name == "conv_general_dilated":
            # Each output element sums kernel window x input features per group.
            kernel = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            window = float(np.prod([kernel[d] for d in spec[1:]]))
            total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * window
            continue
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    total += times * dot_flops(sub)
    return total


def make_config(args: Args, seeds: int):
    if args.env == "escape_room":
        return escape_room(args.n, args.m, "iqflow", num_seeds=seeds,
                           chunk_episodes=args.chunk_episodes)
    maps = [f"cleanup_{m}" for m in CLEANUP_MAPS]
    if args.env not in maps:
        raise ValueError(f"unknown env {args.env!r}; valid: escape_room, {', '.join(maps)}")
    return cleanup(args.env.removeprefix("cleanup_"), "iqflow", num_seeds=seeds,
                   chunk_episodes=args.chunk_episodes, eval_period=args.chunk_episodes,
                   agent_reset_period=0)


def time_step(args: Args, seeds: int, unroll: int) -> dict:
    config = make_config(args, seeds)
    config = config.replace(mechanism=dataclasses.replace(
        config.mechanism, unroll_steps=unroll, replay_capacity=args.replay_capacity))
    experiment = Experiment(config)
    state = jax.jit(jax.vmap(experiment.init))(seed_keys(config))
    chunk = jax.vmap(experiment.run_chunk)
    flops = dot_flops(jax.make_jaxpr(chunk)(state))
    compiled = jax.jit(chunk).lower(state).compile()
    for _ in range(args.max_warm_chunks):  # until start_train steps are stored
        state, metrics = compiled(state)
        if float(np.min(metrics["meta/active"])) == 1.0:
            break
    else:
        raise RuntimeError(f"step B did not start within {args.max_warm_chunks} chunks")
    start = time.perf_counter()
    for _ in range(args.timed_chunks):
        state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    seed_episodes = args.timed_chunks * args.chunk_episodes * seeds
    flops_per = flops / (args.chunk_episodes * seeds)
    return {"seeds": seeds, "unroll_steps": unroll,
            "ms_per_seed_episode": 1000 * seconds / seed_episodes,
            "matmul_gflop_per_seed_episode": flops_per / 1e9,
            "gflops_reached": flops_per * seed_episodes / seconds / 1e9}


def main(args: Args) -> dict:
    peak = matmul_gflops(args.matmul_size)
    rows: list[dict] = []
    for seeds in args.seeds:  # bad input fails before anything is timed
        validate(make_config(args, seeds))
    payload = {"args": dataclasses.asdict(args), **machine_info(), "matmul_gflops": peak,
               "rows": rows}
    try:
        for seeds in args.seeds:
            for unroll in args.unroll:
                row = time_step(args, seeds, unroll)
                row["fraction_of_matmul_rate"] = row["gflops_reached"] / peak
                rows.append(row)
                write_json(args.out, payload)
    except KeyboardInterrupt:
        print(f"interrupted: {len(rows)} of {len(args.seeds) * len(args.unroll)} rows timed")
    name = f"ER({args.n}, {args.m})" if args.env == "escape_room" else args.env
    print(f"\n{name} IQ-Flow episode step on {payload['device']} "
          f"({payload['cpu_count']} cpus); dense {args.matmul_size}^2 f32 matmul: "
          f"{peak:.1f} GFLOP/s")
    print("seeds   K  ms/seed-episode  matmul+conv GFLOP/seed-ep  GFLOP/s  fraction of matmul rate")
    for r in rows:
        print(f"{r['seeds']:>5} {r['unroll_steps']:>3}  {r['ms_per_seed_episode']:15.2f}"
              f"  {r['matmul_gflop_per_seed_episode']:20.3f}  {r['gflops_reached']:7.1f}"
              f"  {r['fraction_of_matmul_rate']:23.2f}")
    return payload


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
