"""Hyperparameter sweeps inside one compiled program.

A sweep names float fields of the config (`c1`, `mechanism.lr_incentive`,
`agent.entropy_coef`, ...) and values for each; their grid becomes a vmapped axis
beside the seeds: every grid point trains the same seeds, and the whole grid is
one compilation. The swept values reach the program as traced numbers, so a field
can be swept only where it enters the computation as a number (learning rates,
cost weights, discounts, coefficients); sizes, counts and choices of network or
algorithm change the program's shapes and stay separate runs.

    sweep = parse_sweep(["c1=0,0.25", "c2=0,1.4924e-4"], config)   # 4 points
    result = runner.run(config, sweep=sweep)     # runs axis: point-major, seed-minor
    for name, part in split_points(result, sweep): ...
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxsim.config import TrainConfig, validate

PARTS = ("agent", "mechanism")
INIT_ONLY = ("output_scale",)  # read when parameters are made, not by the program


@dataclass(frozen=True)
class Sweep:
    """fields: dotted config paths; points: the grid, one value per field each."""

    fields: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]

    @property
    def size(self) -> int:
        return len(self.points)

    def name(self, index: int) -> str:
        return ",".join(f"{f.split('.')[-1]}={v:g}" for f, v in
                        zip(self.fields, self.points[index], strict=True))

    def values(self, num_seeds: int) -> jnp.ndarray:
        """f32[points * seeds, fields]: each run's values, point-major."""
        return jnp.repeat(jnp.asarray(self.points, jnp.float32), num_seeds, axis=0)

    def to_json(self) -> dict:
        return {"fields": list(self.fields), "points": [list(p) for p in self.points]}


def sweepable_fields(config: TrainConfig) -> list[str]:
    """Every float field of the config's agent and mechanism, as a dotted path."""
    names = []
    for part in PARTS:
        sub = getattr(config, part)
        names += [f"{part}.{f.name}" for f in dataclasses.fields(sub)
                  if isinstance(getattr(sub, f.name), float) and f.name not in INIT_ONLY]
    return names


def _resolve(name: str, config: TrainConfig) -> str:
    fields = sweepable_fields(config)
    if name in fields:
        return name
    matches = [f for f in fields if f.split(".")[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"sweep field {name!r} is ambiguous: {matches}")
    raise ValueError(f"cannot sweep {name!r} in one program: only float fields that enter "
                     f"the computation as numbers can; this config's are {fields}. "
                     "Sizes, counts and algorithms change the program: run them separately")


def parse_sweep(specs: Sequence[str], config: TrainConfig) -> Sweep | None:
    """`["c1=0,0.25", "mechanism.c2=0,1e-4"]` -> the grid of every combination, each
    point's config validated (before anything compiles). None for no specs."""
    if not specs:
        return None
    fields, columns = [], []
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise ValueError(f"sweep {spec!r}: expected NAME=V1,V2,...")
        try:
            column = [float(v) for v in values.split(",")]
        except ValueError as error:
            raise ValueError(f"sweep {spec!r}: values must be numbers") from error
        path = _resolve(name.strip(), config)
        if path in fields:
            raise ValueError(f"sweep field {path} given twice")
        fields.append(path)
        columns.append(column)
    sweep = Sweep(tuple(fields), tuple(itertools.product(*columns)))
    for point in sweep.points:
        validate(config_at(config, sweep.fields, point))
    return sweep


def config_at(config: TrainConfig, fields: Sequence[str], values) -> TrainConfig:
    """`config` with each dotted field set to its value (numbers or traced scalars)."""
    for path, value in zip(fields, values, strict=True):
        part, name = path.split(".")
        config = config.replace(**{part: dataclasses.replace(getattr(config, part),
                                                             **{name: value})})
    return config


def split_points(array: np.ndarray, sweep: Sweep, num_seeds: int, axis: int = 1):
    """`[..., points * seeds, ...]` (runs on `axis`) -> `[points]` arrays of
    `[..., seeds, ...]`."""
    array = np.asarray(array)
    shape = array.shape[:axis] + (sweep.size, num_seeds) + array.shape[axis + 1:]
    return list(np.moveaxis(array.reshape(shape), axis, 0))


def split_result(result) -> list:
    """[(suffix, RunResult)] per sweep point, each with `[rows, seeds, ...]` metrics
    (suffix '' and the result itself without a sweep). Timing stays the whole
    program's."""
    sweep = result.sweep
    if sweep is None:
        return [("", result)]
    seeds = result.config.num_seeds
    if result.timing.get("processes", 1) > 1:  # this host's runs only: a contiguous block
        return _split_local(result, sweep, seeds)
    parts = []
    for point in range(sweep.size):
        pick = lambda metrics, point=point: {k: split_points(v, sweep, seeds)[point]
                                             for k, v in metrics.items()}
        values = sweep.points[point]
        parts.append((f"[{sweep.name(point)}]", dataclasses.replace(
            result, config=config_at(result.config, sweep.fields, values),
            metrics=pick(result.metrics), eval_metrics=pick(result.eval_metrics),
            state=None, sweep=None)))
    return parts


def _split_local(result, sweep, seeds: int) -> list:
    """split_result on one host of several: the points this host holds runs of, each
    with the seeds it holds (timing's `local_runs` then counts seeds within the point)."""
    local = list(result.timing["local_runs"])  # global run indices, point-major
    parts = []
    for point in range(sweep.size):
        where = [i for i, run in enumerate(local) if run // seeds == point]
        if not where:
            continue
        pick = lambda metrics, where=where: {k: np.asarray(v)[:, where]
                                             for k, v in metrics.items()}
        parts.append((f"[{sweep.name(point)}]", dataclasses.replace(
            result, config=config_at(result.config, sweep.fields, sweep.points[point]),
            metrics=pick(result.metrics), eval_metrics=pick(result.eval_metrics),
            timing={**result.timing, "local_runs": [local[i] % seeds for i in where]},
            state=None, sweep=None)))
    return parts
