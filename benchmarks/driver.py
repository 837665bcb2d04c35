"""One driver for every learning benchmark. A benchmark declares what is its own (its
algorithms, how a config is made, how one run becomes figures, how runs of disjoint
seeds recombine, its plots and printed table) as a `Benchmark`; `main(spec, args)`
does the rest alike for all: the multi-host job, every config validated before
anything compiles, the runs, Ctrl-C, the JSON, and `--merge`.

`--merge A.json B.json ...` combines files without training: runs of the same name
over disjoint seed ranges (`--first-seed`, or the per-host files of a multi-host job)
become one run over all the seeds, with every figure recomputed from the seeds'
own numbers; runs of other names sit side by side (one name under several recipes
becomes NAME@RECIPE).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.common import (check_runs, has_checkpoint, join_job, run_names, run_options,
                               write_json)


@dataclass(frozen=True)
class Benchmark:
    """What one learning benchmark declares. Runs are grouped (the matrix games: one
    group per game, results under "games"; the others: one group, under
    "algorithms"). Every callable takes the parsed flags first."""

    experiment: Callable[[Any], str]  # e.g. "--alg all on Escape Room", for messages
    algorithms: Callable[[Any], list[str]]  # the flags' algorithms (refusing bad mixes)
    make_config: Callable[..., Any]  # (args, alg, recipe, taken, group) -> TrainConfig
    rows: Callable[[Any], dict]  # {dotted field: (value, flag)} of the row flags
    run: Callable[..., dict]  # (args, group, name, alg, recipe) -> {name: figures}
    merge_run: Callable[[list[dict]], dict]  # one run's figures from disjoint seed parts
    outputs: Callable[[Any, dict], None]  # plots, tables and the printed table
    header: Callable[[Any], dict] = lambda args: {}  # payload entries beside the results
    groups: Callable[[Any], list] = lambda args: [None]
    results_key: str = "algorithms"
    names: Callable[[list], list] = lambda names: names  # drop runs that repeat others
    check_merge: Callable[[list[dict]], None] = lambda payloads: None
    after_merge: Callable[[Any, dict], Any] = lambda args, payload: args  # flags for outputs
    # (args, group, alg) -> whether the group runs that algorithm (default: every one)
    keep: Callable[[Any, Any, str], bool] = lambda args, group, alg: True


def run_swept(args, config, name: str, group: str, figures: Callable, run: Callable,
              **options) -> dict:
    """{name: figures} of one run of `config` by `run` (jaxsim.runner.run; W&B run
    `group-name`): one entry, or one per point of the flags' `--sweep`
    (`name[c1=0,c2=0]`). `figures(config, result)`."""
    from jaxsim.sweep import parse_sweep, split_result

    result = run(config, wandb_name=f"{group}-{name}", wandb_group=group,
                 **run_options(args, name, fresh_if_missing=True),
                 sweep=parse_sweep(args.sweep, config), **options)
    return {name + suffix: figures(part.config, part) for suffix, part in split_result(result)}


def main(spec: Benchmark, args) -> dict:
    payload = merge_files(spec, args) if args.merge else train(spec, args)
    if args.merge:
        args = spec.after_merge(args, payload)
    write_json(args.out, payload)
    spec.outputs(args, payload)
    return payload


def train(spec: Benchmark, args) -> dict:
    """Every run the flags ask for, each config (and sweep point) validated first. A
    stop (Ctrl-C, SIGTERM) during a run ends the command after that run, whose
    figures so far are kept, as are the finished runs'; one outside the runs (setup,
    plots) writes the finished runs' JSON and stops at once (KeyboardInterrupt)."""
    args = join_job(args)  # several hosts: before any device is touched
    if args.resume and args.checkpoint_dir and not has_checkpoint(args.checkpoint_dir):
        raise ValueError(f"--resume: no checkpoint under {args.checkpoint_dir} (a run "
                         "of the command without one starts afresh, but none has one)")
    names = spec.names(run_names(args, spec.algorithms(args)))
    groups = spec.groups(args)
    runs = {group: [n for n in names if spec.keep(args, group, n[1])] for group in groups}
    for group in (g for g in groups if runs[g]):  # a group `keep` empties runs nothing
        check_runs(args, runs[group], lambda a, alg, recipe, taken, group=group:
                   spec.make_config(a, alg, recipe, taken, group), spec.rows(args),
                   spec.experiment(args))
    results: dict = {}
    payload = lambda: {"args": dataclasses.asdict(args), **spec.header(args),  # noqa: E731
                       spec.results_key: _flat(spec, results)}
    try:
        for group, (name, alg, recipe) in ((g, n) for g in groups for n in runs[g]):
            ran = spec.run(args, group, name, alg, recipe)
            results.setdefault(group, {}).update(ran)
            if any(r.get("interrupted") for r in ran.values()):  # the runner saw the stop
                print("interrupted: the results of the runs so far are written")
                return {**payload(), "interrupted": True}
    except KeyboardInterrupt:  # outside a run (setup, plots): the finished runs are kept
        write_json(args.out, {**payload(), "interrupted": True})
        raise
    return payload()


def _flat(spec: Benchmark, results: dict) -> dict:
    return results.get(None, {}) if spec.results_key == "algorithms" else results


def _grouped(spec: Benchmark, payload: dict) -> dict:
    results = payload[spec.results_key]
    return {None: results} if spec.results_key == "algorithms" else results


def merge_files(spec: Benchmark, args) -> dict:
    payloads = []
    for path in args.merge:
        with open(path) as f:
            payloads.append(json.load(f))
    spec.check_merge(payloads)
    merged: dict = {}
    for group in dict.fromkeys(g for p in payloads for g in _grouped(spec, p)):
        runs = [(name, r) for p in payloads for name, r in _grouped(spec, p).get(group, {}).items()]
        recipes: dict = {}  # files from before recipes existed hold paper runs
        for name, r in runs:
            recipes.setdefault(name, set()).add(r.get("recipe", "paper"))
        by_name: dict = {}
        for name, r in runs:  # one name of several recipes: each becomes NAME@RECIPE
            several = len(recipes[name]) > 1 and "@" not in name
            key = f"{name}@{r.get('recipe', 'paper')}" if several else name
            by_name.setdefault(key, []).append(r)
        merged[group] = {name: merge_parts(spec, name, parts)
                         for name, parts in by_name.items()}
    seeds = {r["seeds"] for runs in merged.values() for r in runs.values()}
    merged_args = {**payloads[0]["args"], "merge": list(args.merge),
                   "seeds": seeds.pop() if len(seeds) == 1 else sorted(seeds)}
    header = {k: v for k, v in payloads[0].items() if k not in ("args", spec.results_key,
                                                                "interrupted")}
    payload = {"args": merged_args, **header, spec.results_key: _flat(spec, merged)}
    if any(p.get("interrupted") for p in payloads):
        payload["interrupted"] = True
    return payload


def _without_seeds(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("num_seeds", "first_seed")}


def _comparable(config: dict) -> str:
    """A part's config as one string, the fields added to the config classes since it was
    written at their defaults (as a checkpoint reads them): halves of one run written by
    the code before and after such a field merge. A config that no longer reads (an
    unknown part type) is compared as written."""
    from jaxsim.checkpoint import CheckpointError, config_from_json, config_json

    try:
        config = {**config, **config_json(config_from_json(config))}
    except (CheckpointError, KeyError, TypeError, ValueError):
        pass
    return json.dumps(_without_seeds(config), sort_keys=True)


def merge_parts(spec: Benchmark, name: str, parts: list[dict]) -> dict:
    """One run of `name` from its parts: they must be one config but for their seeds,
    over contiguous seed ranges."""
    if len(parts) == 1:
        return parts[0]
    if any("first_seed" not in p for p in parts):
        raise ValueError(f"these files' {name} runs do not say which seeds they hold (written "
                         "before --merge covered this benchmark): rerun them to merge")
    configs = {_comparable(p["config"]) for p in parts if "config" in p}
    if len(configs) > 1:
        raise ValueError(f"these files' {name} runs have different configs (recipe or rows): "
                         "merge only the seeds of one run")
    parts = sorted(parts, key=lambda r: r["first_seed"])
    starts = [r["first_seed"] for r in parts]
    ends = [r["first_seed"] + r["seeds"] for r in parts]
    if starts[1:] != ends[:-1]:
        raise ValueError(f"seed ranges {list(zip(starts, ends, strict=True))} are not contiguous")
    return {**spec.merge_run(parts), "merged_from": len(parts)}
