"""The host loop: compiles the vmapped chunk once, then evaluates, logs and reports
progress between chunks. Per-seed metrics are kept on the host, one row per chunk."""

from __future__ import annotations

import contextlib
import dataclasses
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
from jaxsim.schedule import Schedule
from jaxsim.sweep import Sweep, config_at
from jaxsim.train import EpisodeMetrics, Experiment, TrainState, over_runs, seed_keys


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

    @property
    def episode(self) -> EpisodeMetrics:
        """The per-episode metrics, typed, each `[rows, runs, ...]` (chunk means)."""
        return EpisodeMetrics.from_metrics(self.metrics)


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
        self.began: dict[str, np.ndarray] = {}
        self.reported: dict[str, np.ndarray] = {}
        self.fired: list[dict] = []

    def update(self, metrics: dict, episode: int, length: int | None = None) -> list[str]:
        """Counts this chunk (of `length` episodes, default `chunk_episodes`, ending at
        `episode`); returns the new warnings."""
        lines = []
        start = episode - (self.chunk_episodes if length is None else length)
        for name, value in metrics.items():
            if not name.startswith(self.PREFIX):
                continue
            on = np.asarray(value) > 0.5  # [runs, ...]
            streak = np.where(on, self.streaks.get(name, np.zeros(on.shape, int)) + 1, 0)
            # The episode each streak began after (where it starts in this chunk: here).
            began = np.where(streak == 1, start, self.began.get(name, np.zeros(on.shape, int)))
            reported = self.reported.get(name, np.zeros(on.shape, bool))
            new = (streak >= self.period) & ~reported
            self.streaks[name], self.reported[name] = streak, (reported | new) & on
            self.began[name] = began
            for index in zip(*np.nonzero(new), strict=True):
                run, entry = int(index[0]), tuple(int(i) for i in index[1:])
                since = int(began[index])
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


@dataclass(frozen=True)
class RunOptions:
    """How `run` drives a config: logging, checkpoints, where it starts and stops, how
    its runs are laid out. Only `sweep` (more runs) and `mechanism_from` (another
    start) change what is trained; see `run` for each."""

    wandb_mode: str = "disabled"
    wandb_project: str = "iqflow-jax"
    wandb_name: str | None = None
    wandb_group: str | None = None
    wandb_dir: str | None = None
    on_chunk: Callable[[TrainState, int], Any] | None = None
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    resume: bool = False
    stop_after: int | None = None
    mechanism_from: str | None = None
    sweep: Sweep | None = None
    wandb_per_seed: tuple[str, ...] = ()
    seed_group: int | None = None
    debug_nans: bool = False

    def check(self, config: TrainConfig) -> None:
        """Raise ValueError on options that cannot work with `config`."""
        if self.stop_after is not None and (self.stop_after <= 0
                                            or self.stop_after % config.chunk_episodes):
            raise ValueError(f"stop_after ({self.stop_after}) must be a positive multiple of "
                             f"chunk_episodes ({config.chunk_episodes})")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume needs checkpoint_dir")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 chunk, got {self.checkpoint_every}")


@dataclass(frozen=True)
class Layout:
    """The run axis (seeds times sweep points, point-major) over the devices."""

    sharding: NamedSharding
    runs: int
    points: int
    mine: list[int]  # this process's runs: all of them on one host
    names: list  # this process's runs by name: their seeds (and sweep points)


def layout(config: TrainConfig, options: RunOptions) -> Layout:
    points = 1 if options.sweep is None else options.sweep.size
    runs = points * config.num_seeds  # every sweep point trains every seed
    if jax.process_count() > 1 and runs % jax.device_count():
        raise ValueError(f"{runs} runs (seeds x sweep points) do not divide evenly over "
                         f"the job's {jax.device_count()} devices: every host must train "
                         "whole runs")
    sharding = seed_sharding(runs)  # every leaf leads with the run axis
    group = options.seed_group
    if group is not None:
        per_device = runs // sharding.num_devices
        if not _is_positive_int(group) or per_device % group:
            raise ValueError(f"seed_group ({group}) must be a positive divisor of the "
                             f"{per_device} runs on each of the {sharding.num_devices} "
                             f"device(s) ({runs} runs: seeds x sweep points)")
    names = [config.first_seed + i % config.num_seeds for i in range(runs)]
    if options.sweep is not None:
        names = [f"{seed} at {options.sweep.name(i // config.num_seeds)}"
                 for i, seed in enumerate(names)]
    mine = [int(i) for i in host_rows(place(np.arange(runs), sharding))]
    return Layout(sharding, runs, points, mine, [names[i] for i in mine])


def _arrays(probe) -> bool:
    """Whether `probe` is a non-empty dict of arrays (what a checkpoint can hold)."""
    return isinstance(probe, dict) and bool(probe) and all(
        isinstance(v, (np.ndarray, jax.Array)) for v in probe.values())


@dataclass
class History:
    """What the host keeps of a run, row by row: each chunk's metrics and the episode
    it ended at, each evaluation's and its episode."""

    rows: list = field(default_factory=list)
    ends: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    eval_at: list = field(default_factory=list)
    probes: list = field(default_factory=list)  # (episode, on_chunk output)

    def consistent(self, episode: int) -> bool:
        """Whether the rows are whole up to `episode` (a second signal may land between
        the appends of one chunk)."""
        return len(self.ends) == len(self.rows) and (not self.ends or self.ends[-1] == episode)

    def to_checkpoint(self) -> dict:
        """Probes are saved where every one is a non-empty dict of arrays (a resumed
        run then has them all); others live on the host only."""
        saved = {"metrics": _stack(self.rows), "ends": np.asarray(self.ends, np.int64)}
        if self.evals:
            saved.update(evals=_stack(self.evals), eval_at=np.asarray(self.eval_at, np.int64))
        if self.probes and all(_arrays(p) for _, p in self.probes):
            saved.update(probes=_stack([p for _, p in self.probes]),
                         probe_at=np.asarray([e for e, _ in self.probes], np.int64))
        return saved

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "History":
        probes = list(zip([int(e) for e in saved.get("probe_at", [])],
                          _unstack(saved.get("probes", {})), strict=True))
        return cls(rows=_unstack(saved["metrics"]), ends=[int(e) for e in saved["ends"]],
                   evals=_unstack(saved.get("evals", {})),
                   eval_at=[int(e) for e in saved.get("eval_at", [])], probes=probes)


@dataclass
class Clock:
    """Training time and work, over this sitting and the earlier ones whose checkpoints
    recorded theirs."""

    first: int = 0  # the episode this sitting started from
    earlier_s: float = 0.0
    earlier_steps: float = 0.0
    earlier_episodes: int = 0
    train_s: float = 0.0
    steps: float = 0.0
    compile_s: float | None = None

    @classmethod
    def resumed(cls, meta: dict) -> "Clock":
        return cls(first=int(meta["episode"]), earlier_s=float(meta.get("train_s", 0.0)),
                   earlier_steps=float(meta.get("env_steps", 0.0)),
                   earlier_episodes=int(meta.get("trained_episodes", 0)))

    def rate(self, episode: int, runs: int) -> float:
        """This sitting's seed-episodes per second."""
        return (episode - self.first) * runs / self.train_s

    def meta(self, episode: int) -> dict:
        return {"train_s": self.earlier_s + self.train_s,
                "env_steps": self.earlier_steps + self.steps,
                "trained_episodes": self.earlier_episodes + episode - self.first}

    def timing(self, episode: int, config: TrainConfig, lay: Layout) -> dict:
        total = self.meta(episode)
        seconds = total["train_s"]
        return {  # over every sitting that recorded its time; None if nothing was timed
            "compile_s": self.compile_s,
            "devices": lay.sharding.num_devices,
            "train_s": seconds,
            "num_seeds": config.num_seeds,
            "runs": lay.runs,
            # Below: this host's runs (all of them on one host) and its throughput.
            "processes": jax.process_count(),
            "local_runs": lay.mine,
            "episodes_per_s": total["trained_episodes"] * len(lay.mine) / seconds
            if seconds else None,
            "env_steps_per_s": total["env_steps"] / seconds if seconds else None,
        }


def run(config: TrainConfig, options: RunOptions | None = None, **kwargs) -> RunResult:
    """Train every seed of `config` in one compiled program; `options` (or its fields
    as keywords) say how (RunOptions).

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

    The episodes are cut into chunks by `jaxsim.schedule.Schedule`, as in
    `jaxsim.train.make_train`: a run that chunks do not divide ends with a shorter one.
    """
    options = RunOptions(**kwargs) if options is None else dataclasses.replace(options, **kwargs)
    validate(config)  # before any compilation
    options.check(config)
    enable_compilation_cache()
    with jax.debug_nans(True) if options.debug_nans else contextlib.nullcontext():
        return _Run(config, options).go()


def _logger(config: TrainConfig, options: RunOptions) -> WandbLogger:
    name, group = options.wandb_name, options.wandb_group
    if jax.process_count() > 1:  # one W&B run per host, grouped
        host = f"host{jax.process_index()}"
        group = group or name or f"{config.env}-{jax.process_count()}hosts"
        name = f"{name}-{host}" if name else host
    return WandbLogger(options.wandb_mode, project=options.wandb_project, name=name,
                       group=group, config=config_json(config), directory=options.wandb_dir)


class _Run:
    """One sitting of `run`: built, started, trained chunk by chunk, finished."""

    def __init__(self, config: TrainConfig, options: RunOptions):
        self.config, self.options = config, options
        self.schedule = Schedule.of(config)
        self.lay = layout(config, options)
        directory = options.checkpoint_dir
        if options.mechanism_from is not None and not options.resume:
            check_mechanism_source(options.mechanism_from, config)
        self.checkpointer = Checkpointer(directory, config) if directory else None
        if self.checkpointer is not None and not options.resume and \
                self.checkpointer.latest() is not None:
            raise ValueError(f"{directory} already holds checkpoints (latest: episode "
                             f"{self.checkpointer.latest()}); pass resume to continue that "
                             f"run or choose another directory")
        self.experiment = Experiment(config, check=False)  # validated by `run`
        self.logger = _logger(config, options)
        sharding, points = self.lay.sharding, self.lay.points
        self.init = jax.jit(jax.vmap(self.experiment.init), out_shardings=sharding)
        self.keys = place(jnp.tile(seed_keys(config), (points, 1)), sharding)
        sweep = options.sweep
        self.values = place(sweep.values(config.num_seeds) if sweep is not None
                            else jnp.zeros((self.lay.runs, 0), jnp.float32), sharding)
        self.watch = AlarmWatch(config.eval_period // config.chunk_episodes,
                                config.chunk_episodes, self.lay.names)
        self.history, self.clock = History(), Clock()
        self.state, self.episode, self.saved_at = None, 0, 0
        self.bar, self.interrupted = None, False

    # --- starting -----------------------------------------------------------------
    def start_fresh(self) -> None:
        self.state = self.init(self.keys)
        source = self.options.mechanism_from
        if source is not None:  # before the run's first step and checkpoint
            mechanism, loaded_at = load_mechanism(source, self.state.mechanism)
            # The loaded part arrives as host arrays; the rest is already in place.
            place_it = lambda x: x if isinstance(x, jax.Array) else place(  # noqa: E731
                x, self.lay.sharding)
            self.state = self.state.replace(mechanism=jax.tree.map(place_it, mechanism))
            print(f"mechanism's incentive network from {source} (episode {loaded_at})",
                  file=sys.stderr)

    def start_resumed(self) -> None:
        """Restored into the state's shapes alone: no fresh state is built first."""
        sharding, directory = self.lay.sharding, self.options.checkpoint_dir
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                               sharding=sharding),
                                jax.eval_shape(self.init, self.keys))
        self.state, saved, meta = self.checkpointer.restore(abstract, runs=sharding)
        sweep = self.options.sweep
        swept = None if sweep is None else sweep.to_json()
        if meta.get("sweep") != swept:
            raise CheckpointError(f"checkpoint in {directory} was written with sweep "
                                  f"{meta.get('sweep')}, this run has {swept}")
        self.history = History.from_checkpoint(saved)
        previous = 0
        for row, end in zip(self.history.rows, self.history.ends, strict=True):
            self.watch.update(row, end, end - previous)  # the alarms' streaks as they stood
            previous = end
        self.episode = self.saved_at = int(meta["episode"])
        if self.episode < self.config.episodes and not self.schedule.on_boundary(self.episode):
            raise CheckpointError(
                f"the checkpoint in {directory} ends a shorter last chunk (episode "
                f"{self.episode}, chunks of {self.config.chunk_episodes}); a run can go on "
                "only from the end of a full chunk")
        self.clock = Clock.resumed(meta)
        print(f"resumed from {directory} at episode {self.episode}", file=sys.stderr)

    # --- the programs ---------------------------------------------------------------
    def at_point(self, method: str, *args):
        """`method(state, *args)` of the experiment at one run's sweep values (traced)."""
        config, sweep = self.config, self.options.sweep

        def one(point_values, state):
            if sweep is None:
                return getattr(self.experiment, method)(state, *args)
            swept = config_at(config, sweep.fields, list(point_values))
            with jax.ensure_compile_time_eval():  # specs and shapes stay concrete
                swept_experiment = Experiment(swept, check=False)
            return getattr(swept_experiment, method)(state, *args)
        return one

    def compile(self, stop: int) -> None:
        """One chunk program per chunk length this sitting runs (a shorter last chunk:
        two) and the evaluation, each lowered, checked, then compiled."""
        start = time.perf_counter()
        sharding, group = self.lay.sharding, self.options.seed_group
        placed = dict(in_shardings=sharding, out_shardings=sharding)
        lengths = self.schedule.lengths(self.episode, stop) or [self.config.chunk_episodes]
        lowered = {n: jax.jit(grouped_runs(self.at_point("run_chunk", n), group, sharding),
                              **placed).lower(self.values, self.state) for n in lengths}
        evaluate = jax.jit(jax.vmap(self.at_point("evaluate")), **placed).lower(
            self.values, self.state)
        if self.options.wandb_per_seed:  # lowered, not compiled: a wrong name fails first
            _check_per_seed(self.options.wandb_per_seed,
                            next(iter(lowered.values())).out_info[1], evaluate.out_info)
        self.chunks = {n: functools.partial(program.compile(), self.values)
                       for n, program in lowered.items()}
        self.evaluate = functools.partial(evaluate.compile(), self.values)
        self.clock.compile_s = time.perf_counter() - start
        for said in (self.schedule.describe(), self.experiment.mechanism.describe()):
            if said and self.episode < stop:
                print(said, file=sys.stderr)

    # --- one chunk ------------------------------------------------------------------
    def guard(self, metrics: dict, length: int) -> None:
        """NaN or Inf: keep the last good state, checkpointed, and say where it broke."""
        bad = nonfinite_report(metrics, self.lay.names)
        if not bad:
            return
        checkpointer, directory = self.checkpointer, self.options.checkpoint_dir
        if checkpointer is not None and self.saved_at != self.episode and self.episode > 0:
            self.save()
        if checkpointer is None:
            where = "nothing saved (no checkpoint_dir)"
        elif checkpointer.wait() or checkpointer.latest() is None:
            where = "no good checkpoint yet"
        else:
            where = f"last good checkpoint: episode {checkpointer.latest()} in {directory}"
        raise NonFiniteError(
            f"NaN or Inf in episodes {self.episode + 1}-{self.episode + length}:\n  "
            + "\n  ".join(bad) + f"\n{where}; rerun with --debug-nans "
            "(jax_debug_nans) to find the operation")

    def save(self) -> None:
        sweep = self.options.sweep
        self.checkpointer.save(self.episode, self.state, self.history.to_checkpoint(), {
            "seeds": self.config.num_seeds, "sweep": None if sweep is None else sweep.to_json(),
            **self.clock.meta(self.episode)}, runs=self.lay.sharding)
        self.saved_at = self.episode

    def chunk(self) -> None:
        """Train one chunk, then the host's work on it, in order: history and alarms,
        throughput, evaluation, per-seed series, probes, W&B, progress, checkpoint."""
        tick = time.perf_counter()
        length = self.schedule.length_from(self.episode)
        new_state, metrics = self.chunks[length](self.state)
        metrics = host_rows(metrics)  # waits for the chunk; this host's runs
        self.guard(metrics, length)
        self.state = new_state  # only once the chunk has finished: Ctrl-C keeps the last one
        elapsed = time.perf_counter() - tick
        self.clock.train_s += elapsed
        self.episode += length
        chunk_steps = float(np.sum(EpisodeMetrics.from_metrics(metrics).episode_length)) * length
        self.clock.steps += chunk_steps
        self.history.rows.append(metrics)
        self.history.ends.append(self.episode)
        log = flatten_metrics(metrics)
        self.note_alarms(metrics, log, length)
        log["throughput/seed_episodes_per_s"] = length * len(self.lay.mine) / elapsed
        log["throughput/env_steps_per_s"] = chunk_steps / elapsed
        log["throughput/compile_s"] = self.clock.compile_s
        log["throughput/devices"] = self.lay.sharding.num_devices
        if self.schedule.eval_due(self.episode):
            self.evaluate_now(log)
        self.per_seed(metrics, log)
        if self.options.on_chunk is not None:
            self.history.probes.append((self.episode,
                                        self.options.on_chunk(self.state, self.episode)))
        self.logger.log(log, step=self.episode)
        self.show(length, log)
        if self.checkpointer is not None and (
                (self.episode // self.config.chunk_episodes) % self.options.checkpoint_every == 0
                or self.episode == self.stop):
            self.save()

    def note_alarms(self, metrics: dict, log: dict, length: int) -> None:
        for line in self.watch.update(metrics, self.episode, length):
            tqdm.write(line, file=sys.stderr)
        self.flagged = self.watch.flagged()  # for the progress bar too
        log.update({f"alarms/{name[len(AlarmWatch.PREFIX):]}": count
                    for name, count in self.flagged.items()})

    def evaluate_now(self, log: dict) -> None:
        eval_metrics = host_rows(self.evaluate(self.state))
        self.history.evals.append(eval_metrics)
        self.history.eval_at.append(self.episode)
        log.update(flatten_metrics(eval_metrics))
        if not self.options.progress:  # a line per evaluation for logs of unattended runs
            print(f"episode {self.episode}/{self.config.episodes}: return "
                  f"{log['return']:.3f} (training), {log['eval/return']:.3f} (evaluation), "
                  f"{self.clock.rate(self.episode, len(self.lay.mine)):.1f} "
                  "seed-episodes/s", file=sys.stderr, flush=True)

    def per_seed(self, metrics: dict, log: dict) -> None:
        """Each run's own series, where asked."""
        history = self.history
        for name in self.options.wandb_per_seed:
            source = metrics if name in metrics else (
                history.evals[-1] if history.eval_at[-1:] == [self.episode] else {})
            if name in source:
                log.update({f"seed/{run}/{name}": float(v)
                            for run, v in zip(self.lay.names, source[name], strict=True)})

    def show(self, length: int, log: dict) -> None:
        self.bar.update(length)
        stuck = sum(self.flagged.values())
        self.bar.set_postfix(ep_s=f"{self.clock.rate(self.episode, len(self.lay.mine)):.0f}",
                             steps_s=f"{self.clock.steps / self.clock.train_s:.0f}",
                             ret=f"{log['return']:.2f}",
                             **({"alarms": stuck} if stuck else {}), refresh=False)

    # --- the sitting ----------------------------------------------------------------
    def go(self) -> RunResult:
        # From here on Ctrl-C or SIGTERM only asks the run to stop: during setup and
        # compilation (which a signal cannot cut short) training then never starts, and
        # the run still ends through the bookkeeping below.
        config, options = self.config, self.options
        with stop_signals() as request:
            try:
                self.start_resumed() if options.resume else self.start_fresh()
                self.stop = config.episodes if options.stop_after is None else min(
                    options.stop_after, config.episodes)
                self.compile(self.stop)
                self.bar = tqdm(total=config.episodes, initial=self.episode, unit="ep",
                                disable=not options.progress, dynamic_ncols=True,
                                file=sys.stderr)
                request.training = True
                while self.episode < self.stop and request.signal is None:
                    self.chunk()
                if request.signal is not None:
                    raise KeyboardInterrupt(request.signal)
            except KeyboardInterrupt:
                self.on_interrupt()
            finally:
                self.finish()
        return self.result()

    def on_interrupt(self) -> None:
        self.interrupted = True
        print(f"\ninterrupted: {self.episode} of {self.config.episodes} episodes done "
              f"({len(self.history.evals)} evaluations); results so far are kept",
              file=sys.stderr)
        # A second signal may land mid-bookkeeping: save only a consistent history.
        if self.checkpointer is not None and self.saved_at != self.episode and \
                self.episode > 0 and self.history.consistent(self.episode):
            self.save()

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.run_dir = self.logger.run_dir
        self.logger.finish()
        if self.checkpointer is not None:
            self.checkpointer.wait()
            self.checkpointer.close()
            print(f"checkpoint of episode {self.checkpointer.latest()} in "
                  f"{self.options.checkpoint_dir}", file=sys.stderr)

    def result(self) -> RunResult:
        history = self.history
        return RunResult(
            config=self.config, episodes=np.asarray(history.ends),
            metrics=_stack(history.rows), eval_episodes=np.asarray(history.eval_at),
            eval_metrics=_stack(history.evals), probes=history.probes, alarms=self.watch.fired,
            timing=self.clock.timing(self.episode, self.config, self.lay), state=self.state,
            wandb_dir=self.run_dir, interrupted=self.interrupted, sweep=self.options.sweep,
        )
