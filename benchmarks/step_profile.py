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

import contextlib
import dataclasses
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from agents import buffer
from benchmarks.common import machine_info, write_json
from jaxsim.config import CLEANUP_MAPS, cleanup, escape_room, validate
from jaxsim.runner import seed_sharding
from jaxsim.train import Experiment, over_runs, seed_keys
from mechanism import replay


@dataclass
class Args:
    env: str = "escape_room"
    """escape_room (ER(n, m)), cleanup_7x7 or cleanup_10x10"""
    n: int = 5
    m: int = 2
    seeds: tuple[str, ...] = ("4", "64")
    """one row per entry: SEEDS, optionally with ':remat' (recompute the unrolled critic
    steps' activations in the backward pass), ':group=G' (run the seeds G at a time,
    lax.map over groups of a vmap, to fit memory) and ':reference' (the replay's
    distinct rows drawn one by one, as before 2026-12-01, to time today's step beside
    it in one run), e.g. 4096:remat:group=1024"""
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
    shard: bool = True
    """lay the seeds over every visible device, as the runner does (e.g. with
    XLA_FLAGS=--xla_force_host_platform_device_count=2 on a 2-core machine)"""
    small_matmul: tuple[int, int, int, int] | None = None
    """BATCH ROWS INNER COLS of the typical matmul to time beside the large one; default
    the step's first critic layer at 64 seeds: ER(5, 2) 320 64 90 64 (64 seeds x 5
    heads), Cleanup 7x7 128 64 984 64 (64 seeds x 2 heads)"""
    compile_threads: int = 1
    """rows compiled at once before any is timed (XLA compiles outside the GIL)"""
    matmul_precision: str = "default"
    """the configs' matmul precision: default (TF32 on recent NVIDIA GPUs), float32 (the
    CPU's arithmetic), tensorfloat32, bfloat16"""
    trace_dir: str | None = None
    """write a jax.profiler trace of one more chunk per row there, before the timed ones
    (TensorBoard or Perfetto reads it)"""
    out: str | None = None
    """written after every row, so a run stopped part-way keeps the rows it timed"""


@dataclass(frozen=True)
class Row:
    seeds: int
    remat: bool = False
    group: int | None = None  # seeds run at once; None: all
    reference: bool = False  # the replay's distinct rows drawn one by one (the old form)

    def label(self, unroll: int) -> str:
        return (f"{self.seeds}s_K{unroll}" + ("_remat" if self.remat else "")
                + (f"_group{self.group}" if self.group else "")
                + ("_reference" if self.reference else ""))

    @classmethod
    def parse(cls, text: str) -> Row:
        head, *options = text.split(":")
        try:
            seeds, remat, group, reference = int(head), False, None, False
            for option in options:
                if option == "remat":
                    remat = True
                elif option == "reference":
                    reference = True
                elif option.startswith("group="):
                    group = int(option.removeprefix("group="))
                else:
                    raise ValueError(option)
        except ValueError:
            raise ValueError(f"bad row {text!r}: expected SEEDS[:remat][:group=G]"
                             "[:reference], e.g. 4096:remat:group=1024") from None
        if seeds < 1 or (group is not None and not 1 <= group <= seeds):
            raise ValueError(f"bad row {text!r}: need seeds >= 1 and 1 <= group <= seeds")
        return cls(seeds, remat, group, reference)


def matmul_gflops(size: int, repeats: int = 20) -> float:
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def batched_matmul_gflops(batch: int = 320, rows: int = 64, inner: int = 90, cols: int = 64,
                          repeats: int = 200) -> float:
    """The rate of one batched dot of `batch` random [rows x inner] @ [inner x cols]
    products: the step's typical matmul (e.g. ER(5, 2) at 64 seeds: 64 seeds x 5 heads
    of [64 x 90] @ [90 x 64], batch rows by the first layer's inputs)."""
    a_key, b_key = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(a_key, (batch, rows, inner))
    b = jax.random.normal(b_key, (batch, inner, cols))
    f = jax.jit(lambda x, y: jnp.einsum("bij,bjk->bik", x, y))
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.block_until_ready()
    return 2 * batch * rows * inner * cols * repeats / (time.perf_counter() - start) / 1e9


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


def make_config(args: Args, row: Row, unroll: int):
    seeds = row.seeds
    if args.env == "escape_room":
        config = escape_room(args.n, args.m, "iqflow", num_seeds=seeds,
                             chunk_episodes=args.chunk_episodes)
    else:
        maps = [f"cleanup_{m}" for m in CLEANUP_MAPS]
        if args.env not in maps:
            raise ValueError(f"unknown env {args.env!r}; valid: escape_room, "
                             f"{', '.join(maps)}")
        config = cleanup(args.env.removeprefix("cleanup_"), "iqflow", num_seeds=seeds,
                         chunk_episodes=args.chunk_episodes,
                         eval_period=args.chunk_episodes, agent_reset_period=0)
    return config.replace(matmul_precision=args.matmul_precision,
                          mechanism=dataclasses.replace(
                              config.mechanism, unroll_steps=unroll,
                              replay_capacity=args.replay_capacity, remat_unroll=row.remat))


_TRACE_LOCK = threading.Lock()


@contextlib.contextmanager
def distinct_rows_sampler(reference: bool):
    """Trace with the replay's distinct-row sampler of today (or, `reference`, the one
    that drew its rows one by one); the lock keeps the swap to one trace at a time."""
    with _TRACE_LOCK:
        today = replay.sample_distinct_rows
        replay.sample_distinct_rows = (buffer.sample_distinct_rows_one_by_one if reference
                                       else today)
        try:
            yield
        finally:
            replay.sample_distinct_rows = today


def prepare(args: Args, row: Row, unroll: int) -> dict:
    """Trace, count and compile one row's chunk program (no device memory used yet)."""
    config = make_config(args, row, unroll)
    experiment = Experiment(config)
    sharding = seed_sharding(row.seeds) if args.shard else None
    placed = {} if sharding is None else dict(in_shardings=sharding, out_shardings=sharding)
    init = jax.jit(jax.vmap(experiment.init), out_shardings=sharding)
    keys = seed_keys(config)
    abstract = jax.eval_shape(init, keys)
    chunk = over_runs(experiment.run_chunk, row.group)
    with distinct_rows_sampler(row.reference):
        traced = jax.jit(chunk, donate_argnums=0, **placed).trace(abstract)  # traced once
    flops = dot_flops(traced.jaxpr)
    start = time.perf_counter()
    compiled = traced.lower().compile()
    memory = compiled.memory_analysis()
    return {"init": init, "keys": keys, "compiled": compiled, "flops": flops,
            "devices": 1 if sharding is None else sharding.num_devices,
            "compile_s": time.perf_counter() - start,
            "temp_bytes_per_seed": getattr(memory, "temp_size_in_bytes", 0) / row.seeds,
            "state_bytes_per_seed": sum(x.size * x.dtype.itemsize for x in
                                        jax.tree.leaves(abstract)) / row.seeds}


def time_step(args: Args, row: Row, unroll: int, program: dict) -> dict:
    seeds, compiled = row.seeds, program["compiled"]
    state = program["init"](program["keys"])
    for _ in range(args.max_warm_chunks):  # until start_train steps are stored
        state, metrics = compiled(state)
        if float(np.min(metrics["meta/active"])) == 1.0:
            break
    else:
        raise RuntimeError(f"step B did not start within {args.max_warm_chunks} chunks")
    if args.trace_dir:  # one more chunk, traced, outside the timing
        with jax.profiler.trace(os.path.join(args.trace_dir, row.label(unroll))):
            state, metrics = compiled(state)
            jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.timed_chunks):
        state, metrics = compiled(state)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    del state
    seed_episodes = args.timed_chunks * args.chunk_episodes * seeds
    flops_per = program["flops"] / (args.chunk_episodes * seeds)
    return {"ms_per_seed_episode": 1000 * seconds / seed_episodes,
            "seed_episodes_per_s": seed_episodes / seconds,
            "matmul_gflop_per_seed_episode": flops_per / 1e9,
            "gflops_reached": flops_per * seed_episodes / seconds / 1e9}


def main(args: Args) -> dict:
    rows_wanted = [(Row.parse(text), unroll) for text in args.seeds for unroll in args.unroll]
    for row, unroll in rows_wanted:  # bad input fails before anything is compiled
        validate(make_config(args, row, unroll))
    peak = matmul_gflops(args.matmul_size)
    shape = args.small_matmul or ((320, 64, 90, 64) if args.env == "escape_room"
                                  else (128, 64, 984, 64))
    small = batched_matmul_gflops(*shape)
    rows: list[dict] = []
    payload = {"args": dataclasses.asdict(args), **machine_info(), "matmul_gflops": peak,
               "batched_small_matmul": list(shape), "batched_small_matmul_gflops": small,
               "rows": rows}
    write_json(args.out, payload)
    pool = ThreadPoolExecutor(max(1, args.compile_threads))
    interrupted = False
    programs = [pool.submit(prepare, args, row, unroll) for row, unroll in rows_wanted]
    try:
        for index, (row, unroll) in enumerate(rows_wanted):
            result = {"seeds": row.seeds, "unroll_steps": unroll, "remat": row.remat,
                      "group": row.group, "reference_sampler": row.reference}
            try:
                program = programs[index].result()
                programs[index] = None  # the executable goes with this row
                result.update({k: program[k] for k in ("compile_s", "temp_bytes_per_seed",
                                                       "state_bytes_per_seed", "devices")})
                result.update(time_step(args, row, unroll, program))
                result["fraction_of_matmul_rate"] = result["gflops_reached"] / peak
                del program
            except Exception as error:  # out of memory at one size: keep the other rows
                message = str(error)
                if "RESOURCE_EXHAUSTED" not in message and "out of memory" not in message.lower():
                    raise
                result["error"] = message.splitlines()[0][:300]
            rows.append(result)
            write_json(args.out, payload)
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted: {len(rows)} of {len(rows_wanted)} rows timed")
    pool.shutdown(wait=False, cancel_futures=True)
    print_table(args, payload)
    if interrupted:  # compilations still in flight would hold the exit: abandon them
        sys.stdout.flush()
        os._exit(130)
    return payload


def print_table(args: Args, payload: dict) -> None:
    peak, small = payload["matmul_gflops"], payload["batched_small_matmul_gflops"]
    shape = payload["batched_small_matmul"]
    name = f"ER({args.n}, {args.m})" if args.env == "escape_room" else args.env
    print(f"\n{name} IQ-Flow episode step on {payload['device']} x {jax.device_count()} "
          f"({payload['cpu_count']} cpus); dense {args.matmul_size}^2 f32 matmul: "
          f"{peak:.1f} GFLOP/s; {shape[0]} x [{shape[1]}x{shape[2]}]@[{shape[2]}x{shape[3]}] "
          f"batched: {small:.1f} GFLOP/s")
    print("(R: the replay's distinct rows drawn one by one, the reference)")
    print("seeds   remat  group   K  ms/seed-ep  seed-ep/s  GFLOP/seed-ep  GFLOP/s  "
          "fraction  temp MB/seed  compile s")
    for r in payload["rows"]:
        head = (f"{r['seeds']:>5}{'R' if r['reference_sampler'] else ' '} "
                f"{'yes' if r['remat'] else 'no':>5}  {r['group'] or '-':>5} "
                f"{r['unroll_steps']:>3}")
        if "error" in r:
            print(f"{head}  {r['error'][:90]}")
            continue
        print(f"{head}  {r['ms_per_seed_episode']:10.3f}  {r['seed_episodes_per_s']:9.0f}"
              f"  {r['matmul_gflop_per_seed_episode']:13.3f}  {r['gflops_reached']:7.1f}"
              f"  {r['fraction_of_matmul_rate']:8.3f}  {r['temp_bytes_per_seed'] / 1e6:12.1f}"
              f"  {r['compile_s']:9.1f}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
