"""benchmarks.learners (issue 19): mechanism x learner x environment, end to end on a
tiny budget, its refusals before compiling, and its runs split by seed merged."""

import json

import jax
import numpy as np
import pytest

from benchmarks import learners

COMMON = dict(wandb_mode="disabled", progress=False)


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_learners_benchmark_writes_the_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "learners.json"
    args = learners.Args(env=("ipd",), mechanism=("none", "id"), learner=("pg", "ppo"),
                         seeds=2, episodes=60, eval_period=30, out=str(out),
                         plots=str(tmp_path / "plots"), **COMMON)
    learners.main(args)
    payload = json.loads(out.read_text())
    runs = payload["environments"]["ipd"]
    assert list(runs) == ["none+pg", "none+ppo", "id+pg", "id+ppo"]
    # ID models PG by its own step and PPO only as a REINFORCE step: said per run
    assert runs["id+pg"]["id_agent_model"] == "own"
    assert runs["id+ppo"]["id_agent_model"] == "pg_step"
    assert runs["none+pg"]["id_agent_model"] is None
    assert runs["id+ppo"]["config"]["agent_type"] == "PPOConfig"
    for r in runs.values():
        final = np.asarray(r["final_return_per_seed"])
        assert r["episodes"] == 60 and len(final) == 2
        assert r["optimum"] == 30.0 and r["optimum_level"] == 28.5
        assert r["fraction_at_optimum"] == np.mean(final >= 28.5)
        assert r["eval_episodes"] == [30, 60]  # --eval-period for every environment
    assert (tmp_path / "plots" / "learners_ipd.png").exists()
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-6].startswith("Iterated Prisoner's Dilemma: optimum 30")
    assert printed[-1].split()[:2] == ["id", "ppo"] and printed[-1].split()[-1] == "pg_step"


def test_learners_benchmark_refuses_bad_input_before_compiling(monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before the input was checked")

    monkeypatch.setattr(jax.stages.Lowered, "compile", no_compiling)
    for changes, message in (
            (dict(recipe=("authors",)), "runs the paper's recipe"),
            (dict(env=("ipd",), learner=("ac",)), "--learner ac runs on none of --env"),
            (dict(sweep=("c1=0,0.5",)), "--sweep does not apply"),
            (dict(mechanism=("id", "id")), "--mechanism names a value twice"),
            (dict(seeds=-1), "num_seeds must be an integer >= 1"),
            (dict(env=("cleanup",), pg_return="discounted_reward"),
             "--pg-return does not apply"),
            (dict(env=("er",), learner=("ppo", "dqn"), pg_return="discounted_reward"),
             "--pg-return does not apply"),
            (dict(mechanism=("none", "iqflow"), id_outer_weight="per_step"),
             "--id-outer-weight does not apply")):
        with pytest.raises(ValueError, match=message):
            learners.main(learners.Args(**{"env": ("ipd",), **COMMON, **changes}))


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_learners_runs_split_by_seed_merge_into_the_whole_run(tmp_path):
    """Seeds 0 and 1 trained apart and merged: the whole run's figures, the fraction
    at the optimum recomputed over both seeds."""
    common = dict(env=("ipd",), mechanism=("shared",), learner=("dqn",), episodes=60,
                  plots=str(tmp_path / "p"), **COMMON)
    whole = learners.main(learners.Args(seeds=2, **common))
    parts = []
    for first in (0, 1):
        path = tmp_path / f"part{first}.json"
        learners.main(learners.Args(seeds=1, first_seed=first, out=str(path), **common))
        parts.append(str(path))
    merged = learners.main(learners.Args(merge=tuple(parts), **common))
    a, b = whole["environments"]["ipd"]["shared+dqn"], merged["environments"]["ipd"]["shared+dqn"]
    np.testing.assert_allclose(b["final_return_per_seed"], a["final_return_per_seed"],
                               rtol=1e-5)
    assert b["fraction_at_optimum"] == a["fraction_at_optimum"]
    assert b["seeds"] == 2 and b["merged_from"] == 2


def test_fraction_at_optimum_and_interval_on_hand_worked_numbers():
    """Four seeds ending at 27, 28.5, 29 and 30 on the IPD (a seed is at the optimum
    from 28.5): three of them, and the t-interval 28.625 +- 3.182 * 1.2500 / 2."""
    figures = {"eval_return_per_seed": [[0, 0, 0, 0], [27.0, 28.5, 29.0, 30.0]]}
    out = learners.with_optimum("ipd", figures)
    assert out["optimum"] == 30.0 and out["optimum_level"] == 28.5
    assert out["fraction_at_optimum"] == 0.75
    std = np.std([27.0, 28.5, 29.0, 30.0], ddof=1)  # 1.2500
    half = 3.182446 * std / 2
    np.testing.assert_allclose(out["final_return_ci95"], [28.625 - half, 28.625 + half],
                               rtol=1e-6)
    empty = learners.with_optimum("er", {"eval_return_per_seed": []})
    assert empty["fraction_at_optimum"] is None and empty["optimum_level"] == 27.0


def test_the_row_flags_reach_pg_agents_alone_or_in_a_team_and_id():
    args = learners.Args(env=("er",), pg_return="discounted_reward", id_outer_weight="per_step")
    mixed = learners.make_config(args, "id+mixed", "er")
    pg_members = [m for m in mixed.agent.members if type(m).__name__ == "PGConfig"]
    assert len(pg_members) == 2 and all(m.return_mode == "discounted_reward" for m in pg_members)
    assert mixed.mechanism.outer_weight == "per_step" and mixed.mechanism.agent_model == "pg_step"
    assert learners.make_config(args, "none+pg", "er").agent.return_mode == "discounted_reward"
    assert learners.make_config(args, "id+ppo", "er").agent == learners.SHORT_EPISODE_PPO
    cleanup_ppo = learners.make_config(learners.Args(env=("cleanup",)), "none+ppo", "cleanup")
    assert cleanup_ppo.agent.advantage_norm == "minibatch" and cleanup_ppo.agent.conv_filters == 6
    paper = learners.make_config(learners.Args(env=("er",)), "id+pg", "er")
    assert paper.agent.return_mode == "reward_to_go" and paper.mechanism.outer_weight == "return"


@pytest.mark.timeout(300)
def test_peek_reads_a_runs_curve_from_its_checkpoints(tmp_path, capsys):
    """benchmarks.peek on a folder of runs: each run's evaluated curve and last
    evaluation, as the run itself reported them."""
    from benchmarks import peek
    from jaxsim.config import matrix_game
    from jaxsim.runner import run

    config = matrix_game("ipd", "none", episodes=60, eval_period=30, num_seeds=3)
    result = run(config, progress=False, checkpoint_dir=str(tmp_path / "ipd" / "none+pg"),
                 checkpoint_every=1)
    returns = np.asarray(result.eval_metrics["eval/return"], float)
    (line,) = peek.main(peek.Args(str(tmp_path), level=float(np.median(returns[-1]))))
    head, points = line.split("\n")
    assert head.startswith(f"ipd/none+pg: episode 60, final {returns[-1].mean():.2f} [")
    assert head.endswith(f"over 3 seeds, {np.mean(returns[-1] >= np.median(returns[-1])):.2f} "
                         f"at >= {np.median(returns[-1]):g}")
    assert points.split() == [f"{e}:{r:.1f}" for e, r in zip((30, 60), returns.mean(1),
                                                              strict=True)]
    with pytest.raises(SystemExit, match="no run checkpoints"):
        peek.main(peek.Args(str(tmp_path / "empty")))


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_resume_continues_the_runs_begun_and_starts_the_others(tmp_path, capsys):
    """A table resumed with a learner added: the run that had a checkpoint continues
    to the same figures, the new one starts from episode 0 (said on stderr); --resume
    where no run has a checkpoint is refused before anything trains."""
    common = dict(env=("ipd",), mechanism=("none",), seeds=2, episodes=60,
                  checkpoint_dir=str(tmp_path / "ckpt"), plots=str(tmp_path / "p"), **COMMON)
    first = learners.main(learners.Args(learner=("pg",), stop_after=30, **common))
    assert first["environments"]["ipd"]["none+pg"]["episodes"] == 30
    whole = learners.main(learners.Args(learner=("pg",), checkpoint_every=100,
                                        **{**common, "checkpoint_dir": str(tmp_path / "w")}))
    capsys.readouterr()
    resumed = learners.main(learners.Args(learner=("pg", "dqn"), resume=True, **common))
    assert "none+dqn has no checkpoint" in capsys.readouterr().err
    a, b = whole["environments"]["ipd"]["none+pg"], resumed["environments"]["ipd"]["none+pg"]
    assert b["episodes"] == 60 and b["final_return_per_seed"] == a["final_return_per_seed"]
    assert resumed["environments"]["ipd"]["none+dqn"]["episodes"] == 60
    with pytest.raises(ValueError, match="--resume: no checkpoint under"):
        learners.main(learners.Args(learner=("pg",), resume=True,
                                    **{**common, "checkpoint_dir": str(tmp_path / "none")}))


def test_reward_offset_pays_each_agent_the_constant_and_changes_nothing_else():
    """benchmarks.ppo_offset's wrapper: the IPD's reward at every step plus the offset,
    per agent; observation, discount and step type unchanged; `offset_env` restores
    the factory afterwards."""
    import envs_jax
    from benchmarks.ppo_offset import RewardOffset, offset_env

    make = envs_jax.make
    with offset_env(0.25):
        wrapped = envs_jax.make("ipd")
    assert envs_jax.make is make and isinstance(wrapped, RewardOffset)
    plain = envs_jax.make("ipd")
    key = jax.random.PRNGKey(3)
    state, _ = plain.reset(key)
    wrapped_state, _ = wrapped.reset(key)
    for action in ([0, 1], [1, 1], [1, 0]):  # C/D, D/D, D/C: payoffs differ per agent
        state, step = plain.step(state, np.array(action))
        wrapped_state, wrapped_step = wrapped.step(wrapped_state, np.array(action))
        np.testing.assert_allclose(wrapped_step.reward, step.reward + 0.25, rtol=0, atol=1e-6)
        assert not np.allclose(step.reward[0], step.reward[1]) or action == [1, 1]
        np.testing.assert_array_equal(wrapped_step.observation, step.observation)
        np.testing.assert_array_equal(wrapped_step.discount, step.discount)
        assert int(wrapped_step.step_type) == int(step.step_type)
    assert wrapped.observation_spec == plain.observation_spec


def test_reward_offset_reaches_the_runs_environment_and_keeps_cleanups_compact_form():
    """What `offset_env` patches is what `Experiment` builds its environment with, and
    the wrapper hands Cleanup's compact replay form through unchanged."""
    import envs_jax
    from benchmarks.learners import Args as LearnerArgs
    from benchmarks.learners import make_config
    from benchmarks.ppo_offset import RewardOffset, offset_env
    from jaxsim.train import Experiment

    config = make_config(LearnerArgs(env=("cleanup",), mechanism=("none",), learner=("ppo",),
                                     seeds=1, episodes=100), "none+ppo", "cleanup")
    with offset_env(0.5):
        env = Experiment(config).env
    assert isinstance(env, RewardOffset) and env.offset == 0.5
    assert not isinstance(Experiment(config).env, RewardOffset)
    plain = envs_jax.make(config.env, **dict(config.env_params))
    state, _ = plain.reset(jax.random.PRNGKey(0))
    assert env.stores_compact and plain.stores_compact
    compact = env.compact(state)
    np.testing.assert_array_equal(env.observe_compact(*compact),
                                  plain.observe_compact(*plain.compact(state)))


@pytest.mark.parametrize("offset", [(), (0.1, 0.1), (float("nan"),)])
def test_ppo_offset_refuses_bad_offsets_before_building_anything(offset, monkeypatch):
    from benchmarks import ppo_offset

    monkeypatch.setattr(ppo_offset, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="distinct finite"):
        ppo_offset.main(ppo_offset.Args(offset=offset))
