"""Orbax checkpoints of whole runs: stop-and-resume equals the uninterrupted run bit
for bit; a checkpoint of another config or a damaged one is refused with a message
and the older checkpoints still load; a seed range split over runs trains the same
seeds as one run."""

import dataclasses
import functools
import os

import jax
import numpy as np
import pytest

from jaxsim.checkpoint import Checkpointer, CheckpointError, _config_differences, config_json
from jaxsim.runner import run
from jaxsim.train import Experiment, seed_keys
from tests.test_engine import assert_trees_equal, tiny_config


def config():
    return tiny_config(episodes=60, chunk_episodes=10, eval_period=20, num_seeds=2)


@functools.lru_cache(maxsize=None)
def uninterrupted():
    return run(config(), progress=False)


def abstract_state(cfg):
    return jax.eval_shape(jax.vmap(Experiment(cfg).init), seed_keys(cfg))


@pytest.mark.heavy
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop_after", [40])  # and at 20 by SIGTERM, below
def test_stop_and_resume_equals_the_uninterrupted_run(tmp_path, stop_after, caplog):
    full = uninterrupted()
    first = run(config(), progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=1,
                stop_after=stop_after)
    assert first.episodes[-1] == stop_after
    with caplog.at_level("WARNING"):
        resumed = run(config(), progress=False, checkpoint_dir=str(tmp_path), resume=True)
    # Reading the checkpoint's metadata names a handler for each of its items, so
    # Orbax has nothing to warn about ("Item ... could not be restored").
    assert not [r.getMessage() for r in caplog.records if "could not be restored" in r.getMessage()]
    # Throughput counts both sittings' training time.
    assert resumed.timing["train_s"] > first.timing["train_s"] > 0
    np.testing.assert_array_equal(resumed.episodes, full.episodes)
    np.testing.assert_array_equal(resumed.eval_episodes, full.eval_episodes)
    for name in full.metrics:
        np.testing.assert_array_equal(resumed.metrics[name], full.metrics[name], err_msg=name)
    for name in full.eval_metrics:
        np.testing.assert_array_equal(resumed.eval_metrics[name], full.eval_metrics[name])
    assert_trees_equal(resumed.state, full.state)


@pytest.mark.timeout(600)
def test_wrong_config_and_damaged_checkpoints_are_refused(tmp_path):
    directory = str(tmp_path)
    run(config(), progress=False, checkpoint_dir=directory, checkpoint_every=1, stop_after=20)
    # Another config: named differences, nothing compiled, nothing deleted.
    other = config().replace(seed=8)
    with pytest.raises(CheckpointError, match="(?s)another config.*seed: checkpoint 7 vs now 8"):
        run(other, progress=False, checkpoint_dir=directory, resume=True)
    # A longer run whose replay buffer (every transition) would be larger: the shapes
    # are named from the checkpoint's metadata before anything is restored.
    assert config().mechanism.replay_capacity is None
    with pytest.raises(CheckpointError, match=r"(?s)other shapes.*buffer.*vs now \(2, 600"):
        run(config().replace(episodes=120), progress=False, checkpoint_dir=directory,
            resume=True)
    # An existing run is not overwritten by a fresh start.
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run(config(), progress=False, checkpoint_dir=directory)
    # Truncate every array file of the latest checkpoint.
    latest = os.path.join(directory, "20", "state")
    damaged = 0
    for root, _, files in os.walk(latest):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 64 and not name.endswith(".json"):
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 3)
                damaged += 1
    assert damaged
    checkpointer = Checkpointer(directory, config())
    with pytest.raises(CheckpointError, match="damaged"):
        checkpointer.restore(abstract_state(config()))
    # The older one still loads and holds the state after episode 10.
    state, history, meta = checkpointer.restore(abstract_state(config()), episode=10)
    assert meta["episode"] == 10 and list(history["ends"]) == [10]
    np.testing.assert_array_equal(np.asarray(state.episode), [10, 10])
    checkpointer.close()


@pytest.mark.timeout(300)
def test_first_seed_splits_a_run_into_the_same_seeds():
    cfg = config().replace(num_seeds=4)
    whole = seed_keys(cfg)
    halves = [seed_keys(cfg.replace(num_seeds=2, first_seed=s)) for s in (0, 2)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)


def test_a_field_added_to_the_config_later_resumes_at_its_default():
    """Checkpoints written before a TrainConfig field existed still resume when the
    field is at its default, and are refused when it is not."""
    saved = config_json(config())
    del saved["matmul_precision"]
    assert _config_differences(saved, config_json(config())) == []
    changed = config_json(config().replace(matmul_precision="float32"))
    assert _config_differences(saved, changed) == [
        "matmul_precision: checkpoint 'default' vs now 'float32'"]
    # The same for a field added to the mechanism's config.
    del saved["mechanism"]["conv_filters"]
    assert _config_differences(saved, config_json(config()), config()) == []
    wider = config().replace(mechanism=dataclasses.replace(config().mechanism, conv_filters=6))
    assert len(_config_differences(saved, config_json(wider), wider)) == 1


@pytest.mark.timeout(600)
def test_sigterm_stops_after_the_chunk_checkpoints_and_resumes_exactly(tmp_path):
    """SIGTERM (or Ctrl-C) mid-run: the chunk in flight finishes and is counted, the
    run says it was interrupted, its checkpoint resumes to the uninterrupted result,
    and the process's own signal handlers are back afterwards."""
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def send_sigterm(state, episode):
        if episode == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = run(config(), progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=100,
                  on_chunk=send_sigterm)
    assert stopped.interrupted and list(stopped.episodes) == [10, 20]
    assert signal.getsignal(signal.SIGTERM) is before
    checkpointer = Checkpointer(str(tmp_path), config())
    assert checkpointer.latest() == 20
    checkpointer.close()
    resumed = run(config(), progress=False, checkpoint_dir=str(tmp_path), resume=True)
    full = uninterrupted()
    assert not resumed.interrupted
    for name in full.metrics:
        np.testing.assert_array_equal(resumed.metrics[name], full.metrics[name], err_msg=name)
    assert_trees_equal(resumed.state, full.state)


@pytest.mark.timeout(300)
def test_a_stop_while_a_resumed_run_compiles_keeps_its_checkpoint(tmp_path, monkeypatch,
                                                                  signals_before_training):
    """Two SIGTERMs before the first chunk of a resumed sitting (their handler runs
    once compilation returns; the second stops at once): nothing is trained or saved
    again, the history is the checkpoint's, and the next resume still ends on the
    uninterrupted numbers."""
    import signal

    first = run(config(), progress=False, checkpoint_dir=str(tmp_path), stop_after=20)
    signals_before_training(signal.SIGTERM, times=2)  # stop before training, then at once
    stopped = run(config(), progress=False, checkpoint_dir=str(tmp_path), resume=True)
    monkeypatch.undo()
    assert stopped.interrupted and list(stopped.episodes) == [10, 20]
    # Its throughput is the first sitting's: no episode is counted twice.
    assert stopped.timing["train_s"] == pytest.approx(first.timing["train_s"])
    assert stopped.timing["episodes_per_s"] == pytest.approx(first.timing["episodes_per_s"])
    checkpointer = Checkpointer(str(tmp_path), config())
    assert checkpointer.steps() == [20]
    checkpointer.close()
    resumed = run(config(), progress=False, checkpoint_dir=str(tmp_path), resume=True)
    for name, value in uninterrupted().metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], value, err_msg=name)


@pytest.mark.timeout(300)
def test_a_planted_nan_stops_the_run_naming_seed_episode_and_quantity(tmp_path):
    """An agent learning rate of 1e38 overflows the parameters in the first chunk:
    the run stops with the quantities and seeds named, and nothing bad is saved."""
    from jaxsim.runner import NonFiniteError

    cfg = config()
    exploding = cfg.replace(agent=dataclasses.replace(cfg.agent, lr=1e38))
    with pytest.raises(NonFiniteError, match=r"(?s)episodes 1-10.*guard/nonfinite_values: "
                                             r"seeds \[0, 1\].*no good checkpoint yet"):
        run(exploding, progress=False, checkpoint_dir=str(tmp_path))
    checkpointer = Checkpointer(str(tmp_path), exploding)
    assert checkpointer.latest() is None
    checkpointer.close()


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_a_pretrained_frozen_mechanism_pays_fresh_agents_unchanged(tmp_path):
    """Fig. 10's setup: a trained run's incentive network, loaded seed for seed into a
    run of fresh agents with the mechanism frozen, stays exactly as trained while the
    agents learn; a network of other shapes is refused."""
    trained = run(config(), progress=False, checkpoint_dir=str(tmp_path))
    frozen_cfg = config().replace(seed=99, freeze_mechanism=True, episodes=20)
    frozen = run(frozen_cfg, progress=False, mechanism_from=str(tmp_path))
    assert_trees_equal(frozen.state.mechanism.eta, trained.state.mechanism.eta)
    assert "meta/loss" not in frozen.metrics and frozen.metrics["return"].shape == (2, 2)
    other = frozen_cfg.replace(mechanism=dataclasses.replace(frozen_cfg.mechanism,
                                                             incentive_hidden=(3,)))
    with pytest.raises(CheckpointError, match="does not fit this run"):
        run(other, progress=False, mechanism_from=str(tmp_path))


def test_the_config_comes_back_from_its_checkpoint_json():
    """`config_from_json` inverts `config_json` for every preset family, so a tool can
    rebuild a run from its checkpoint alone."""
    from jaxsim.checkpoint import config_from_json
    from jaxsim.config import cleanup, escape_room, matrix_game

    for cfg in (config(), cleanup("7x7", "iqflow", num_seeds=8), cleanup("10x10", "id"),
                cleanup("7x7", "shared"), escape_room(10, 5, "id", seed=3),
                matrix_game("chicken", "none", matmul_precision="float32")):
        back = config_from_json(config_json(cfg))
        assert back == cfg and hash(back) == hash(cfg)
    broken = {**config_json(config()), "mechanism_type": "NoSuchConfig"}
    with pytest.raises(CheckpointError, match="unknown mechanism type 'NoSuchConfig'"):
        config_from_json(broken)
