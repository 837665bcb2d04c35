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
assert len(jax.devices()) == 4, jax.devices()
result = run(tiny_config(num_seeds=8), progress=False)
assert result.timing["devices"] == 4
np.savez(sys.argv[1], **{k.replace("/", "."): v for k, v in result.metrics.items()},
         eval_return=result.eval_metrics["eval/return"],
         params=np.concatenate([np.ravel(x) for x in jax.tree.leaves(result.state.agents)]))
"""


def test_seed_sharding_uses_the_most_devices_that_divide_the_seeds():
    devices = jax.devices() * 6  # the mesh only needs distinct positions to count
    assert seed_sharding(8, devices[:4]).num_devices == 4
    assert seed_sharding(6, devices[:4]).num_devices == 3
    assert seed_sharding(7, devices[:4]).num_devices == 1


@pytest.mark.timeout(600)
def test_four_cpu_devices_give_the_one_device_numbers(tmp_path):
    out = tmp_path / "sharded.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", CHILD, str(out)], env=env, cwd=root, check=True,
                   timeout=550)
    sharded = np.load(out)
    single = run(tiny_config(num_seeds=8), progress=False)
    for name, value in single.metrics.items():
        np.testing.assert_array_equal(sharded[name.replace("/", ".")], value, err_msg=name)
    np.testing.assert_array_equal(sharded["eval_return"], single.eval_metrics["eval/return"])
    np.testing.assert_array_equal(
        sharded["params"], np.concatenate([np.ravel(x) for x in
                                           jax.tree.leaves(single.state.agents)]))


@pytest.mark.timeout(300)
def test_a_second_start_loads_its_programs_from_the_compilation_cache(tmp_path, monkeypatch):
    """With the persistent cache on, the same config started again (in-memory caches
    cleared, as in a new process) compiles in a fraction of the first start's time
    and trains the same numbers."""
    from jaxsim import runner

    monkeypatch.setenv("IQFLOW_COMPILATION_CACHE", str(tmp_path / "xla"))
    assert jax.config.jax_compilation_cache_dir is None
    try:
        first = runner.run(tiny_config(num_seeds=2, seed=11), progress=False)
        assert os.listdir(tmp_path / "xla")
        jax.clear_caches()
        second = runner.run(tiny_config(num_seeds=2, seed=11), progress=False)
    finally:  # later tests compile without the cache again
        jax.config.update("jax_compilation_cache_dir", None)
        from jax._src import compilation_cache
        compilation_cache.reset_cache()
    assert second.timing["compile_s"] < 0.5 * first.timing["compile_s"]
    np.testing.assert_array_equal(second.metrics["return"], first.metrics["return"])
