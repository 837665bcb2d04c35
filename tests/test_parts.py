"""The engine knows parts only through their interfaces: a mechanism registered from
this file trains without touching the loop; every import points down a layer; a run
of any length cuts into chunks the same way in the host loop and in `train(key)`."""

import ast
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import mechanism
from jaxsim import runner
from jaxsim.checkpoint import config_from_json, config_json
from jaxsim.config import IQFlowConfig, NoMechanismConfig, matrix_game, validate
from jaxsim.schedule import Schedule
from jaxsim.train import Experiment, make_train, seed_keys
from mechanism.base import Mechanism

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --- a mechanism from outside the package: its config, its class, one registry line ---

@dataclasses.dataclass(frozen=True)
class FlatBonusConfig:
    """Pays every agent `bonus` for cooperating (action 0), and learns nothing but a
    count of the episodes it has seen."""

    bonus: float = 0.5


@struct.dataclass
class FlatBonusState:
    episodes: jax.Array


class FlatBonus(Mechanism):
    def __init__(self, config: FlatBonusConfig, num_agents: int):
        self.config, self.num_agents = config, num_agents

    @classmethod
    def from_config(cls, config, env, run):
        return cls(config, env.num_agents)

    @classmethod
    def check_config(cls, config, env, run):
        if not config.bonus >= 0:
            raise ValueError(f"mechanism.bonus must be >= 0, got {config.bonus!r}")

    def init(self, key):
        return FlatBonusState(episodes=jnp.zeros((), jnp.int32))

    def incentive(self, state, obs, action):
        return self.config.bonus * (action == 0).astype(jnp.float32)

    def update(self, state, traj, key):
        return state.replace(episodes=state.episodes + 1), {"bonus/paid": traj.incentive.sum()}


@pytest.fixture
def flat_bonus():
    mechanism.register(FlatBonusConfig, FlatBonus)
    yield
    del mechanism.MECHANISMS[FlatBonusConfig]


@pytest.mark.timeout(300)
def test_a_mechanism_registered_from_a_test_trains_checkpoints_and_validates(flat_bonus):
    config = matrix_game("ipd", "none", episodes=20, chunk_episodes=10, eval_period=10,
                         num_seeds=2).replace(mechanism=FlatBonusConfig(bonus=0.5))
    result = runner.run(config, progress=False)
    assert result.episodes.tolist() == [10, 20]
    np.testing.assert_array_equal(np.asarray(result.state.mechanism.episodes), [20, 20])
    # What it paid is what the agents were paid: 0.5 per cooperation, per agent.
    coop = result.metrics["action_freq"][..., 0] * result.metrics["episode_length"][..., None]
    np.testing.assert_allclose(result.metrics["incentive_per_agent"], 0.5 * coop, rtol=1e-6)
    np.testing.assert_allclose(result.metrics["bonus/paid"],
                               result.metrics["incentive_per_agent"].sum(-1), rtol=1e-6)
    assert config_from_json(config_json(config)) == config  # checkpoints name it too
    with pytest.raises(ValueError, match="mechanism.bonus must be >= 0"):
        validate(config.replace(mechanism=FlatBonusConfig(bonus=-1.0)))


def test_unregistered_parts_are_refused_with_the_valid_ones():
    config = matrix_game("ipd", "none").replace(mechanism=FlatBonusConfig())
    with pytest.raises(ValueError, match="unknown mechanism config FlatBonusConfig; valid: "
                                         "NoMechanismConfig, SharedRewardConfig"):
        validate(config)
    with pytest.raises(ValueError, match="unknown agent config NoMechanismConfig; valid: "
                                         "PGConfig, ACConfig"):
        validate(config.replace(mechanism=NoMechanismConfig(), agent=NoMechanismConfig()))


# --- layers ------------------------------------------------------------------------

LAYERS = ["envs_jax", "agents", "mechanism", "jaxsim", "benchmarks"]  # bottom to top


def imported_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_import_points_down_a_layer():
    for rank, package in enumerate(LAYERS):
        above = set(LAYERS[rank + 1:])
        for path in sorted((ROOT / package).rglob("*.py")):
            upward = imported_packages(path) & above
            assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_no_function_outside_the_tests_is_longer_than_60_lines():
    long = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert not long, long


def test_the_episode_step_probes_no_part_for_attributes():
    for name in ("train.py", "rollout.py"):
        tree = ast.parse((ROOT / "jaxsim" / name).read_text())
        probes = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")]
        assert not probes, f"jaxsim/{name} lines {probes}"


# --- any number of episodes ----------------------------------------------------------

def test_schedule_cuts_any_run_into_chunks_and_evaluates_the_last():
    s = Schedule(episodes=2000, chunk_episodes=30, eval_period=300)
    assert (s.full_chunks, s.last_chunk, s.num_chunks) == (66, 20, 67)
    assert s.lengths(0, 2000) == [30, 20] and s.lengths(0, 1980) == [30]
    assert s.length_from(1980) == 20 and s.length_from(1950) == 30
    assert [e for e in range(30, 1981, 30) if s.eval_due(e)] == list(range(300, 1801, 300))
    assert s.eval_due(2000) and not s.eval_due(1980)
    assert s.describe() == "2000 episodes: 66 chunks of 30 and a last chunk of 20"
    assert Schedule(7, 30, 300).describe() == "7 episodes: a last chunk of 7"
    assert Schedule(60, 30, 300).describe() is None


@pytest.mark.timeout(300)
def test_a_run_whose_chunks_do_not_divide_it_is_the_same_as_train_and_as_a_shorter_run():
    config = matrix_game("ipd", "none", episodes=25, chunk_episodes=10, eval_period=10,
                         eval_episodes=2, num_seeds=2, seed=3)
    result = runner.run(config, progress=False)
    assert result.episodes.tolist() == [10, 20, 25]
    assert result.eval_episodes.tolist() == [10, 20, 25]
    _, metrics, evals = jax.jit(jax.vmap(make_train(config)))(seed_keys(config))
    for name, value in result.metrics.items():  # [chunks, seeds] vs [seeds, chunks]
        np.testing.assert_array_equal(value, np.swapaxes(np.asarray(metrics[name]), 0, 1))
    np.testing.assert_array_equal(result.eval_metrics["eval/return"],
                                  np.asarray(evals["eval/return"]).T)
    # The first two chunks are those of a 20-episode run, bit for bit.
    shorter = runner.run(config.replace(episodes=20), progress=False)
    for name, value in shorter.metrics.items():
        np.testing.assert_array_equal(result.metrics[name][:2], value)
    # A run shorter than one chunk is one chunk of its length.
    single = runner.run(config.replace(episodes=3), progress=False)
    assert single.episodes.tolist() == [3] and single.eval_episodes.tolist() == [3]


@pytest.mark.timeout(300)
def test_a_frozen_mechanism_is_a_wrapper_that_never_learns():
    config = matrix_game("ipd", "iqflow", episodes=10, chunk_episodes=10, eval_period=10,
                         freeze_mechanism=True,
                         mechanism=IQFlowConfig(unroll_steps=2, batch_size=8, start_train=16))
    experiment = Experiment(config)
    assert isinstance(experiment.mechanism, mechanism.Frozen)
    state = experiment.init(jax.random.PRNGKey(0))
    after, metrics = jax.jit(experiment.run_chunk)(state)
    for a, b in zip(jax.tree.leaves(state.mechanism), jax.tree.leaves(after.mechanism),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not [k for k in metrics if k.startswith(("meta/", "diag/", "alarm/"))]


@pytest.mark.timeout(300)
def test_a_run_that_ended_on_a_shorter_chunk_is_not_extended(tmp_path):
    """Chunks stay aligned with the evaluation and agent-reset periods: a checkpoint
    that ends a shorter last chunk can be resumed as it is (nothing left to train), not
    trained further."""
    from jaxsim.checkpoint import CheckpointError

    config = matrix_game("ipd", "none", episodes=25, chunk_episodes=10, eval_period=10,
                         num_seeds=2)
    first = runner.run(config, progress=False, checkpoint_dir=str(tmp_path))
    again = runner.run(config, progress=False, checkpoint_dir=str(tmp_path), resume=True)
    np.testing.assert_array_equal(again.metrics["return"], first.metrics["return"])
    with pytest.raises(CheckpointError, match="ends a shorter last chunk"):
        runner.run(config.replace(episodes=40), progress=False, checkpoint_dir=str(tmp_path),
                   resume=True)


def test_an_alarm_on_a_shorter_last_chunk_says_when_it_began():
    from jaxsim.runner import AlarmWatch

    watch = AlarmWatch(period_chunks=2, chunk_episodes=100, run_names=[7])
    off, on = {"alarm/stuck": np.array([0.0])}, {"alarm/stuck": np.array([1.0])}
    assert watch.update(off, 100) == [] and watch.update(on, 200) == []
    (line,) = watch.update(on, 250, length=50)
    assert watch.fired[0]["since_episode"] == 100 and "episodes 101-250" in line
