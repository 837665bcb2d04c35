"""The host loop: compiles the vmapped chunk once, then evaluates, logs and reports
progress between chunks. Per-seed metrics are kept on the host, one row per chunk."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxsim.checkpoint import (Checkpointer, CheckpointError, check_mechanism_source, config_json,
                               load_mechanism)
from jaxsim.config import TrainConfig, validate
from jaxsim.distributed import host_rows, place
from jaxsim.logger import WandbLogger, flatten_metrics
from jaxsim.sweep import Sweep, config_at
from jaxsim.train import Experiment, TrainState, over_runs, seed_keys


@dataclass
class RunResult:
    """What a run leaves on the host. Arrays of metrics are `[rows, runs, ...]`, runs
    being the seeds (times the sweep's points, point-major)."""

    config: TrainConfig
    episodes: np.ndarray  # episodes completed at the end of each chunk
    metrics: dict[str, np.ndarray]  # each chunk's mean over its episodes
    eval_episodes: np.ndarray
    eval_metrics: dict[str, np.ndarray]
    probes: list[tuple[int, Any]] = field(default_factory=list)  # (episode, on_chunk output)
    # The warnings of AlarmWatch: {metric, run, entry, since_episode, episode}.
    alarms: list[dict] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    state: TrainState | None = None
    wandb_dir: str | None = None
    interrupted: bool = False
    sweep: Sweep | None = None  # with a sweep, the run axis is point-major


def _stack(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows of metrics stacked per name. A name some rows lack (a run resumed from a
    checkpoint written before that metric existed) is NaN there."""
    if not rows:
        return {}
    names = list(dict.fromkeys(k for r in rows for k in r))
    example = {k: np.asarray(r[k]) for r in reversed(rows) for k in r}
    missing = lambda k: np.full(example[k].shape, np.nan, np.result_type(example[k], np.float32))  # noqa: E731
    return {k: np.stack([np.asarray(r[k]) if k in r else missing(k) for r in rows])
            for k in names}


def _unstack(stacked: dict[str, np.ndarray]) -> list[dict]:
    rows = len(next(iter(stacked.values()))) if stacked else 0
    return [{k: v[i] for k, v in stacked.items()} for i in range(rows)]


DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "iqflow-jax", "xla")


def host_isa_tag() -> str:
    """A short name for this host's instruction set: a hash of the CPU flags the
    kernel reports (Linux), else of the platform's processor name."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        pass
    text = " ".join(sorted(flags.split(":", 1)[-1].split())) or platform.processor()
    return f"{platform.machine()}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def default_cache_dir(backend: str) -> str:
    """~/.cache/iqflow-jax/xla; for CPU programs a sub-folder per instruction set
    (`cpu-<machine>-<hash of the CPU flags>`), so that a home directory shared by
    different machines never hands one of them code compiled for another's
    instructions; for accelerators, whose cache keys name the device, one per backend."""
    if backend == "cpu":
        return os.path.join(DEFAULT_CACHE_DIR, f"cpu-{host_isa_tag()}")
    return os.path.join(DEFAULT_CACHE_DIR, backend)


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (by default), so a second run of the
    same config loads its programs instead of compiling them.
    IQFLOW_COMPILATION_CACHE: 0 = off, unset or 1 = on in `default_cache_dir`, a path
    = on there; a cache directory the user gave JAX directly wins. Returns the
    directory in use (None: off).

    On CPU, jax 0.9.2's XLA logs two long lines per cached program it loads ("Target
    machine feature +prefer-no-gather is not supported ... could lead to SIGILL"): a
    false alarm, as those are LLVM tuning preferences that the host's feature list
    never contains (jax-ml/jax#38445), and the per-instruction-set folder rules out the
    real danger. TF_CPP_MIN_LOG_LEVEL=3, set before JAX starts, silences them (with
    every other C++ log line)."""
    choice = os.environ.get("IQFLOW_COMPILATION_CACHE", "")
    if choice == "0":
        return None
    if jax.config.jax_compilation_cache_dir:  # set by the user or JAX_COMPILATION_CACHE_DIR
        return jax.config.jax_compilation_cache_dir
    directory = (default_cache_dir(jax.default_backend()) if choice in ("", "1")
                 else choice)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def _is_positive_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0


def grouped_runs(one, group: int | None, sharding: NamedSharding):
    """`one(point_values, state) -> (state, aux)` of one run, over the leading run axis
    of both: one vmap, or with `group` each device's runs `group` at a time
    (`train.over_runs`, inside `shard_map` so that every device loops over its own
    runs rather than slicing the global axis)."""
    if group is None:
        return jax.vmap(one)

    def step(carry):  # over_runs carries the sweep values along, unchanged
        point_values, state = carry
        new_state, aux = one(point_values, state)
        return (point_values, new_state), aux

    looped = over_runs(step, group)

    def local(values, state):
        (_, state), aux = looped((values, state))
        return state, aux

    if sharding.num_devices == 1:
        return local
    # check_vma=False: the runs never talk to each other, and the episode's scans start
    # from constants that the replication check would otherwise ask to be marked.
    return jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec,
                         out_specs=sharding.spec, check_vma=False)


def seed_sharding(num_seeds: int, devices=None) -> NamedSharding:
    """The seed axis laid over the visible devices: a 1-D `Mesh` named "seeds" of the
    most devices that divide `num_seeds` evenly (all of them when they do), so every
    device trains whole seeds and each seed's numbers are those of a 1-device run."""
    devices = list(jax.devices() if devices is None else devices)
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    mesh = Mesh(np.array(devices[:count]), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds"))


def _debug_nans_option(run_fn):
    """Adds `debug_nans=False` to `run`: True runs it under jax_debug_nans."""
    @functools.wraps(run_fn)
    def wrapper(config: TrainConfig, *, debug_nans: bool = False, **options) -> RunResult:
        with jax.debug_nans(True) if debug_nans else contextlib.nullcontext():
            return run_fn(config, **options)
    return wrapper


def _check_per_seed(names, chunk_metrics: dict, eval_metrics: dict) -> None:
    """Each name must be a per-run scalar of the chunk's or the evaluation's metrics."""
    shapes = {**chunk_metrics, **eval_metrics}
    scalars = sorted(k for k, v in shapes.items() if len(v.shape) == 1)
    for name in names:
        if name not in shapes or len(shapes[name].shape) != 1:
            raise ValueError(f"wandb_per_seed: {name!r} is not a per-seed scalar metric of "
                             f"this run; choose from {', '.join(scalars)}")


class AlarmWatch:
    """Watches the chunks' `alarm/...` metrics (0 or 1 per run and entry, e.g. per
    agent): a run whose alarm has held in every chunk of a whole evaluation period is
    reported once, with the episode it began; again only after it has cleared."""

    PREFIX = "alarm/"

    def __init__(self, period_chunks: int, chunk_episodes: int, run_names: list):
        self.period = max(int(period_chunks), 1)
        self.chunk_episodes = chunk_episodes
        self.run_names = run_names
        self.streaks: dict[str, np.ndarray] = {}
        self.reported: dict[str, np.ndarray] = {}
        self.fired: list[dict] = []

    def update(self, metrics: dict, episode: int) -> list[str]:
        """Counts this chunk (ending at `episode`); returns the new warnings."""
        lines = []
        for name, value in metrics.items():
            if not name.startswith(self.PREFIX):
                continue
            on = np.asarray(value) > 0.5  # [runs, ...]
            streak = np.where(on, self.streaks.get(name, np.zeros(on.shape, int)) + 1, 0)
            reported = self.reported.get(name, np.zeros(on.shape, bool))
            new = (streak >= self.period) & ~reported
            self.streaks[name], self.reported[name] = streak, (reported | new) & on
            for index in zip(*np.nonzero(new), strict=True):
                run, entry = int(index[0]), tuple(int(i) for i in index[1:])
                since = episode - int(streak[index]) * self.chunk_episodes
                alarm = {"metric": name, "run": self.run_names[run], "entry": list(entry),
                         "since_episode": since, "episode": episode}
                self.fired.append(alarm)
                where = f" entry {entry[0] if len(entry) == 1 else entry}" if entry else ""
                lines.append(f"warning: seed {alarm['run']}: {name[len(self.PREFIX):]}{where} "
                             f"in every chunk since episode {since} (episodes {since + 1}-"
                             f"{episode}, a whole evaluation period)")
        return lines

    def flagged(self) -> dict[str, int]:
        """Per alarm, how many runs have an entry on for a whole period right now."""
        return {name: int((streak >= self.period).reshape(streak.shape[0], -1).any(1).sum())
                for name, streak in self.streaks.items()}


class NonFiniteError(FloatingPointError):
    """A run produced NaN or Inf; the message names the seeds, episodes and quantities."""


def nonfinite_report(metrics: dict, run_names: list) -> list[str]:
    """'quantity: seeds [...]' for every per-run metric that is not finite (the
    training state's own NaN/Inf count is the metric guard/nonfinite_values); runs
    are named by `run_names` (their seeds, and sweep points)."""
    lines = []
    for name, value in metrics.items():
        value = np.asarray(value, np.float64)
        per_seed = value.reshape(value.shape[0], -1) if value.ndim else value.reshape(1, 1)
        bad = ~np.isfinite(per_seed).all(axis=1)
        if name == "guard/nonfinite_values":
            bad = per_seed[:, 0] > 0
        if bad.any():
            runs = [run_names[i] for i in np.flatnonzero(bad)]
            lines.append(f"{name}: seeds {runs}")
    return lines


class StopRequest:
    """What `stop_signals` saw: the name of the first stop signal, or None."""

    def __init__(self):
        self.signal: str | None = None
        self.training = False  # set once the first chunk is about to run


@contextlib.contextmanager
def stop_signals():
    """Within the block, the first SIGINT (Ctrl-C) or SIGTERM (`kill`, a scheduler's
    pre-emption) only records a request to stop, which the training loop honours once
    the chunk in flight has finished and been counted; a second one raises
    KeyboardInterrupt at once. Both work also for a job that a shell started in the
    background (where SIGINT is otherwise ignored). The previous handlers come back
    after the block."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # handlers can only be set from the main thread
        return

    def stop(signum, frame):
        if request.signal is not None:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        request.signal = signal.Signals(signum).name
        when = ("after the chunk in flight" if request.training
                else "before training starts (compilation cannot be cut short)")
        print(f"\n{request.signal}: stopping {when} (again: at once)", file=sys.stderr)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@_debug_nans_option
def run(
    config: TrainConfig,
    *,
    wandb_mode: str = "disabled",
    wandb_project: str = "iqflow-jax",
    wandb_name: str | None = None,
    wandb_group: str | None = None,
    wandb_dir: str | None = None,
    on_chunk: Callable[[TrainState, int], Any] | None = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
    stop_after: int | None = None,
    mechanism_from: str | None = None,
    sweep: Sweep | None = None,
    wandb_per_seed: tuple[str, ...] = (),
    seed_group: int | None = None,
) -> RunResult:
    """Train every seed of `config` in one compiled program.

    `on_chunk(state, episode)` runs on the host after each chunk (state is stacked
    over seeds) and its result is kept in `RunResult.probes`. Ctrl-C or SIGTERM stops
    the run cleanly once the chunk in flight has finished (a second one at once,
    dropping that chunk), checkpoints it, and the result says how far it got.

    With `checkpoint_dir`, the whole run (state, metrics so far, config) is saved every
    `checkpoint_every` chunks, at `stop_after` episodes, at the end and on Ctrl-C;
    `resume=True` continues from the latest checkpoint there, and ends with the same
    numbers as a run that was never stopped. `stop_after` ends this sitting early
    (e.g. to fit a session) without changing the run's config.

    NaN or Inf in any metric or in the training state stops the run with a
    NonFiniteError naming the seeds, episodes and quantities, after checkpointing the
    last good state; `debug_nans` turns on jax_debug_nans, which names the operation.

    `mechanism_from`: a checkpoint directory of an IQ-Flow or ID run whose incentive
    network replaces the fresh one at the start (seed i from its seed i); with
    `config.freeze_mechanism` it then pays fresh agents unchanged (Fig. 10).

    `sweep` (jaxsim.sweep.parse_sweep): every grid point trains every seed in the same
    program; the result's run axis is point-major (`sweep.size * num_seeds`).

    `wandb_per_seed`: metric names (per-seed scalars, e.g. "return", "eval/return")
    that W&B also gets as each run's own series, `seed/{run}/{name}`, beside the
    aggregates; names are checked against the program's outputs before it compiles.

    `seed_group`: each device trains its runs `seed_group` at a time (a loop over
    groups of a vmap that writes each group's new state back in place), so memory
    holds the state once plus one group's temporaries: what fits 4,096 Cleanup
    IQ-Flow seeds on one GPU. The same numbers as one vmap, run for run.
    """
    validate(config)  # before any compilation
    enable_compilation_cache()
    if stop_after is not None and (stop_after <= 0 or stop_after % config.chunk_episodes):
        raise ValueError(f"stop_after ({stop_after}) must be a positive multiple of "
                         f"chunk_episodes ({config.chunk_episodes})")
    if resume and not checkpoint_dir:
        raise ValueError("resume needs checkpoint_dir")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 chunk, got {checkpoint_every}")
    points = 1 if sweep is None else sweep.size
    runs = points * config.num_seeds  # every sweep point trains every seed
    if jax.process_count() > 1 and runs % jax.device_count():
        raise ValueError(f"{runs} runs (seeds x sweep points) do not divide evenly over "
                         f"the job's {jax.device_count()} devices: every host must train "
                         "whole runs")
    sharding = seed_sharding(runs)  # every leaf leads with the run axis
    if seed_group is not None:
        per_device = runs // sharding.num_devices
        if not _is_positive_int(seed_group) or per_device % seed_group:
            raise ValueError(f"seed_group ({seed_group}) must be a positive divisor of the "
                             f"{per_device} runs on each of the {sharding.num_devices} "
                             f"device(s) ({runs} runs: seeds x sweep points)")
    if mechanism_from is not None and not resume:
        check_mechanism_source(mechanism_from, config)
    checkpointer = Checkpointer(checkpoint_dir, config) if checkpoint_dir else None
    if checkpointer is not None and not resume and checkpointer.latest() is not None:
        raise ValueError(f"{checkpoint_dir} already holds checkpoints (latest: episode "
                         f"{checkpointer.latest()}); pass resume to continue that run or "
                         f"choose another directory")
    experiment = Experiment(config)
    if jax.process_count() > 1:  # one W&B run per host, grouped
        host = f"host{jax.process_index()}"
        wandb_group = wandb_group or wandb_name or f"{config.env}-{jax.process_count()}hosts"
        wandb_name = f"{wandb_name}-{host}" if wandb_name else host
    logger = WandbLogger(wandb_mode, project=wandb_project, name=wandb_name,
                         group=wandb_group, config=config_json(config), directory=wandb_dir)
    run_names = [config.first_seed + i % config.num_seeds for i in range(runs)]
    if sweep is not None:
        run_names = [f"{seed} at {sweep.name(i // config.num_seeds)}"
                     for i, seed in enumerate(run_names)]
    init = jax.jit(jax.vmap(experiment.init), out_shardings=sharding)
    keys = place(jnp.tile(seed_keys(config), (points, 1)), sharding)
    values = place((sweep.values(config.num_seeds) if sweep is not None
                    else jnp.zeros((runs, 0), jnp.float32)), sharding)
    # This process's runs: all of them on one host; its devices' share on several.
    mine = host_rows(place(np.arange(runs), sharding))
    run_names = [run_names[i] for i in mine]
    rows, evals, eval_at, ends, probes = [], [], [], [], []
    watch = AlarmWatch(config.eval_period // config.chunk_episodes, config.chunk_episodes,
                       run_names)
    episode = 0
    earlier = (0.0, 0.0, 0)  # train_s, env steps, episodes of earlier sittings
    saved_at = first = episode

    def save_checkpoint():
        history = {"metrics": _stack(rows), "ends": np.asarray(ends, np.int64)}
        if evals:
            history.update(evals=_stack(evals), eval_at=np.asarray(eval_at, np.int64))
        checkpointer.save(episode, state, history, {
            "seeds": config.num_seeds, "train_s": earlier[0] + train_s,
            "sweep": None if sweep is None else sweep.to_json(),
            "env_steps": earlier[1] + steps_done,
            "trained_episodes": earlier[2] + episode - first}, runs=sharding)

    # From here on Ctrl-C or SIGTERM only asks the run to stop: during setup and
    # compilation (which a signal cannot cut short) training then never starts, and
    # the run still ends through the bookkeeping below.
    state, compile_s, bar = None, None, None
    train_s, steps_done, interrupted = 0.0, 0.0, False
    with stop_signals() as request:
        try:
            if not resume:
                state = init(keys)
                if mechanism_from is not None:  # before the run's first step and checkpoint
                    mechanism, loaded_at = load_mechanism(mechanism_from, state.mechanism)
                    # The loaded part arrives as host arrays; the rest is already in place.
                    state = state.replace(mechanism=jax.tree.map(
                        lambda x: x if isinstance(x, jax.Array) else place(x, sharding), mechanism))
                    print(f"mechanism's incentive network from {mechanism_from} (episode "
                          f"{loaded_at})", file=sys.stderr)
            else:  # restored into the state's shapes alone: no fresh state is built first
                abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                       sharding=sharding),
                                        jax.eval_shape(init, keys))
                state, history, meta = checkpointer.restore(abstract, runs=sharding)
                swept = None if sweep is None else sweep.to_json()
                if meta.get("sweep") != swept:
                    raise CheckpointError(f"checkpoint in {checkpoint_dir} was written with "
                                          f"sweep {meta.get('sweep')}, this run has {swept}")
                rows, evals = _unstack(history["metrics"]), _unstack(history.get("evals", {}))
                ends = [int(e) for e in history["ends"]]
                for row, end in zip(rows, ends, strict=True):  # the alarms' streaks as they stood
                    watch.update(row, end)
                eval_at = [int(e) for e in history.get("eval_at", [])]
                episode = saved_at = first = int(meta["episode"])
                # Throughput over every sitting whose checkpoint recorded its training time.
                earlier = (float(meta.get("train_s", 0.0)), float(meta.get("env_steps", 0.0)),
                           int(meta.get("trained_episodes", 0)))
                print(f"resumed from {checkpoint_dir} at episode {episode}", file=sys.stderr)

            start = time.perf_counter()
            def at_point(method):
                """`method` of the experiment at one run's sweep values (traced numbers)."""
                def one(point_values, state):
                    if sweep is None:
                        return getattr(experiment, method)(state)
                    swept = config_at(config, sweep.fields, list(point_values))
                    with jax.ensure_compile_time_eval():  # specs and shapes stay concrete
                        swept_experiment = Experiment(swept, check=False)
                    return getattr(swept_experiment, method)(state)
                return one

            placed = dict(in_shardings=sharding, out_shardings=sharding)
            chunk_lowered = jax.jit(grouped_runs(at_point("run_chunk"), seed_group, sharding),
                                    **placed).lower(values, state)
            evaluate_lowered = jax.jit(jax.vmap(at_point("evaluate")),
                                       **placed).lower(values, state)
            if wandb_per_seed:  # lowered, not yet compiled: a wrong name fails before compilation
                _check_per_seed(wandb_per_seed, chunk_lowered.out_info[1],
                                evaluate_lowered.out_info)
            chunk_program = chunk_lowered.compile()
            evaluate_program = evaluate_lowered.compile()
            chunk = functools.partial(chunk_program, values)
            evaluate = functools.partial(evaluate_program, values)
            compile_s = time.perf_counter() - start

            per_chunk = config.chunk_episodes
            stop = config.episodes if stop_after is None else min(stop_after, config.episodes)
            bar = tqdm(total=config.episodes, initial=episode, unit="ep", disable=not progress,
                       dynamic_ncols=True, file=sys.stderr)
            request.training = True
            while episode < stop and request.signal is None:
                tick = time.perf_counter()
                new_state, metrics = chunk(state)
                metrics = host_rows(metrics)  # waits for the chunk; this host's runs
                bad = nonfinite_report(metrics, run_names)
                if bad:  # keep the last good state, checkpointed, and say where it broke
                    if checkpointer is not None and saved_at != episode and episode > 0:
                        save_checkpoint()
                        saved_at = episode
                    if checkpointer is None:
                        where = "nothing saved (no checkpoint_dir)"
                    elif checkpointer.wait() or checkpointer.latest() is None:
                        where = "no good checkpoint yet"
                    else:
                        where = (f"last good checkpoint: episode {checkpointer.latest()} in "
                                 f"{checkpoint_dir}")
                    raise NonFiniteError(
                        f"NaN or Inf in episodes {episode + 1}-{episode + per_chunk}:\n  "
                        + "\n  ".join(bad) + f"\n{where}; rerun with --debug-nans "
                        "(jax_debug_nans) to find the operation")
                state = new_state  # only once the chunk has finished: Ctrl-C keeps the last one
                elapsed = time.perf_counter() - tick
                train_s += elapsed
                episode += per_chunk
                chunk_steps = float(np.sum(metrics["episode_length"])) * per_chunk
                steps_done += chunk_steps
                rows.append(metrics)
                ends.append(episode)
                log = flatten_metrics(metrics)
                for line in watch.update(metrics, episode):
                    tqdm.write(line, file=sys.stderr)
                flagged = watch.flagged()
                log.update({f"alarms/{name[len(AlarmWatch.PREFIX):]}": count
                            for name, count in flagged.items()})
                log["throughput/seed_episodes_per_s"] = per_chunk * len(mine) / elapsed
                log["throughput/env_steps_per_s"] = chunk_steps / elapsed
                log["throughput/compile_s"] = compile_s
                log["throughput/devices"] = sharding.num_devices
                sitting_rate = (episode - first) * len(mine) / train_s  # seed-episodes/s
                if episode % config.eval_period == 0 or episode == config.episodes:
                    eval_metrics = host_rows(evaluate(state))
                    evals.append(eval_metrics)
                    eval_at.append(episode)
                    log.update(flatten_metrics(eval_metrics))
                    if not progress:  # a line per evaluation for logs of unattended runs
                        print(f"episode {episode}/{config.episodes}: return "
                              f"{log['return']:.3f} (training), {log['eval/return']:.3f} "
                              f"(evaluation), {sitting_rate:.1f} "
                              "seed-episodes/s", file=sys.stderr, flush=True)
                for name in wandb_per_seed:  # each run's own series, where asked
                    source = metrics if name in metrics else (
                        evals[-1] if eval_at[-1:] == [episode] else {})
                    if name in source:
                        log.update({f"seed/{run}/{name}": float(v)
                                    for run, v in zip(run_names, source[name], strict=True)})
                if on_chunk is not None:
                    probes.append((episode, on_chunk(state, episode)))
                logger.log(log, step=episode)
                bar.update(per_chunk)
                stuck = sum(flagged.values())
                bar.set_postfix(ep_s=f"{sitting_rate:.0f}",
                                steps_s=f"{steps_done / train_s:.0f}",
                                ret=f"{log['return']:.2f}",
                                **({"alarms": stuck} if stuck else {}), refresh=False)
                if checkpointer is not None and (
                        (episode // per_chunk) % checkpoint_every == 0 or episode == stop):
                    save_checkpoint()
                    saved_at = episode
            if request.signal is not None:
                raise KeyboardInterrupt(request.signal)
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted: {episode} of {config.episodes} episodes done "
                  f"({len(evals)} evaluations); results so far are kept", file=sys.stderr)
            # A second signal may land mid-bookkeeping: save only a consistent history.
            consistent = len(ends) == len(rows) and (not ends or ends[-1] == episode)
            if checkpointer is not None and saved_at != episode and episode > 0 and consistent:
                save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            run_dir = logger.run_dir
            logger.finish()
            if checkpointer is not None:
                checkpointer.wait()
                checkpointer.close()
                print(f"checkpoint of episode {checkpointer.latest()} in {checkpoint_dir}",
                      file=sys.stderr)

    total_s, total_steps = earlier[0] + train_s, earlier[1] + steps_done
    trained = earlier[2] + episode - first
    timing = {  # over every sitting that recorded its time; None if nothing was timed
        "compile_s": compile_s,
        "devices": sharding.num_devices,
        "train_s": total_s,
        "num_seeds": config.num_seeds,
        "runs": runs,
        # Below: this host's runs (all of them on one host) and its throughput.
        "processes": jax.process_count(),
        "local_runs": [int(i) for i in mine],
        "episodes_per_s": trained * len(mine) / total_s if total_s else None,
        "env_steps_per_s": total_steps / total_s if total_s else None,
    }
    return RunResult(
        config=config, episodes=np.asarray(ends), metrics=_stack(rows),
        eval_episodes=np.asarray(eval_at), eval_metrics=_stack(evals), probes=probes,
        alarms=watch.fired, timing=timing, state=state, wandb_dir=run_dir, interrupted=interrupted,
        sweep=sweep,
    )
