"""The evaluated curves of runs in progress (or stopped), read from their checkpoints.

    python -m benchmarks.peek runs/ckpt/learners/er --level 27

For every run folder under DIR (a folder of step folders, at any depth) it prints the
latest checkpoint's episode, the mean evaluated return after every evaluation, the
last evaluation's mean with its 95% interval across seeds and, with --level, the
fraction of seeds at or above it (a sweep's points pooled with its seeds, as "runs"
of the one program). Nothing is compiled and nothing is written; the checkpoints are
only read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tyro


@dataclass
class Args:
    directory: tyro.conf.Positional[str]
    level: float | None = None
    """a seed counts as at the optimum from this evaluated return"""


def curve(folder: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(latest episode, the evaluations' episodes, their returns [evals, seeds])."""
    import orbax.checkpoint as ocp

    from jaxsim.checkpoint import _state_reader

    reader = _state_reader(os.path.abspath(folder))
    try:
        step = reader.latest_step()
        saved = reader.restore(step, args=ocp.args.Composite(
            history=ocp.args.StandardRestore()))["history"]
    finally:
        reader.close()
    evals = saved.get("evals") or {}
    if "eval/return" not in evals:
        return step, np.zeros(0, int), np.zeros((0, 0))
    return step, np.asarray(saved["eval_at"]), np.asarray(evals["eval/return"], float)


def summary(name: str, step: int, at: np.ndarray, returns: np.ndarray,
            level: float | None) -> str:
    from benchmarks.common import mean_ci95

    if not len(at):
        return f"{name}: episode {step}, not evaluated yet"
    final = mean_ci95(returns[-1])
    low, high = final["ci95"]
    line = (f"{name}: episode {step}, final {final['mean']:.2f} [{low:.2f}, {high:.2f}] "
            f"over {returns.shape[1]} seeds")
    if level is not None:
        line += f", {np.mean(returns[-1] >= level):.2f} at >= {level:g}"
    points = " ".join(f"{e}:{r:.1f}" for e, r in zip(at, returns.mean(1), strict=True))
    return f"{line}\n  {points}"


def main(args: Args) -> list[str]:
    from benchmarks.common import run_folders

    folders = run_folders(args.directory)
    if not folders:
        raise SystemExit(f"no run checkpoints under {args.directory}")
    lines = [summary(os.path.relpath(f, args.directory), *curve(f), args.level)
             for f in folders]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main(tyro.cli(Args))
