"""Several hosts, one run: JAX's distributed runtime and the host's own part of it.

Every host starts the same command; `initialize` joins them into one JAX job (before
any computation), after which `jax.devices()` lists every host's devices and the
runner lays the seed axis over all of them. Each host then fetches, logs and writes only
the seeds that live on its own devices (`host_rows`).

    # host i of N (the same command on every host, i = 0 .. N-1):
    python -m benchmarks.cleanup --seeds 256 --coordinator HOST0:1234 \
        --num-processes N --process-id i
    # or with the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
    # or `--num-processes 0` where JAX detects the cluster itself (SLURM, Open MPI, TPU pods)
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict | None:
    """The job to join, from the arguments or else the JAX_* variables; None: one
    process (nothing asked). num_processes 0: let JAX detect the cluster."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if num_processes is None and coordinator is None and process_id is None:
        return None
    if num_processes == 0:  # SLURM, Open MPI, Kubernetes, TPU: JAX fills in the rest
        return {}
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError("a multi-host run needs the coordinator's HOST:PORT, the number of "
                         "processes and this process's id (flags --coordinator, "
                         "--num-processes, --process-id, or JAX_COORDINATOR_ADDRESS, "
                         "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or --num-processes 0 to let "
                         "JAX detect the cluster")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} of {num_processes} processes: need "
                         "num_processes >= 1 and 0 <= process_id < num_processes")
    return {"coordinator_address": coordinator, "num_processes": num_processes,
            "process_id": process_id}


def join_from_argv(argv: list[str]) -> bool:
    """`initialize` from a command line's --coordinator, --num-processes and
    --process-id (either `--flag value` or `--flag=value`) or the JAX_* variables.

    The benchmarks' package calls it on import, before their modules import jumanji,
    which touches the backend, after which JAX can no longer join a job."""
    flags = {"--coordinator": None, "--num-processes": None, "--process-id": None}
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        if name in flags:
            flags[name] = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    number = lambda text: None if text is None else int(text)  # noqa: E731
    try:
        return initialize(flags["--coordinator"], number(flags["--num-processes"]),
                          number(flags["--process-id"]))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins the multi-host job that the arguments or variables describe (a no-op when
    they describe none, or when this process has joined already). Call it before
    anything touches a device."""
    if jax.distributed.is_initialized():
        return True
    job = settings(coordinator, num_processes, process_id)
    if job is None:
        return False
    # CPU processes exchange data through gloo; GPUs and TPUs use their own links.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**job)
    return True


def place(values: np.ndarray, sharding: Sharding) -> jax.Array:
    """A host array onto `sharding`, each process supplying its own devices' slices
    (every process holds the same `values`)."""
    values = np.asarray(values)
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def host_rows(tree, axis: int = 0):
    """This process's rows (along the run axis `axis`) of a tree of arrays, as NumPy
    (all rows with one process)."""
    def fetch(array):
        if not isinstance(array, jax.Array) or array.is_fully_addressable:
            return np.asarray(jax.device_get(array))
        out = {}
        for shard in array.addressable_shards:
            start = shard.index[axis].indices(array.shape[axis])[0]
            out.setdefault(start, np.asarray(shard.data))
        return np.concatenate([out[k] for k in sorted(out)], axis=axis)
    return jax.tree.map(fetch, tree)


def _rows_by_run(runs: NamedSharding) -> NamedSharding:
    """History arrays `[rows, runs, ...]`: the run axis laid out as `runs` lays it."""
    return NamedSharding(runs.mesh, PartitionSpec(None, *runs.spec))


def global_history(history: dict, runs: NamedSharding):
    """A host's history (per-run leaves `[rows, local runs, ...]`, others `[rows]`,
    the same on every host) as arrays over the whole job, so that a multi-host
    checkpoint holds every host's runs."""
    over_runs = _rows_by_run(runs)

    def lift(leaf):
        leaf = np.asarray(leaf)
        if leaf.ndim < 2:
            return leaf
        total = leaf.shape[1] * jax.process_count()  # whole seeds per host, evenly
        return jax.make_array_from_process_local_data(
            over_runs, leaf, (leaf.shape[0], total, *leaf.shape[2:]))
    return jax.tree.map(lift, history)


def history_target(saved_metadata, runs: NamedSharding):
    """What a multi-host job restores a checkpoint's history into: arrays over the run
    axis of the whole job for per-run leaves, NumPy for the others."""
    over_runs = _rows_by_run(runs)

    def target(leaf):
        shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        if len(shape) >= 2:
            return jax.ShapeDtypeStruct(shape, dtype, sharding=over_runs)
        return np.zeros(shape, dtype)
    return jax.tree.map(target, saved_metadata)


def host_suffix() -> str:
    """'' with one process, '.host{i}' with several: each host's files apart."""
    return "" if jax.process_count() == 1 else f".host{jax.process_index()}"
