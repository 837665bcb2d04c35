"""The compiled training program: seeds as a vmap axis, determinism, errors before
compilation, W&B offline logging. Every test here compiles and runs the whole
IQ-Flow episode step; the time limits make a hang in XLA fail loudly."""

import dataclasses
import functools

import re

import jax
import numpy as np
import pytest

from jaxsim import runner as runner_lib
from jaxsim.config import IQFlowConfig, TrainConfig, matrix_game, validate
from jaxsim.logger import read_history
from jaxsim.train import Experiment, make_train, over_runs, seed_keys

TINY_IQFLOW = IQFlowConfig(critic_hidden=(8,), incentive_hidden=(8,), unroll_steps=2,
                           batch_size=8, start_train=16)


def tiny_config(**overrides) -> TrainConfig:
    base = matrix_game("ipd", "iqflow", mechanism=TINY_IQFLOW, episodes=20, chunk_episodes=10,
                       eval_period=10, eval_episodes=2, num_seeds=4, seed=7)
    return base.replace(**overrides)


@functools.lru_cache(maxsize=None)
def compiled_train(config: TrainConfig):
    return jax.jit(make_train(config))


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@functools.lru_cache(maxsize=None)
def four_seeds():
    """The pure train(key) of tiny_config, vmapped over its 4 seeds."""
    config = tiny_config()
    return jax.jit(jax.vmap(make_train(config)))(seed_keys(config))


@pytest.mark.timeout(300)
def test_vmapped_seeds_equal_separate_runs():
    config = tiny_config()
    keys = seed_keys(config)
    batched = four_seeds()
    train = compiled_train(config)
    for i in range(config.num_seeds):
        alone = train(keys[i])
        seed_slice = jax.tree.map(lambda x, i=i: x[i], batched)
        # Same program per seed, batched or not: equal up to float reassociation.
        for x, y in zip(jax.tree.leaves(seed_slice), jax.tree.leaves(alone), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)
    # The mechanism really learned (step B ran) and its metrics are not trivial.
    metrics = batched[1]
    assert float(metrics["meta/active"][:, -1].min()) == 1.0
    assert np.isfinite(np.asarray(metrics["meta/loss"])).all()


@pytest.mark.timeout(300)
def test_seed_groups_and_remat_give_the_vmapped_numbers():
    """Seeds run two at a time (a loop over groups, written back in place) with the
    unroll recomputed in the backward pass (jax.checkpoint), as 4,096 seeds run on one
    GPU: the same runs, seed for seed. (Groups alone, through the runner on 1 and 4
    devices: test_sharding.)"""
    config = tiny_config(num_seeds=4, episodes=10)
    remat = config.replace(mechanism=dataclasses.replace(config.mechanism, remat_unroll=True))
    experiment, experiment_remat = Experiment(config), Experiment(remat)
    state = jax.jit(jax.vmap(experiment.init))(seed_keys(config))
    batched = jax.jit(over_runs(experiment.run_chunk))(state)
    grouped_remat = jax.jit(over_runs(experiment_remat.run_chunk, group=2))(state)
    for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(grouped_remat), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)
    assert float(batched[1]["meta/active"].min()) > 0.5  # step B ran in most episodes
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        jax.eval_shape(over_runs(experiment.run_chunk, group=3), state)


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_same_seed_gives_identical_results_twice(capfd):
    config = tiny_config(num_seeds=1)
    key = seed_keys(config)[0]
    train = compiled_train(config)
    assert_trees_equal(train(key), train(key))
    first = runner_lib.run(config, progress=False)
    # Without a progress bar, each evaluation is a line of the run's log.
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("episode ")]
    assert len(lines) == len(first.eval_episodes) and "(evaluation)" in lines[-1]
    assert lines[-1].startswith(f"episode {config.episodes}/{config.episodes}: return ")
    second = runner_lib.run(config, progress=False)
    assert_trees_equal(first.metrics, second.metrics)
    assert_trees_equal(first.eval_metrics, second.eval_metrics)
    # The host loop computes what the pure train(key) computes.
    _, metrics, evals = train(key)
    for name, value in first.metrics.items():
        np.testing.assert_allclose(value[:, 0], metrics[name], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(first.eval_metrics["eval/return"][:, 0], evals["eval/return"],
                               rtol=1e-6)


BAD_CONFIGS = [
    (dict(env="pd"),
     r"unknown environment 'pd'; valid names: \['chicken', 'cleanup_10x10', 'cleanup_7x7', "
     r"'escape_room', 'ipd', 'stag_hunt'\]"),
    (dict(env_params={"length": 3}), r"unknown parameter\(s\) \['length'\]"),
    (dict(seed=-1), r"seed must be an integer >= 0"),
    (dict(num_seeds=0), r"num_seeds must be an integer >= 1"),
    (dict(eval_period=15), r"eval_period \(15\) must be a multiple of chunk_episodes"),
    (dict(mechanism=IQFlowConfig(start_train=100, batch_size=64)), r"start_train.*>= 2 \* batch"),
    (dict(mechanism=IQFlowConfig(expectile=1.0)), r"expectile must be a finite number in \(0, 1\)"),
    (dict(mechanism=IQFlowConfig(lr_incentive=float("nan"))), r"lr_incentive must be a finite"),
    (dict(episodes=30, chunk_episodes=10, eval_period=10), r"fewer than start_train"),
    (dict(matmul_precision="fp8"), r"matmul_precision must be one of"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS)
def test_bad_configs_fail_before_compilation(monkeypatch, overrides, message):
    def no_compiling(*args, **kwargs):
        raise AssertionError("compilation started before the config was checked")

    monkeypatch.setattr(runner_lib.jax, "jit", no_compiling)
    config = matrix_game("ipd").replace(**overrides)
    with pytest.raises(ValueError, match=message):
        runner_lib.run(config, progress=False)
    with pytest.raises(ValueError, match=message):
        validate(config)


def test_unknown_presets_raise():
    with pytest.raises(ValueError, match=r"unknown matrix game 'go'; valid: \['ipd'"):
        matrix_game("go")
    with pytest.raises(ValueError, match=r"unknown algorithm 'lio'.*\['iqflow', 'none'\]"):
        matrix_game("ipd", "lio")


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_wandb_offline_run_holds_returns_and_throughput(tmp_path):
    config = tiny_config(num_seeds=2)
    result = runner_lib.run(config, wandb_mode="offline", wandb_dir=str(tmp_path),
                            progress=False)
    assert result.wandb_dir is not None and result.wandb_dir.startswith(str(tmp_path))
    rows = read_history(result.wandb_dir)
    assert [row["_step"] for row in rows] == [10, 20]
    for row, chunk_return in zip(rows, result.metrics["return"].mean(1), strict=True):
        np.testing.assert_allclose(row["return"], chunk_return, rtol=1e-6)
        assert row["throughput/seed_episodes_per_s"] > 0
        assert row["throughput/env_steps_per_s"] == pytest.approx(
            5 * row["throughput/seed_episodes_per_s"], rel=1e-6)
        assert "eval/return" in row and "meta/loss" in row
    # Seed i is the same run whether 2 or 4 seeds share the program.
    np.testing.assert_allclose(result.metrics["return"], four_seeds()[1]["return"][:2].T,
                               rtol=2e-5)
    assert not any(key.startswith("seed/") for key in rows[0])  # only when asked


def test_wandb_per_seed_series_on_request(tmp_path):
    config = tiny_config(num_seeds=2)
    with pytest.raises(ValueError, match="not a per-seed scalar metric"):
        runner_lib.run(config, wandb_mode="disabled", progress=False,
                       wandb_per_seed=("no_such_metric",))
    result = runner_lib.run(config, wandb_mode="offline", wandb_dir=str(tmp_path),
                            progress=False, wandb_per_seed=("return", "eval/return"))
    rows = read_history(result.wandb_dir)
    for row, chunk, evaluated in zip(rows, result.metrics["return"],
                                     result.eval_metrics["eval/return"], strict=True):
        for seed in (0, 1):  # tiny_config's first_seed is 0
            assert row[f"seed/{seed}/return"] == pytest.approx(chunk[seed], rel=1e-6)
            assert row[f"seed/{seed}/eval/return"] == pytest.approx(evaluated[seed], rel=1e-6)


def test_no_mechanism_pays_nothing():
    config = tiny_config(mechanism=matrix_game("ipd", "none").mechanism, num_seeds=2)
    result = runner_lib.run(config, progress=False)
    assert float(np.abs(result.metrics["incentive_per_agent"]).max()) == 0.0
    assert result.timing["episodes_per_s"] > 0 and result.timing["compile_s"] > 0


def _dot_precisions(config: TrainConfig) -> set[str]:
    experiment = Experiment(config)
    state = jax.eval_shape(experiment.init, jax.random.PRNGKey(0))
    text = jax.jit(experiment.run_chunk).lower(state).as_text()
    text += jax.jit(experiment.evaluate).lower(state).as_text()
    return set(re.findall(r"stablehlo.dot_general.*precision = \[(\w+), \w+\]", text))


def test_matmul_precision_reaches_every_matmul():
    """The config's precision is in every traced matmul, training and evaluation alike
    (on CPU float32 is what JAX does anyway; on GPUs the default is TF32)."""
    config = tiny_config().replace(num_seeds=1)
    assert _dot_precisions(config) == {"DEFAULT"}
    assert _dot_precisions(config.replace(matmul_precision="float32")) == {"HIGHEST"}
