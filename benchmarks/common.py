"""Helpers every benchmark shares: confidence intervals, JSON output, run naming."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats


@dataclass
class RunArgs:
    """Flags every learning benchmark shares."""

    seeds: int = 64
    recipe: tuple[Literal["paper", "authors", "id_authors"], ...] = ("paper",)
    """whose runs to reproduce (SPEC §6-7): paper (the text, §§1-5), authors (every §6
    row of the authors' released code that concerns the experiment), id_authors (the
    ID authors' own recipe, §7: Escape Room); several: every algorithm under each, side
    by side as ALG@RECIPE in one JSON and one plot. The row flags below override single
    rows of the recipe"""
    seed: int = 0
    first_seed: int = 0
    """train seeds first_seed .. first_seed + seeds - 1 (split a sweep over processes)"""
    out: str | None = None
    """write the figures as JSON to this file"""
    merge: tuple[str, ...] = ()
    """instead of training: combine this benchmark's JSON files into one JSON (and its
    table and plots): an algorithm's runs over disjoint seed ranges (--first-seed, or the
    files of a multi-host job's hosts) become one run over all seeds, every figure
    recomputed from the seeds' own; other algorithms sit side by side (one algorithm
    under several recipes: each as ALG@RECIPE)"""
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"
    wandb_dir: str = "wandb_runs"
    wandb_per_seed: tuple[str, ...] = ()
    """metrics that W&B also gets as each seed's own series (seed/{seed}/{name}), e.g.
    --wandb-per-seed return eval/return; the aggregates are always logged"""
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
    sweep: tuple[str, ...] = ()
    """hyperparameter grid in the same program, e.g. --sweep c1=0,0.25 c2=0,1.4924e-4:
    every point trains every seed (float fields only; sizes and algorithms are
    separate runs)"""
    seed_group: int | None = None
    """train each device's seeds this many at a time (a loop over groups of a vmap):
    memory holds the state once plus one group's temporaries, e.g. --seeds 4096
    --seed-group 512 on one GPU; the same numbers as without"""
    debug_nans: bool = False
    """jax_debug_nans: a NaN stops the run at the operation that made it (slow)"""
    coordinator: str | None = None
    """multi-host: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS); every host runs
    the same command and trains the seeds on its own devices"""
    num_processes: int | None = None
    """multi-host: how many processes (or JAX_NUM_PROCESSES; 0: JAX detects the cluster)"""
    process_id: int | None = None
    """multi-host: this process's index (or JAX_PROCESS_ID)"""
    variant: Literal["none", "robust"] = "none"
    """beyond the paper (issue 16, README "Variants"): robust, IQ-Flow with the remedies
    measured to keep its incentives alive (the other algorithms unchanged); none, the
    recipe as it is. The incentive flags below override single parts of it"""
    incentive_activation: Literal["sigmoid", "abs_tanh"] | None = None
    """IQ-Flow's r_inc = 2 sigmoid(z) (SPEC §3) or 2 |tanh(z)| (SPEC §6 row 13)"""
    incentive_output_scale: float | None = None
    """orthogonal scale of IQ-Flow's incentive-net last layer (SPEC: sqrt 2; row 13:
    sqrt(2)/1000)"""
    logit_bound: float | None = None
    """bound b on IQ-Flow's incentive pre-activation z (0: none)"""
    logit_bound_mode: Literal["penalty", "clip"] | None = None
    """penalty: step B's loss + logit_penalty * mean max(|z| - b, 0)^2; clip: r_inc of
    clip(z, -b, b), the gradient passed straight through"""
    logit_penalty: float | None = None
    incentive_optimizer: Literal["rmsprop", "adam"] | None = None
    """IQ-Flow step B's optimiser (SPEC §3: rmsprop)"""
    incentive_eps: float | None = None
    """its eps (default: the critics' RMSprop eps, 1e-8)"""
    incentive_input: Literal["joint_action", "own_action"] | None = None
    """what of the joint action agent i's IQ-Flow incentive reads: every agent's (SPEC
    §3) or its own"""
    meta_actions: Literal["replay", "uniform", "both"] | None = None
    """the joint actions IQ-Flow's step B scores its validation rows at: as played
    (SPEC §3), redrawn uniformly, or both"""
    meta_margin: float | None = None
    """IQ-Flow's Eq. 5 counts a row while Q_ind(a_coop) leads by less than this (0: the
    paper, while a_b != a_coop)"""
    coop_expectile: float | None = None
    """the expectile of IQ-Flow's team critic V_coop alone (default: the critics' 0.85,
    SPEC §3); higher values Q_coop by the best the replay's pairs did next"""
    coop_gamma: float | None = None
    """the discount of IQ-Flow's team critic Q_coop alone (default: the critics' 0.99)"""
    diagnostics: bool | None = None
    """IQ-Flow's per-chunk diagnostics and saturation warnings (default on)"""


def join_job(args: RunArgs) -> RunArgs:
    """Joins the multi-host job the flags describe, before any device is touched; then
    each host writes its own files (`out` and `plots` get a `.host{i}` suffix), holding
    the seeds it trained. With one process: `args` unchanged."""
    from jaxsim import distributed

    if not distributed.initialize(args.coordinator, args.num_processes, args.process_id):
        return args
    suffix = distributed.host_suffix()
    changes = {"out": _with_suffix(args.out, suffix)}
    if hasattr(args, "plots"):
        changes["plots"] = args.plots + suffix
    return dataclasses.replace(args, **changes)


def _with_suffix(path: str | None, suffix: str) -> str | None:
    if not path or not suffix:
        return path
    root, ext = os.path.splitext(path)
    return root + suffix + ext


def run_names(args: RunArgs, algs: list[str]) -> list[tuple[str, str, str]]:
    """(name, algorithm, recipe) of every run a command makes: ALG, or ALG@RECIPE when
    it compares several recipes."""
    several = len(args.recipe) > 1
    if len(set(args.recipe)) != len(args.recipe):
        raise ValueError(f"--recipe names a recipe twice: {list(args.recipe)}")
    return [(f"{alg}@{recipe}" if several else alg, alg, recipe)
            for recipe in args.recipe for alg in algs]


def with_rows(config, rows: dict[str, tuple[Any, str]], taken: set | None = None):
    """`config` with each row that one of its parts has set: rows maps dotted fields
    ("agent.return_mode", "mechanism.q_layout", or a TrainConfig field) to (value, flag),
    value None keeping the recipe's. Returns (config, the rows it took); those rows are
    also added to `taken` where given (see check_runs)."""
    taken = set() if taken is None else taken
    for path, (value, _) in rows.items():
        if value is None:
            continue
        part, _, name = path.rpartition(".")
        if not part:  # a field of the run itself (eval_period, agent_reset_period, ...)
            config = config.replace(**{name: value})
        elif name in {f.name for f in dataclasses.fields(getattr(config, part))}:
            sub = dataclasses.replace(getattr(config, part), **{name: value})
            config = config.replace(**{part: sub})
        else:
            continue
        taken.add(path)
    return config, taken


def incentive_rows(args: RunArgs) -> dict[str, tuple[Any, str]]:
    """The incentive flags every learning benchmark shares, as `with_rows` rows."""
    return {f"mechanism.{name}": (getattr(args, name), "--" + name.replace("_", "-"))
            for name in ("incentive_activation", "incentive_output_scale", "logit_bound",
                         "logit_bound_mode", "logit_penalty", "incentive_optimizer",
                         "incentive_eps", "incentive_input", "meta_actions", "meta_margin",
                         "coop_expectile", "coop_gamma", "diagnostics")}


def with_incentive_options(config, args: RunArgs, taken: set | None = None):
    """`config` under `--variant` (IQ-Flow's parts only; the label says so), then with
    the incentive flags that its mechanism has; `--logit-bound 0` removes the bound."""
    from jaxsim.config import with_variant

    config = with_variant(config, args.variant)
    config, applied = with_rows(config, incentive_rows(args), taken)
    if args.logit_bound == 0 and "mechanism.logit_bound" in applied:
        config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                              logit_bound=None))
    return config


def check_runs(args: RunArgs, names, make_config, rows: dict, experiment: str) -> None:
    """Before anything compiles: every run's config (`make_config(args, alg, recipe,
    taken)`) and sweep point is validated, and a row flag given (rows: {dotted field:
    (value, flag)}, the incentive flags added here) or a --variant that no run of the
    command has is refused."""
    from jaxsim.config import validate
    from jaxsim.sweep import parse_sweep

    taken: set = set()
    variants = set()
    for _, alg, recipe in names:
        config = make_config(args, alg, recipe, taken)
        validate(config)
        parse_sweep(args.sweep, config)
        variants.add(config.variant)
    for path, (value, flag) in {**rows, **incentive_rows(args)}.items():
        if value is not None and path not in taken:
            raise ValueError(f"{flag} does not apply to {experiment}: no run of this "
                             f"command has {path}")
    if args.variant != "none" and args.variant not in variants:
        raise ValueError(f"--variant {args.variant} changes IQ-Flow only; no run of "
                         f"{experiment} is IQ-Flow")


def run_folders(directory: str) -> list[str]:
    """Every folder under `directory` (itself included) that holds a written checkpoint:
    step folders (Orbax's unfinished saves carry a tmp suffix)."""
    found = []
    for root, dirs, _ in os.walk(directory):
        if any(d.isdigit() for d in dirs):
            found.append(root)
            dirs[:] = []  # a run's step folders hold no runs
    return sorted(found)


def has_checkpoint(directory: str) -> bool:
    """Whether `directory` (or a folder under it) holds a written checkpoint."""
    return bool(run_folders(directory))


def run_options(args: RunArgs, name: str, fresh_if_missing: bool = False) -> dict[str, Any]:
    """The runner's keyword arguments that every learning benchmark passes alike. With
    --resume and `fresh_if_missing` (the driver's benchmarks, which refuse a --resume
    where no run has a checkpoint), a run that has no checkpoint yet starts from
    episode 0, said on stderr: a table of many runs resumes those it had begun."""
    directory = os.path.join(args.checkpoint_dir, name) if args.checkpoint_dir else None
    resume = args.resume
    if resume and fresh_if_missing and directory and not has_checkpoint(directory):
        print(f"--resume: {name} has no checkpoint in {directory} yet; it starts from "
              "episode 0", file=sys.stderr)
        resume = False
    return dict(
        wandb_mode=args.wandb_mode, wandb_dir=args.wandb_dir, progress=args.progress,
        checkpoint_dir=directory,
        checkpoint_every=args.checkpoint_every, resume=resume, stop_after=args.stop_after,
        debug_nans=args.debug_nans, wandb_per_seed=tuple(args.wandb_per_seed),
        seed_group=args.seed_group,
    )


def mean_ci95(values) -> dict[str, Any]:
    """Mean across seeds and its two-sided 95% Student-t interval."""
    values = np.asarray(values, np.float64).ravel()
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "ci95": [mean, mean], "n": int(values.size)}
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(values.size)}


def summarise(eval_episodes, returns, threshold: float | None) -> dict:
    """The curve's figures from the evaluated returns `[evals, seeds]`; the first
    evaluation whose mean reaches `threshold` (None: not asked)."""
    returns = np.asarray(returns, float)
    # No evaluation yet (a run stopped before its first): an empty curve, not an error.
    returns = returns.reshape(len(eval_episodes), -1) if len(eval_episodes) else \
        np.zeros((0, 0))
    stats = [mean_ci95(row) for row in returns]
    means = np.array([s["mean"] for s in stats])
    reached = np.flatnonzero(means >= threshold) if threshold is not None else []
    return {
        "eval_episodes": [int(e) for e in eval_episodes],
        "eval_return_mean": means.round(4).tolist(),
        "eval_return_ci95": [np.round(s["ci95"], 4).tolist() for s in stats],
        "eval_return_per_seed": returns.round(4).tolist(),
        "final_return_mean": float(means[-1]) if len(means) else None,
        "final_return_per_seed": returns[-1].round(3).tolist() if len(means) else [],
        "first_episode_at_or_above": int(eval_episodes[reached[0]]) if len(reached) else None,
        "threshold": threshold,
    }


def print_learning_table(title: str, results: dict, threshold: float | None = None) -> None:
    """The last lines of a learning benchmark: one row per algorithm."""
    first = "first_eval" + (f">={threshold:g}" if threshold is not None else "")
    width = max([8, *(len(alg) for alg in results)])  # sweep points have long names
    print(f"\n{title}")
    print(f"{'alg':<{width}} seeds  episodes  final_return  {first:>16}  episodes/s"
          "  env-steps/s  compile_s")
    dash = lambda value, fmt: "-" if value is None else format(value, fmt)
    for alg, r in results.items():
        final = float("nan") if r["final_return_mean"] is None else r["final_return_mean"]
        print(f"{alg:<{width}} {r['seeds']:5d} {r['episodes']:9d} {final:13.2f}"
              f"  {dash(r['first_episode_at_or_above'], 'd'):>16}"
              f"  {dash(r['episodes_per_s'], '.1f'):>10}  {dash(r['env_steps_per_s'], '.0f'):>11}"
              f"  {dash(r['compile_s'], '.1f'):>9}")


def plot_return_curves(ax, results: dict) -> None:
    """Each algorithm's mean evaluated return and its 95% interval across seeds."""
    for alg, r in results.items():
        x, mean = np.array(r["eval_episodes"]), np.array(r["eval_return_mean"])
        ci = np.array(r["eval_return_ci95"]).reshape(-1, 2)
        ax.plot(x, mean, label=f"{alg} ({r['seeds']} seeds)")
        ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.25)
    ax.set_xlabel("episode")
    ax.set_ylabel("total environment return (eval)")


def run_figures(args: RunArgs, config, result, threshold: float | None) -> dict:
    """The JSON figures every learning benchmark reports for one run (or sweep point):
    how far it got, the evaluated curve's summary and the throughput."""
    returns = result.eval_metrics.get("eval/return", np.zeros((0, args.seeds)))
    seeds, first_seed = args.seeds, args.first_seed
    if result.timing.get("processes", 1) > 1:  # this host's contiguous share of the seeds
        local = result.timing["local_runs"]
        seeds, first_seed = len(local), args.first_seed + local[0]
    from jaxsim.checkpoint import config_json

    return {
        "recipe": config.recipe,
        "variant": config.variant,
        "config": config_json(config),  # every row's value, as the checkpoint stores it
        "episodes": int(result.episodes[-1]) if len(result.episodes) else 0,
        "episodes_planned": config.episodes,
        "seeds": seeds,
        "first_seed": first_seed,
        "interrupted": result.interrupted,
        **summarise(result.eval_episodes, returns, threshold),
        "episodes_per_s": result.timing["episodes_per_s"],
        "env_steps_per_s": result.timing["env_steps_per_s"],
        "compile_s": result.timing["compile_s"],
        "wandb_dir": result.wandb_dir,
        "alarms": result.alarms,  # IQ-Flow's saturation warnings (issue 16)
    }


def sum_or_none(values):
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))


def seed_weighted(parts: list[dict], key: str) -> np.ndarray:
    """The seed-mean `key` over all parts' seeds, from each part's own seed mean."""
    seeds = np.array([r["seeds"] for r in parts], float)
    return sum(w * np.asarray(r[key], float) for w, r in zip(seeds, parts, strict=True)) \
        / seeds.sum()


def merge_run_figures(parts: list[dict]) -> dict:
    """`run_figures` of one run from its parts over contiguous seed ranges (sorted by
    first seed): the curve's figures recomputed over every seed, throughput summed
    (the parts ran side by side), the alarms of all."""
    if len({tuple(r["eval_episodes"]) for r in parts}) != 1:
        raise ValueError("the runs were evaluated at different episodes; train them as far")
    seeds = sum(r["seeds"] for r in parts)
    returns = np.concatenate([np.asarray(r["eval_return_per_seed"], float).reshape(
        len(r["eval_episodes"]), -1) for r in parts], 1)
    config = parts[0].get("config")
    first = parts[0]["first_seed"]
    return {
        "recipe": parts[0].get("recipe", "paper"),
        "variant": parts[0].get("variant", "none"),
        "config": config and {**config, "num_seeds": seeds, "first_seed": first},
        "episodes": parts[0]["episodes"],
        "episodes_planned": parts[0]["episodes_planned"],
        "seeds": seeds,
        "first_seed": first,
        "interrupted": any(r["interrupted"] for r in parts),
        **summarise(parts[0]["eval_episodes"], returns, parts[0]["threshold"]),
        "episodes_per_s": sum_or_none(r["episodes_per_s"] for r in parts),
        "env_steps_per_s": sum_or_none(r["env_steps_per_s"] for r in parts),
        "compile_s": max(r["compile_s"] for r in parts),
        "alarms": [a for r in parts for a in r.get("alarms", [])],
    }


def machine_info() -> dict:
    """What a benchmark's figures were measured on, for its JSON."""
    import platform

    import jax

    return {"device": str(jax.devices()[0]), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "jax_version": jax.__version__}


def incentive_sums(episode, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per agent and action `[N, A]`, averaged over the seeds and the chunks in `last`
    of `episode` (a run's `RunResult.episode`): the incentive paid per episode and the
    times the action was taken per episode."""
    paid = episode.incentive_by_action_sum[last].mean(axis=(0, 1))
    taken = (episode.action_freq * episode.episode_length[..., None, None])[last]
    return paid, taken.mean(axis=(0, 1))


def per_action(paid, taken) -> list:
    """Mean incentive an agent received per time it took each action (NaN: never)."""
    paid, taken = np.asarray(paid, float), np.asarray(taken, float)
    return np.where(taken > 0, paid / np.maximum(taken, 1e-12), np.nan).round(4).tolist()


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
