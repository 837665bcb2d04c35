"""Helpers every benchmark shares: confidence intervals, JSON output, run naming."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats


@dataclass
class RunArgs:
    """Flags every learning benchmark shares."""

    seeds: int = 64
    seed: int = 0
    first_seed: int = 0
    """train seeds first_seed .. first_seed + seeds - 1 (split a sweep over processes)"""
    out: str | None = None
    """write the figures as JSON to this file"""
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"
    wandb_dir: str = "wandb_runs"
    progress: bool = True
    checkpoint_dir: str | None = None
    """save the whole run here (one sub-folder per algorithm) and resume from it"""
    checkpoint_every: int = 10
    """chunks between checkpoints"""
    resume: bool = False
    """continue from the latest checkpoint in --checkpoint-dir"""
    stop_after: int | None = None
    """stop this sitting after this many episodes (checkpointed); --resume goes on"""
    matmul_precision: Literal["default", "float32", "tensorfloat32", "bfloat16"] = "default"
    """float32 matmuls: JAX's default (TF32 on recent NVIDIA GPUs) or the one named"""


def run_options(args: RunArgs, name: str) -> dict[str, Any]:
    """The runner's keyword arguments that every learning benchmark passes alike."""
    return dict(
        wandb_mode=args.wandb_mode, wandb_dir=args.wandb_dir, progress=args.progress,
        checkpoint_dir=os.path.join(args.checkpoint_dir, name) if args.checkpoint_dir else None,
        checkpoint_every=args.checkpoint_every, resume=args.resume, stop_after=args.stop_after,
    )


def mean_ci95(values) -> dict[str, Any]:
    """Mean across seeds and its two-sided 95% Student-t interval."""
    values = np.asarray(values, np.float64).ravel()
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "ci95": [mean, mean], "n": int(values.size)}
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(values.size)}


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, default=_to_builtin)
        handle.write("\n")


def _to_builtin(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
