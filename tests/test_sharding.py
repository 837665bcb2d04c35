"""The seed axis over several devices: 4 forced CPU devices give every seed the
numbers of the 1-device run (XLA_FLAGS must be set before JAX starts, hence a
subprocess)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxsim.runner import run, seed_sharding
from tests.test_engine import tiny_config

CHILD = """
import sys, numpy as np, jax
from jaxsim.runner import run
from tests.test_engine import tiny_config
devices = int(sys.argv[2])
assert len(jax.devices()) == devices, jax.devices()
from jaxsim.config import NoMechanismConfig
layouts = {4: (("plain", None), ("grouped", 1)),  # grouped: 2 loops per device
           1: (("single", None), ("one device, grouped", 4))}
for name, group in layouts[devices]:
    result = run(tiny_config(num_seeds=8, mechanism=NoMechanismConfig()), progress=False,
                 seed_group=group)
    assert result.timing["devices"] == devices
    np.savez(f"{sys.argv[1]}.{name}.npz",
             **{k.replace("/", "."): v for k, v in result.metrics.items()},
             eval_return=result.eval_metrics["eval/return"],
             params=np.concatenate([np.ravel(x) for x in jax.tree.leaves(result.state.agents)]))
"""


def forced_devices(count: int, users_compiler: bool = False) -> str:
    """XLA_FLAGS for a child process with `count` CPU devices, keeping the suite's own
    flags (conftest), so that its numbers compare with this process's bit for bit;
    `users_compiler`: without the suite's legacy CPU emitters (whose numbers depend on
    the layout by an ulp), for the tests that a layout changes no number."""
    flags = os.environ.get("XLA_FLAGS", "")
    if users_compiler:
        flags = " ".join(f for f in flags.split() if not f.startswith(LEGACY_EMITTERS))
    return f"{flags} --xla_force_host_platform_device_count={count}"


LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters"


def run_children(script: str, out, *device_counts: int, timeout: int = 550) -> None:
    """`script OUT DEVICES` in one child process per device count, at once, each with
    that many forced CPU devices and the compiler users run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    children = [subprocess.Popen(
        [sys.executable, "-c", script, str(out), str(count)], cwd=root,
        env={**os.environ, "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": forced_devices(count, users_compiler=True)})
        for count in device_counts]
    try:
        assert [child.wait(timeout=timeout) for child in children] == [0] * len(children)
    finally:
        for child in children:
            child.kill()


def test_seed_sharding_uses_the_most_devices_that_divide_the_seeds():
    devices = jax.devices() * 6  # the mesh only needs distinct positions to count
    assert seed_sharding(8, devices[:4]).num_devices == 4
    assert seed_sharding(6, devices[:4]).num_devices == 3
    assert seed_sharding(7, devices[:4]).num_devices == 1


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_four_cpu_devices_give_the_one_device_numbers(tmp_path):
    """Also with `seed_group`: each device looping over its own seeds one at a time
    (shard_map over the loop of `train.over_runs`) changes no number."""
    out = tmp_path / "sharded"
    run_children(CHILD, out, 4, 1)  # 1: the single run, and one device in two groups
    single = np.load(f"{out}.single.npz")
    layouts = {name: np.load(f"{out}.{name}.npz")
               for name in ("plain", "grouped", "one device, grouped")}
    for layout, sharded in layouts.items():
        assert sorted(sharded.files) == sorted(single.files)
        for name in single.files:  # every metric, the evaluations, the agents' parameters
            if layout == "plain":
                np.testing.assert_array_equal(sharded[name], single[name],
                                              err_msg=f"{layout} {name}")
            else:  # a loop over one seed at a time: bit for bit on the earlier CPU-2, an
                # ulp apart on the EPYC of 2026-12-07 (48 of 4,000 parameters, <= 3e-8)
                np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-7,
                                           err_msg=f"{layout} {name}")


LEARNED = """
import sys, numpy as np, jax
from jaxsim.runner import run
from tests.test_sharding import learned_configs
devices = int(sys.argv[2])
assert len(jax.devices()) == devices, jax.devices()
for name, config in learned_configs().items():
    layouts = {4: {"four": config},  # 4 devices, a seed each
               1: {"alone": config.replace(num_seeds=1, first_seed=3), "one": config}}
    for layout, layout_config in layouts[devices].items():
        result = run(layout_config, progress=False)
        assert result.timing["devices"] == devices
        np.savez(f"{sys.argv[1]}.{name}.{layout}.npz", *jax.tree.leaves(result.state))
"""


def learned_configs() -> dict:
    """IQ-Flow (step B ran) and ID, 4 seeds, a few episodes each."""
    from jaxsim.config import IDConfig, escape_room

    return {"iqflow": tiny_config(episodes=20, chunk_episodes=10, eval_period=20),
            "id": escape_room(3, 1, "id", episodes=4, chunk_episodes=2, eval_period=4,
                              num_seeds=4, seed=5,
                              mechanism=IDConfig(incentive_hidden=(8,), critic_hidden=(8,)))}


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_with_a_learning_mechanism_a_seed_keeps_its_numbers_per_device_width(tmp_path):
    """What holds on several devices for IQ-Flow and ID: a seed's numbers are fixed by
    how many runs each device trains at once. 4 devices x 4 seeds give seed i exactly
    the numbers of seed i trained alone on one device (here seed 3); 1 device x 4 seeds (a vmap 4
    wide) rounds the batched float32 matmuls differently, by an ulp or so per step
    (benchmarks/RESULTS.md measures how learning amplifies that over training)."""
    out = tmp_path / "learned"
    run_children(LEARNED, out, 4, 1)

    def leaves(name: str, layout: str) -> list:
        saved = np.load(f"{out}.{name}.{layout}.npz")
        return [saved[k] for k in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]

    for name in learned_configs():
        four_devices, seed = leaves(name, "four"), 3
        for a, b in zip(four_devices, leaves(name, "alone"), strict=True):
            np.testing.assert_array_equal(a[seed], np.asarray(b)[0], err_msg=name)
        for a, b in zip(four_devices, leaves(name, "one"), strict=True):
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("group", [3, 0, -2, 2.0, True])
def test_a_seed_group_that_does_not_split_the_seeds_is_refused_before_compiling(group):
    with pytest.raises(ValueError, match="seed_group"):
        run(tiny_config(num_seeds=4), progress=False, seed_group=group)


def test_the_compilation_cache_is_on_by_default_in_a_folder_per_instruction_set(
        tmp_path, monkeypatch):
    """Unset, IQFLOW_COMPILATION_CACHE means on, also on CPU, where the folder is named
    by the host's instruction set; 0 turns it off."""
    from jax._src import compilation_cache

    from jaxsim import runner

    previous = jax.config.jax_compilation_cache_dir  # the suite's own cache
    monkeypatch.setattr(runner, "DEFAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("IQFLOW_COMPILATION_CACHE", raising=False)
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        directory = runner.enable_compilation_cache()
        assert directory == runner.default_cache_dir(jax.default_backend())
        assert jax.config.jax_compilation_cache_dir == directory and os.path.isdir(directory)
        if jax.default_backend() == "cpu":
            assert os.path.basename(directory) == f"cpu-{runner.host_isa_tag()}"
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("IQFLOW_COMPILATION_CACHE", "0")
        assert runner.enable_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
        compilation_cache.reset_cache()


@pytest.mark.timeout(300)
def test_a_second_start_loads_its_programs_from_the_compilation_cache(tmp_path):
    """With the persistent cache on, the same config started again (in-memory caches
    cleared, as in a new process) loads every program that the first start wrote
    instead of compiling it, and trains the same numbers. Counted through JAX's own
    cache events rather than timed: how much time that saves is a benchmark
    (RESULTS.md, "A second, cached start"), and a timing bound here failed under the
    load of the full suite on 2 cores though the programs did load."""
    from collections import Counter

    from jax._src import compilation_cache

    from jaxsim import runner

    events: Counter = Counter()

    def count(event: str, **_):
        if event.startswith("/jax/compilation_cache/"):
            events[event.rsplit("/", 1)[1]] += 1

    previous = jax.config.jax_compilation_cache_dir  # the suite's own cache, if any
    # JAX keeps only programs that took >= 1 s to compile; the suite's -O0 (conftest)
    # brings this tiny config's under that, so keep every one here.
    previous_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
    compilation_cache.reset_cache()
    jax.monitoring.register_event_listener(count)
    from jaxsim.config import NoMechanismConfig

    config = tiny_config(num_seeds=2, seed=11, mechanism=NoMechanismConfig())  # quick to compile
    try:
        assert runner.enable_compilation_cache() == str(tmp_path / "xla")
        jax.clear_caches()  # both starts begin as a new process would, with nothing in memory
        first = runner.run(config, progress=False)
        first_events = Counter(events)
        assert os.listdir(tmp_path / "xla")
        jax.clear_caches()
        events.clear()
        second = runner.run(config, progress=False)
    finally:
        jax.monitoring.unregister_event_listener(count)
        jax.config.update("jax_compilation_cache_dir", previous)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous_min)
        compilation_cache.reset_cache()
    # The first start wrote its programs (chunk, evaluation, init), the second read
    # each of them back and compiled none.
    assert first_events["cache_misses"] >= 2 and first_events["cache_hits"] == 0
    assert events["cache_hits"] == first_events["cache_misses"]
    assert events["cache_misses"] == 0
    np.testing.assert_array_equal(second.metrics["return"], first.metrics["return"])


@pytest.mark.timeout(600)
def test_a_sweep_of_two_values_and_two_seeds_equals_the_four_separate_runs():
    import dataclasses

    from jaxsim.sweep import parse_sweep, split_points

    from jaxsim.config import NoMechanismConfig

    base = tiny_config(num_seeds=2, episodes=20, mechanism=NoMechanismConfig())
    sweep = parse_sweep(["lr=0.001,0.5"], base)
    assert sweep.fields == ("agent.lr",) and sweep.size == 2
    swept = run(base, progress=False, sweep=sweep)
    assert swept.metrics["return"].shape == (2, 4)  # chunks, points x seeds
    for point, lr in enumerate((0.001, 0.5)):
        alone = run(base.replace(agent=dataclasses.replace(base.agent, lr=lr)), progress=False)
        for name, value in alone.metrics.items():
            np.testing.assert_allclose(split_points(swept.metrics[name], sweep, 2)[point],
                                       value, rtol=1e-6, atol=1e-7, err_msg=f"{name} lr={lr}")
    # The learning rate does reach the agents: the two points learn differently.
    entropy = split_points(swept.metrics["agent/entropy"], sweep, 2)
    assert not np.allclose(entropy[0], entropy[1])


def test_sweep_refuses_what_changes_the_program():
    from jaxsim.sweep import parse_sweep

    base = tiny_config()
    with pytest.raises(ValueError, match="cannot sweep 'unroll_steps'.*run them separately"):
        parse_sweep(["unroll_steps=1,2"], base)
    with pytest.raises(ValueError, match="must be"):  # every point is validated
        parse_sweep(["c1=0,-1"], base)
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        parse_sweep(["c1"], base)


HOST = """
import sys, numpy as np, jax
from jaxsim import distributed
distributed.initialize(f"localhost:{sys.argv[2]}", 2, int(sys.argv[3]))
from jaxsim.config import NoMechanismConfig
from jaxsim.runner import run
from tests.test_engine import tiny_config
assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
config = tiny_config(num_seeds=8, mechanism=NoMechanismConfig())
# A frozen IQ-Flow mechanism, trained and checkpointed by one process (the test's),
# pays fresh agents (Fig. 10's setup): each host loads its seeds' incentive networks.
pretrained = run(tiny_config(num_seeds=8, freeze_mechanism=True), progress=False,
                 mechanism_from=sys.argv[5])
# Half the run, checkpointed by both hosts into one directory, then resumed.
ckpt = sys.argv[4]
half = run(config, progress=False, checkpoint_dir=ckpt, stop_after=10)
assert list(half.episodes) == [10]
result = run(config, progress=False, wandb_mode="disabled", checkpoint_dir=ckpt, resume=True)
assert list(result.episodes) == [10, 20]
assert result.timing["devices"] == 4 and result.timing["processes"] == 2
# A sweep of 2 learning rates x 8 seeds: 16 runs, each host holding 8 of them.
from jaxsim.sweep import parse_sweep
swept = run(config, progress=False, sweep=parse_sweep(("agent.lr=0.001,0.003",), config))
np.savez(sys.argv[1], local_runs=result.timing["local_runs"],
         pretrained_return=pretrained.metrics["return"],
         sweep_return=swept.metrics["return"], sweep_runs=swept.timing["local_runs"],
         **{k.replace("/", "."): v for k, v in result.metrics.items()},
         eval_return=result.eval_metrics["eval/return"])
"""


def test_multi_host_settings_come_from_flags_or_variables(monkeypatch):
    from jaxsim.distributed import settings

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert settings() is None  # one process: nothing to join
    assert settings("h:1", 2, 1) == {"coordinator_address": "h:1", "num_processes": 2,
                                     "process_id": 1}
    assert settings(num_processes=0) == {}  # JAX detects SLURM / MPI / TPU itself
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:2")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert settings() == {"coordinator_address": "h:2", "num_processes": 4, "process_id": 3}
    with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
        settings(process_id=4)
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match="this process's id"):
        settings()


@pytest.mark.heavy(2)
@pytest.mark.timeout(600)
def test_two_host_processes_train_the_one_process_numbers(tmp_path):
    """Two processes on this machine, two CPU devices each, joined by
    jax.distributed, stopped half-way into one shared checkpoint and resumed: each host
    keeps its own four seeds, which are the uninterrupted single run's. A frozen
    IQ-Flow mechanism checkpointed by one process pays fresh agents on two hosts as it
    does in one process. (The two-host checkpoint itself is the resumed run's.)"""
    import socket

    iqflow = tiny_config(num_seeds=8)
    run(iqflow, progress=False, checkpoint_dir=str(tmp_path / "single_iqflow"))

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": forced_devices(2)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hosts = [subprocess.Popen([sys.executable, "-c", HOST, str(tmp_path / f"host{i}.npz"),
                               port, str(i), str(tmp_path / "ckpt"),
                               str(tmp_path / "single_iqflow")], env=env, cwd=root)
             for i in range(2)]
    try:
        assert [h.wait(timeout=550) for h in hosts] == [0, 0]
    finally:
        for h in hosts:
            h.kill()
    from jaxsim.config import NoMechanismConfig

    single = run(tiny_config(num_seeds=8, mechanism=NoMechanismConfig()), progress=False)
    parts = [np.load(tmp_path / f"host{i}.npz") for i in range(2)]
    assert [list(p["local_runs"]) for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for name, value in single.metrics.items():
        key = name.replace("/", ".")
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts], 1), value,
                                      err_msg=name)
    np.testing.assert_array_equal(np.concatenate([p["eval_return"] for p in parts], 1),
                                  single.eval_metrics["eval/return"])
    from jaxsim.sweep import parse_sweep

    config = tiny_config(num_seeds=8, mechanism=NoMechanismConfig())
    swept = run(config, progress=False, sweep=parse_sweep(("agent.lr=0.001,0.003",), config))
    assert [list(p["sweep_runs"]) for p in parts] == [list(range(8)), list(range(8, 16))]
    np.testing.assert_array_equal(np.concatenate([p["sweep_return"] for p in parts], 1),
                                  swept.metrics["return"])
    pretrained = run(iqflow.replace(freeze_mechanism=True), progress=False,
                     mechanism_from=str(tmp_path / "single_iqflow"))
    np.testing.assert_allclose(np.concatenate([p["pretrained_return"] for p in parts], 1),
                               pretrained.metrics["return"], rtol=2e-5, atol=2e-6)


def test_a_host_splits_its_block_of_sweep_runs_by_point():
    """On one host of several, each sweep point's figures hold the seeds this host
    trained of it: here runs 2-5 of 2 points x 4 seeds, i.e. seeds 2-3 of point 0 and
    seeds 0-1 of point 1."""
    from benchmarks.common import RunArgs, run_figures
    from jaxsim.config import NoMechanismConfig
    from jaxsim.runner import RunResult
    from jaxsim.sweep import parse_sweep, split_result

    config = tiny_config(num_seeds=4, mechanism=NoMechanismConfig())
    sweep = parse_sweep(("agent.lr=0.001,0.003",), config)
    returns = np.arange(2 * 4, dtype=float).reshape(2, 4) + 10  # [rows, local runs 2..5]
    result = RunResult(config=config, episodes=np.array([10, 20]),
                       metrics={"return": returns}, eval_episodes=np.array([10, 20]),
                       eval_metrics={"eval/return": returns},
                       timing={"processes": 2, "local_runs": [2, 3, 4, 5],
                               "episodes_per_s": 1.0, "env_steps_per_s": 5.0,
                               "compile_s": 0.0},
                       sweep=sweep)
    parts = dict(split_result(result))
    assert list(parts) == ["[lr=0.001]", "[lr=0.003]"]
    args = RunArgs(seeds=4, first_seed=0)
    first = run_figures(args, parts["[lr=0.001]"].config, parts["[lr=0.001]"], None)
    second = run_figures(args, parts["[lr=0.003]"].config, parts["[lr=0.003]"], None)
    assert (first["seeds"], first["first_seed"]) == (2, 2)
    assert (second["seeds"], second["first_seed"]) == (2, 0)
    assert first["eval_return_per_seed"] == [[10.0, 11.0], [14.0, 15.0]]
    assert second["eval_return_per_seed"] == [[12.0, 13.0], [16.0, 17.0]]
    assert parts["[lr=0.003]"].config.agent.lr == 0.003
