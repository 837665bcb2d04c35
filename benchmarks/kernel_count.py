"""How many kernels one IQ-Flow episode step launches, read from the compiled program.

    python -m benchmarks.kernel_count --env cleanup_7x7 --seeds 64 --out kernels.json

The chunk program of `benchmarks.step_profile` (the same config, rollout, replay,
step A, step B and the agents' updates) is compiled for this machine's backend and its
optimised HLO is walked: each fusion, library call (a matmul, a convolution) and
unfused op counts as one kernel, a while loop's body counts its known trip count
times. Divided by the episodes in a chunk, that is the kernels launched per episode
step, whatever the number of seeds (the seeds are inside each kernel). Each while
iteration also counts: without command buffers, a GPU ends every iteration by copying
the loop's predicate to the host.

On the CPU the counts are those of XLA's CPU fusion, an estimate of the GPU's shape
(the GPU fuses differently and calls cuBLAS and cuDNN for its matmuls and convolutions);
run on a GPU, the same command counts the GPU's own program.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import jax

from benchmarks.common import machine_info, write_json
from benchmarks.step_profile import Args as StepArgs
from benchmarks.step_profile import Row, distinct_rows_sampler, make_config
from jaxsim.config import validate
from jaxsim.runner import seed_sharding
from jaxsim.train import Experiment, over_runs, seed_keys

# Ops that launch nothing: they name, pack or unpack buffers, or only steer control.
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
        "opt-barrier", "add-dependency", "domain", "partition-id", "replica-id",
        "while", "call", "conditional"}
MATMULS = ("dot", "convolution")
HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclass
class Instruction:
    name: str
    shape: str
    opcode: str
    rest: str

    def called(self, key: str) -> list[str]:
        match = re.search(key + r"=\{?([^,}]*(?:,\s*%[\w.\-]+)*)\}?", self.rest)
        return [] if match is None else re.findall(r"%([\w.\-]+)", match.group(1))

    def library_target(self) -> str | None:
        match = re.search(r'custom_call_target="([^"]+)"', self.rest)
        return None if match is None else match.group(1)


def parse_hlo(text: str) -> tuple[dict[str, list[Instruction]], str]:
    """The computations of an HLO module's text, each a list of instructions, and the
    entry computation's name."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = HEADER.match(line)
        if header and not line.startswith(" "):
            current = computations.setdefault(header.group(2), [])
            entry = header.group(2) if header.group(1) else entry
            continue
        if line.startswith("}"):
            current = None
            continue
        instruction = INSTRUCTION.match(line) if current is not None else None
        if instruction:
            current.append(Instruction(*instruction.groups()))
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry


@dataclass
class Counts:
    kernels: float = 0.0
    loop_iterations: float = 0.0
    matmuls: float = 0.0
    by_opcode: Counter = field(default_factory=Counter)
    matmul_shapes: Counter = field(default_factory=Counter)
    loops: list = field(default_factory=list)  # (op_name, trip count, times entered)
    by_loop: Counter = field(default_factory=Counter)  # kernels by innermost loop


def count(computations: dict, name: str, times: float, out: Counts, depth: int = 0,
          where: str = "(outside any loop)"):
    """Add the kernels that running computation `name` `times` times launches; `where`
    names the innermost loop around it."""
    for op in computations[name]:
        if op.opcode == "while":
            trips = TRIP.search(op.rest)
            if trips is None:
                raise ValueError(f"while {op.name} has no known trip count")
            n = int(trips.group(1))
            where_ = OP_NAME.search(op.rest)
            label = f"{where_.group(1) if where_ else op.name} x{n}"
            out.loops.append((label, n, times, depth))
            out.loop_iterations += times * n
            count(computations, op.called("body")[0], times * n, out, depth + 1, label)
            count(computations, op.called("condition")[0], times * (n + 1), out, depth + 1,
                  label)
        elif op.opcode == "call":
            count(computations, op.called("to_apply")[0], times, out, depth, where)
        elif op.opcode == "conditional":  # the most expensive branch, as an upper bound
            branches = op.called("branch_computations") or (
                op.called("true_computation") + op.called("false_computation"))
            alone = [Counts() for _ in branches]
            for branch, sub in zip(branches, alone, strict=True):
                count(computations, branch, times, sub, depth + 1, where)
            _merge(out, max(alone, key=lambda c: c.kernels))
        elif op.opcode not in FREE:
            out.kernels += times
            out.by_opcode[op.opcode] += times
            out.by_loop[where] += times
            if is_matmul(op):
                out.matmuls += times
                # A library call's result is a tuple with its workspace: the first shape.
                first = re.match(r"\(?\s*([\w]+\[[^\]]*\])", op.shape)
                out.matmul_shapes[first.group(1) if first else op.shape] += times


def is_matmul(op: Instruction) -> bool:
    """A dot or convolution: XLA's own op, a library call (cuBLAS "__cublas$gemm",
    cuDNN convolutions) or a GPU fusion emitted around one (Triton GEMM, cuDNN)."""
    if op.opcode in MATMULS:
        return True
    words = ("gemm", "matmul", "conv", "dot", "cudnn")
    target = op.library_target()
    if op.opcode == "custom-call" and target:
        return any(k in target.lower() for k in words)
    if op.opcode == "fusion" and "kind=kCustom" in op.rest:
        kind = re.search(r'"kind":"([^"]+)"', op.rest)
        return kind is not None and any(k in kind.group(1).lower() for k in words)
    return False


def _merge(into: Counts, other: Counts):
    into.kernels += other.kernels
    into.loop_iterations += other.loop_iterations
    into.matmuls += other.matmuls
    into.by_opcode.update(other.by_opcode)
    into.matmul_shapes.update(other.matmul_shapes)
    into.loops.extend(other.loops)
    into.by_loop.update(other.by_loop)


def kernels_per_episode(hlo_text: str, episodes: int) -> dict:
    """The counts of one compiled chunk of `episodes` episode steps, per episode."""
    computations, entry = parse_hlo(hlo_text)
    counts = Counts()
    count(computations, entry, 1.0, counts)
    per = 1.0 / episodes
    return {"kernels": counts.kernels * per,
            "loop_iterations": counts.loop_iterations * per,
            "matmul_kernels": counts.matmuls * per,
            "by_opcode": {k: v * per for k, v in counts.by_opcode.most_common()},
            "matmul_shapes": {k: v * per for k, v in counts.matmul_shapes.most_common(12)},
            "by_loop": {k: v * per for k, v in counts.by_loop.most_common(20)},
            "loops": [{"op_name": name, "trip_count": n, "entered_per_episode": t * per,
                       "depth": depth} for name, n, t, depth in counts.loops]}


@dataclass
class Args:
    env: str = "cleanup_7x7"
    """escape_room (ER(n, m)), cleanup_7x7 or cleanup_10x10"""
    n: int = 5
    m: int = 2
    seeds: tuple[str, ...] = ("64", "64:reference")
    """rows as in benchmarks.step_profile: SEEDS[:remat][:group=G][:reference]"""
    unroll: tuple[int, ...] = (20, 1)
    """unrolled critic steps K; the SPEC's is 20"""
    chunk_episodes: int = 5
    hlo_dir: str | None = None
    """also write each row's optimised HLO text there"""
    out: str | None = None


def step_config(args: Args, row: Row, unroll: int):
    step_args = StepArgs(env=args.env, n=args.n, m=args.m, chunk_episodes=args.chunk_episodes)
    return make_config(step_args, row, unroll)


def compiled_chunk_text(args: Args, row: Row, unroll: int) -> str:
    config = step_config(args, row, unroll)
    experiment = Experiment(config)
    sharding = seed_sharding(row.seeds)
    init = jax.jit(jax.vmap(experiment.init), out_shardings=sharding)
    abstract = jax.eval_shape(init, seed_keys(config))
    chunk = jax.jit(over_runs(experiment.run_chunk, row.group), donate_argnums=0,
                    in_shardings=sharding, out_shardings=sharding)
    with distinct_rows_sampler(row.reference):
        lowered = chunk.lower(abstract)
    return lowered.compile().as_text()


def main(args: Args) -> dict:
    if args.chunk_episodes < 1 or any(k < 1 for k in args.unroll):
        raise ValueError("chunk_episodes and every K must be >= 1")
    wanted = [(Row.parse(text), unroll) for text in args.seeds for unroll in args.unroll]
    for row, unroll in wanted:  # bad input fails before anything is compiled
        validate(step_config(args, row, unroll))
    rows = []
    payload = {"args": dataclasses.asdict(args), **machine_info(),
               "backend": jax.default_backend(), "rows": rows}
    for row, unroll in wanted:
        text = compiled_chunk_text(args, row, unroll)
        if args.hlo_dir:
            os.makedirs(args.hlo_dir, exist_ok=True)
            with open(os.path.join(args.hlo_dir, f"{args.env}_{row.label(unroll)}.hlo.txt"),
                      "w") as f:
                f.write(text)
        rows.append({"seeds": row.seeds, "unroll_steps": unroll,
                     "reference_sampler": row.reference,
                     **kernels_per_episode(text, args.chunk_episodes)})
        write_json(args.out, payload)
    print(f"\n{args.env} IQ-Flow episode step, compiled for {payload['backend']} "
          f"({payload['device']}): per episode step")
    print("(R: the replay's distinct rows drawn one by one, the reference)")
    print("seeds   K   kernels  matmul kernels  loop iterations  top ops")
    for r in rows:
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(r["by_opcode"].items())[:4])
        print(f"{r['seeds']:>5}{'R' if r['reference_sampler'] else ' '}{r['unroll_steps']:>3} "
              f"{r['kernels']:9.0f} "
              f"{r['matmul_kernels']:15.0f} {r['loop_iterations']:16.0f}  {top}")
    return payload


if __name__ == "__main__":
    import tyro

    payload = main(tyro.cli(Args))
    if payload["args"]["out"] is None:
        print(json.dumps([{k: r[k] for k in ("seeds", "unroll_steps", "kernels")}
                          for r in payload["rows"]]))
