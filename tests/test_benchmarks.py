"""The benchmarks run end to end on a tiny budget and write what they promise."""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import matrix_games, throughput


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_matrix_games_benchmark_writes_json_plots_and_tables(tmp_path):
    out = tmp_path / "mg.json"
    args = matrix_games.Args(game="ipd", alg="both", seeds=2, episodes=60, out=str(out),
                             plots=str(tmp_path / "plots"), wandb_mode="disabled",
                             progress=False)
    matrix_games.main(args)
    payload = json.loads(out.read_text())
    iq, none = payload["games"]["ipd"]["iqflow"], payload["games"]["ipd"]["none"]
    for result in (iq, none):
        for key in ("coop_rate", "payoff_dilemma_removed", "payoff_dilemma_removed_per_state",
                    "q_dilemma_removed", "episodes_per_s", "env_steps_per_s", "compile_s"):
            assert key in result
        assert 0.0 <= result["coop_rate"]["mean"] <= 1.0
        assert result["coop_rate"]["ci95"][0] <= result["coop_rate"]["mean"]
    assert none["payoff_dilemma_removed"] == 0.0  # the raw IPD is a dilemma everywhere
    assert none["q_dilemma_removed"] is None
    assert set(iq["q_dilemma_removed_per_state"]) == {"start", "CC", "CD", "DC", "DD"}
    names = set(os.listdir(tmp_path / "plots"))
    assert {"ipd_payoff_tables.png", "ipd_q_ind_tables.png", "ipd_dilemma_curves.png",
            "ipd_tables.txt", "ipd_dilemma_curves.txt"} <= names
    tables = (tmp_path / "plots" / "ipd_tables.txt").read_text()
    assert "payoff after 30 episodes" in tables and "q_ind after 60 episodes" in tables


def _run_module(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """`python -m module *argv` in this process (runpy, as `-m` does; no new interpreter
    to start and import JAX into): its exit status and everything it printed, an
    uncaught exception's message included, as the shell would see them."""
    import runpy
    import warnings

    old_argv, sys.argv = sys.argv, [module, *argv]
    try:
        with warnings.catch_warnings():  # the module is imported already, by this file
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        status, raised = 0, ""
    except SystemExit as stop:
        status, raised = (stop.code if isinstance(stop.code, int) else 1), ""
    except Exception as error:  # uncaught, it would exit 1 with its message
        status, raised = 1, f"{type(error).__name__}: {error}"
    finally:
        sys.argv = old_argv
    out = capsys.readouterr()
    return status, out.out + out.err + raised


def test_cli_rejects_bad_input_before_compiling(capsys, monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before the input was checked")

    monkeypatch.setattr(jax.stages.Lowered, "compile", no_compiling)
    for argv, message in ((["--seeds", "-2"], "num_seeds must be an integer >= 1"),
                          (["--game", "go"], "invalid choice"),
                          (["--recipe", "lio"], "invalid choice"),
                          (["--recipe", "id_authors"], "does not apply to the matrix games")):
        status, output = _run_module("benchmarks.matrix_games",
                                     [*argv, "--wandb-mode", "disabled"], capsys)
        assert status != 0
        assert message in output, output[-2000:]


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_every_benchmark_trains_any_number_of_episodes(tmp_path):
    """A researcher's natural numbers work: here none is a multiple of the
    benchmark's chunk (30, 250 and 100 episodes), so each run ends with a shorter
    chunk, evaluated."""
    from benchmarks import cleanup, escape_room

    common = dict(seeds=2, wandb_mode="disabled", progress=False)
    games = matrix_games.main(matrix_games.Args(game="ipd", alg="none", episodes=7,
                                                plots=str(tmp_path / "m"), **common))
    assert games["games"]["ipd"]["none"]["episodes"] == 7
    room = escape_room.main(escape_room.Args(n=3, m=1, alg="pg", episodes=7,
                                             plots=str(tmp_path / "e"), **common))
    clean = cleanup.main(cleanup.Args(alg="ac", episodes=3, plots=str(tmp_path / "c"), **common))
    for result in (room["algorithms"]["pg"], clean["algorithms"]["ac"]):
        assert result["episodes"] == result["eval_episodes"][-1] == result["episodes_planned"]
        assert len(result["final_return_per_seed"]) == 2


@pytest.mark.timeout(300)
def test_throughput_benchmark_reports_ratio(tmp_path):
    out = tmp_path / "tp.json"
    payload = throughput.main(throughput.Args(alg="none", seeds=(1, 4), episodes=30,
                                              out=str(out)))
    rows = json.loads(out.read_text())["rows"]
    assert [r["seeds"] for r in rows] == [1, 4]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["ratio_to_first"] > 0
    assert payload["rows"][1]["episodes_per_s"] > 0


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_escape_room_benchmark_writes_curves_for_every_algorithm(tmp_path):
    from benchmarks import escape_room

    out = tmp_path / "er.json"
    args = escape_room.Args(n=3, m=1, alg="all", seeds=2, episodes=100, chunk_episodes=50,
                            eval_period=50, out=str(out), plots=str(tmp_path / "plots"),
                            wandb_mode="disabled", progress=False)
    escape_room.main(args)
    payload = json.loads(out.read_text())
    assert payload["optimum"] == 19
    for alg in ("iqflow", "id", "pg"):
        r = payload["algorithms"][alg]
        assert r["eval_episodes"] == [50, 100]
        assert len(r["eval_return_mean"]) == 2 and len(r["eval_return_ci95"]) == 2
        for key in ("final_return_mean", "first_episode_at_or_above", "episodes_per_s",
                    "compile_s", "incentive_by_action"):
            assert key in r
        assert r["threshold"] == 18
    assert np.all(np.nan_to_num(payload["algorithms"]["pg"]["incentive_by_action"]) == 0)
    assert {"er_3_1_returns.png", "er_3_1_incentives.png"} <= set(os.listdir(tmp_path / "plots"))


@pytest.mark.timeout(400)
def test_escape_room_runs_split_by_seed_merge_into_the_whole_run(tmp_path):
    from benchmarks import escape_room

    common = dict(n=3, m=1, alg="pg", episodes=100, chunk_episodes=50, eval_period=50,
                  wandb_mode="disabled", progress=False, plots=str(tmp_path / "plots"))
    whole = escape_room.main(escape_room.Args(seeds=3, out=str(tmp_path / "whole.json"),
                                              **common))["algorithms"]["pg"]
    parts = []
    for first, seeds in ((0, 2), (2, 1)):
        path = str(tmp_path / f"part{first}.json")
        escape_room.main(escape_room.Args(seeds=seeds, first_seed=first, out=path, **common))
        parts.append(path)
    merged = escape_room.main(escape_room.Args(merge=tuple(reversed(parts)),
                                               out=str(tmp_path / "merged.json"),
                                               plots=str(tmp_path / "plots")))
    pg = merged["algorithms"]["pg"]
    assert pg["seeds"] == 3 and pg["first_seed"] == 0 and pg["merged_from"] == 2
    np.testing.assert_allclose(pg["eval_return_per_seed"], whole["eval_return_per_seed"],
                               atol=1e-3)
    np.testing.assert_allclose(pg["eval_return_mean"], whole["eval_return_mean"], atol=1e-3)
    with pytest.raises(ValueError, match="not contiguous"):
        escape_room.main(escape_room.Args(merge=(parts[0], parts[0])))  # seeds 0-1 twice
    # Runs of another config (recipe, or a row such as --pg-return) are not merged.
    assert pg["recipe"] == "paper" and pg["config"]["num_seeds"] == 3
    other = json.loads(open(parts[1]).read())
    other["algorithms"]["pg"]["config"]["agent"]["return_mode"] = "discounted_reward"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="pg runs have different configs"):
        escape_room.main(escape_room.Args(merge=(parts[0], str(tmp_path / "other.json"))))
    # A part written before a config field existed reads it at its default (as a
    # checkpoint does), so it merges with one written after; at another value it does not.
    for value, merges in ((None, True), ("adam", False)):
        older = json.loads(open(parts[1]).read())
        agent = older["algorithms"]["pg"]["config"]["agent"]
        agent.pop("optimizer") if value is None else agent.update(optimizer=value)
        (tmp_path / "older.json").write_text(json.dumps(older))
        both = escape_room.Args(merge=(parts[0], str(tmp_path / "older.json")),
                                plots=str(tmp_path / "plots"))
        if merges:
            assert escape_room.main(both)["algorithms"]["pg"]["seeds"] == 3
        else:
            with pytest.raises(ValueError, match="pg runs have different configs"):
                escape_room.main(both)
    rule = escape_room.make_config(escape_room.Args(pg_return="discounted_reward"), "id")
    assert rule.agent.return_mode == "discounted_reward"
    weighted = escape_room.make_config(escape_room.Args(id_outer_weight="td_error"), "id")
    assert weighted.mechanism.outer_weight == "td_error"
    assert escape_room.make_config(escape_room.Args(), "id").mechanism.outer_weight == "return"
    # Files written before configs were in the JSON: the flags in their args decide.
    legacy = []
    for index, (path, weight) in enumerate(zip(parts, ("return", "td_error"), strict=True)):
        payload = json.loads(open(path).read())
        payload["algorithms"] = {"id": payload["algorithms"]["pg"]}
        del payload["algorithms"]["id"]["config"]
        payload["args"]["id_outer_weight"] = weight
        legacy.append(tmp_path / f"id{index}.json")
        legacy[-1].write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="weight their outer loss differently"):
        escape_room.main(escape_room.Args(merge=tuple(map(str, legacy))))
    # A row flag that no run of the command has is refused before compiling.
    with pytest.raises(ValueError, match="--id-outer-weight does not apply to --alg pg"):
        escape_room.main(escape_room.Args(id_outer_weight="per_step", **common))
    with pytest.raises(ValueError, match="names a recipe twice"):
        escape_room.main(escape_room.Args(recipe=("paper", "paper"), **common))


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_a_stop_during_compilation_ends_cleanly_before_training(tmp_path,
                                                               signals_before_training):
    """Ctrl-C while the program compiles (the handler runs once compilation returns:
    here, just before the first chunk) ends the benchmark without a traceback: nothing
    trained, the JSON says so, and the process's own handler is back."""
    import signal

    from benchmarks import escape_room

    signals_before_training(signal.SIGINT)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "er.json"
    escape_room.main(escape_room.Args(n=3, m=1, alg="all", seeds=2, episodes=100,
                                      chunk_episodes=50, eval_period=50, out=str(out),
                                      plots=str(tmp_path / "plots"), wandb_mode="disabled",
                                      progress=False))
    assert signal.getsignal(signal.SIGINT) is before
    algorithms = json.loads(out.read_text())["algorithms"]
    assert list(algorithms) == ["iqflow"]  # "all" stops at the first interrupted run
    r = algorithms["iqflow"]
    assert r["interrupted"] and r["episodes"] == 0 and r["eval_episodes"] == []
    assert r["final_return_mean"] is None and r["compile_s"] > 0


def test_dot_flops_counts_every_matmul_and_scan_iteration():
    from benchmarks.step_profile import dot_flops

    def f(w, x):  # 3 scanned [2,3]x[3,3] matmuls, then a batched [5,2,3]x[5,3,4]
        y, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)
        return jnp.einsum("bij,bjk->bik", jnp.broadcast_to(y, (5, 2, 3)), jnp.ones((5, 3, 4)))

    jaxpr = jax.make_jaxpr(jax.vmap(f, in_axes=(None, 0)))(jnp.ones((3, 3)), jnp.ones((7, 2, 3)))
    assert dot_flops(jaxpr) == 7 * (3 * 2 * 2 * 3 * 3 + 2 * 5 * 2 * 4 * 3)


def test_cleanup_throughput_plays_and_renders_every_step(tmp_path):
    """The benchmark's checksum is the sum of every observation and reward of the
    episodes it plays, so no rendering can be optimised away; it equals a step-by-step
    replay of the same random actions."""
    import envs_jax

    env = envs_jax.make("cleanup_7x7", max_steps=6)
    checksum = float(throughput.random_play(env, 1, 2)(jax.random.PRNGKey(5)))
    # The same draws as random_play, one step at a time.
    key = jax.random.split(jax.random.PRNGKey(5), 1)[0]
    total = 0.0
    reset, step = jax.jit(env.reset), jax.jit(env.step)  # each compiled, not run op by op
    for episode_key in jax.random.split(key, 2):
        reset_key, steps_key = jax.random.split(episode_key)
        state, ts = reset(reset_key)
        total += float(jnp.sum(ts.observation))
        for k in jax.random.split(steps_key, env.max_steps):
            action = jax.random.randint(k, (env.num_agents,), 0, env.num_actions)
            state, ts = step(state, action)
            total += float(jnp.sum(ts.observation) + jnp.sum(ts.reward))
    np.testing.assert_allclose(checksum, total, rtol=1e-5)
    out = tmp_path / "t.json"
    payload = throughput.main(throughput.Args(env="cleanup_7x7", seeds=(1, 2), episodes=1,
                                              min_seconds=0.0, out=str(out)))
    assert [r["envs"] for r in payload["rows"]] == [1, 2]
    assert json.loads(out.read_text())["best"]["env_steps_per_s"] > 0


def test_cleanup_benchmark_writes_curves_and_refuses_bad_input(tmp_path):
    from benchmarks import cleanup as cleanup_bench

    out = tmp_path / "c.json"
    args = cleanup_bench.Args(alg="shared", seeds=1, episodes=2, chunk_episodes=1,
                              eval_period=1, agent_reset_period=0, out=str(out),
                              plots=str(tmp_path / "plots"), wandb_mode="disabled",
                              progress=False)
    cleanup_bench.main(args)
    result = json.loads(out.read_text())["algorithms"]["shared"]
    assert result["eval_episodes"] == [1, 2] and result["seeds"] == 1
    for key in ("eval_return_mean", "eval_return_ci95", "final_return_mean",
                "first_episode_at_or_above", "episodes_per_s", "compile_s",
                "incentive_mean_per_agent"):
        assert key in result
    assert result["incentive_mean_per_agent"] == [0.0, 0.0]
    assert os.path.exists(tmp_path / "plots" / "cleanup_7x7_returns.png")
    with pytest.raises(ValueError, match="num_seeds"):  # before anything compiles
        cleanup_bench.main(dataclasses.replace(args, alg="iqflow", seeds=-1))
    with pytest.raises(ValueError, match="needs --mechanism-from"):
        cleanup_bench.main(dataclasses.replace(args, alg="pretrained"))
    with pytest.raises(ValueError, match="--freeze-mechanism needs --mechanism-from"):
        cleanup_bench.main(dataclasses.replace(args, alg="iqflow", freeze_mechanism=True))
    with pytest.raises(ValueError, match="not into --alg shared"):
        cleanup_bench.main(dataclasses.replace(args, mechanism_from=str(tmp_path)))
    with pytest.raises(ValueError, match="no such directory"):
        cleanup_bench.main(dataclasses.replace(args, alg="id",
                                               mechanism_from=str(tmp_path / "none")))
    # Runs of other algorithms, side by side in one JSON and plot.
    other = json.loads(out.read_text())
    other["algorithms"] = {"ac": other["algorithms"]["shared"]}
    (tmp_path / "ac.json").write_text(json.dumps(other))
    merged = cleanup_bench.main(cleanup_bench.Args(
        merge=(str(out), str(tmp_path / "ac.json")), out=str(tmp_path / "both.json"),
        plots=str(tmp_path / "merged")))
    assert sorted(merged["algorithms"]) == ["ac", "shared"]
    assert os.path.exists(tmp_path / "merged" / "cleanup_7x7_returns.png")
    # --remat-unroll reaches IQ-Flow's config and leaves the other algorithms alone.
    remat = dataclasses.replace(args, remat_unroll=True)
    assert cleanup_bench.make_config(remat, "iqflow").mechanism.remat_unroll
    assert not cleanup_bench.make_config(args, "iqflow").mechanism.remat_unroll
    assert cleanup_bench.make_config(remat, "shared") == cleanup_bench.make_config(args, "shared")


@pytest.mark.timeout(400)
def test_cleanup_shared_baselines_of_both_recipes_side_by_side(tmp_path):
    """--alg shared --recipe paper authors: the decentralised agents (paper) and the
    authors' centralised controller over the joint action (SPEC §6 row 9), each run's
    recipe and config in the JSON, one plot."""
    from benchmarks import cleanup as cleanup_bench

    out = tmp_path / "c.json"
    args = cleanup_bench.Args(alg="shared", recipe=("paper", "authors"), seeds=1, episodes=2,
                              chunk_episodes=1, eval_period=1, agent_reset_period=0,
                              out=str(out), plots=str(tmp_path / "plots"),
                              wandb_mode="disabled", progress=False)
    cleanup_bench.main(args)
    runs = json.loads(out.read_text())["algorithms"]
    assert sorted(runs) == ["shared@authors", "shared@paper"]
    assert runs["shared@authors"]["recipe"] == "authors"
    assert runs["shared@authors"]["config"]["env"] == "centralised:cleanup_7x7"
    assert runs["shared@authors"]["config"]["agent"]["lr_actor"] == 6.73e-4
    assert runs["shared@paper"]["config"]["env"] == "cleanup_7x7"
    assert runs["shared@authors"]["incentive_mean_per_agent"] == [0.0]  # one controller
    assert os.path.exists(tmp_path / "plots" / "cleanup_7x7_returns.png")
    with pytest.raises(ValueError, match="--q-layout does not apply to --alg shared"):
        cleanup_bench.main(dataclasses.replace(args, q_layout="shared_conv"))
    fig7 = cleanup_bench.run_names(dataclasses.replace(args, alg="all"),
                                   cleanup_bench.algorithms(dataclasses.replace(args, alg="all")))
    assert [name for name, _, _ in cleanup_bench.distinct_runs(fig7)] == [
        "iqflow@paper", "id@paper", "ac@paper", "shared@paper", "shared_centralised@paper",
        "iqflow@authors", "id@authors", "ac@authors", "shared@authors",
        "shared_decentralised@authors"]


def test_summary_of_a_run_stopped_before_its_first_evaluation():
    from benchmarks.common import summarise

    empty = summarise([], np.zeros((0, 4)), threshold=27.0)
    assert empty["eval_episodes"] == [] and empty["final_return_mean"] is None
    assert empty["first_episode_at_or_above"] is None
    two = summarise([250, 500], [[1.0, 3.0], [27.0, 29.0]], threshold=27.0)
    assert two["eval_return_mean"] == [2.0, 28.0] and two["final_return_mean"] == 28.0
    assert two["first_episode_at_or_above"] == 500


def test_step_profile_rows_parse_and_refuse_bad_specs():
    from benchmarks.step_profile import Row

    assert Row.parse("64") == Row(64)
    assert Row.parse("4096:remat:group=512") == Row(4096, True, 512)
    assert Row.parse("64:reference") == Row(64, reference=True)
    assert Row.parse("1024:remat:reference").label(20) == "1024s_K20_remat_reference"
    from agents import buffer
    from benchmarks.step_profile import distinct_rows_sampler
    from mechanism import replay

    today = replay.sample_distinct_rows
    with distinct_rows_sampler(reference=True):
        assert replay.sample_distinct_rows is buffer.sample_distinct_rows_one_by_one
    assert replay.sample_distinct_rows is today is buffer.sample_distinct_rows
    for bad in ("x", "64:fast", "64:group=0", "8:group=16", "0"):
        with pytest.raises(ValueError, match="bad row"):
            Row.parse(bad)


def test_cleanup_mechanism_from_warm_starts_or_freezes_iqflow_and_id(tmp_path, monkeypatch):
    """--mechanism-from reaches the runner for IQ-Flow and ID; --freeze-mechanism makes
    their config the frozen one of --alg pretrained (no replay beyond the minimum).
    The run itself is faked: what loading and freezing do is tested in test_checkpoint."""
    from benchmarks import cleanup as cleanup_bench

    args = cleanup_bench.Args(seeds=1, episodes=10, chunk_episodes=1, eval_period=1,
                              wandb_mode="disabled", progress=False,
                              mechanism_from=str(tmp_path))
    frozen = dataclasses.replace(args, freeze_mechanism=True)
    assert cleanup_bench.make_config(frozen, "iqflow") == cleanup_bench.make_config(
        args, "pretrained")
    assert cleanup_bench.make_config(frozen, "id").freeze_mechanism
    assert not cleanup_bench.make_config(args, "iqflow").freeze_mechanism  # keeps learning
    # --replay-capacity: IQ-Flow keeps its last N transitions; nothing else has a replay.
    capped = dataclasses.replace(args, replay_capacity=300)
    assert cleanup_bench.make_config(capped, "iqflow").mechanism.replay_capacity == 300
    assert cleanup_bench.make_config(args, "iqflow").mechanism.replay_capacity is None
    assert cleanup_bench.make_config(capped, "ac") == cleanup_bench.make_config(args, "ac")
    calls = []

    def fake_run(config, **options):
        calls.append((config.freeze_mechanism, options["mechanism_from"]))
        raise KeyboardInterrupt  # stands for the run; nothing compiles

    monkeypatch.setattr(cleanup_bench, "run", fake_run)
    for alg, options in (("iqflow", args), ("id", frozen)):
        with pytest.raises(KeyboardInterrupt):
            cleanup_bench.main(dataclasses.replace(options, alg=alg))
    assert calls == [(False, str(tmp_path)), (True, str(tmp_path))]


@pytest.mark.timeout(300)
def test_incentive_probe_finds_a_saturated_incentive_net(tmp_path):
    """The probe rebuilds the run from its checkpoint and tells a seed whose incentive
    net was pushed far below zero (planted: last bias -30) from one that was not: slope
    ~0, every row saturated, a meta-gradient orders of magnitude smaller. A run of
    another mechanism or a missing directory is refused, and nothing is created."""
    from benchmarks import incentive_probe
    from jaxsim.checkpoint import Checkpointer, CheckpointError
    from jaxsim.config import NoMechanismConfig
    from jaxsim.train import Experiment, seed_keys
    from mechanism import replay
    from tests.test_checkpoint import config

    # Two seeds' fresh states with 100 random transitions in each buffer (no training
    # program to compile), seed 1's incentive net planted far below zero.
    cfg = config()
    experiment = Experiment(cfg)
    state = jax.jit(jax.vmap(experiment.init))(seed_keys(cfg))
    mech, rows = experiment.mechanism, 100
    keys = jax.random.split(jax.random.key(3), 4)
    items = replay.Transition(
        obs=jax.random.uniform(keys[0], (2, rows, mech.num_agents, *mech.obs_shape)),
        action=jax.random.randint(keys[1], (2, rows, mech.num_agents), 0, mech.num_actions),
        reward=jax.random.normal(keys[2], (2, rows, mech.num_agents)),
        next_obs=jax.random.uniform(keys[3], (2, rows, mech.num_agents, *mech.obs_shape)),
        done=jnp.zeros((2, rows)))
    buffer = jax.jit(jax.vmap(replay.add))(state.mechanism.buffer, items, jnp.ones((2, rows)))
    eta = state.mechanism.eta
    last = max(eta["params"], key=lambda name: int(name.split("_")[-1]))
    eta["params"][last]["bias"] = eta["params"][last]["bias"].at[1].set(-30.0)
    planted = str(tmp_path / "planted")
    writer = Checkpointer(planted, cfg)
    writer.save(20, state.replace(mechanism=state.mechanism.replace(eta=eta, buffer=buffer)),
                {"return": np.zeros((2, 2))}, {})
    writer.wait()
    writer.close()

    out = tmp_path / "probe.json"
    payload = incentive_probe.main(incentive_probe.Args(checkpoint=planted, rows=64,
                                                        recent_episodes=5, out=str(out)))
    assert json.loads(out.read_text())["seeds"] == [0, 1] and payload["episode"] == 20
    slope, saturated = np.array(payload["sigmoid_slope"]), np.array(payload["saturated_fraction"])
    grad = np.array(payload["meta_grad_norm"])
    assert slope.shape == saturated.shape == (2, 2) and np.all(np.isfinite(grad))
    assert np.all(slope[1] < 1e-10) and np.all(saturated[1] == 1.0)
    assert np.all(slope[0] > 1e-3) and np.all(saturated[0] == 0.0)
    assert grad[0] > 0 and grad[1] < 1e-4 * grad[0]
    np.testing.assert_allclose(np.array(payload["action_fraction"]).sum(-1), 1.0)

    # Another mechanism's run is refused from its config alone, before any state is read.
    other = str(tmp_path / "none")
    writer = Checkpointer(other, cfg.replace(mechanism=NoMechanismConfig()))
    writer.save(10, {"x": np.zeros(1)}, {"x": np.zeros(1)}, {})
    writer.wait()
    writer.close()
    with pytest.raises(CheckpointError, match="NoMechanismConfig, not IQ-Flow"):
        incentive_probe.main(incentive_probe.Args(checkpoint=other))
    missing = str(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no such directory"):
        incentive_probe.main(incentive_probe.Args(checkpoint=missing))
    assert not os.path.exists(missing)


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_matrix_and_cleanup_runs_split_by_seed_merge_into_the_whole_run(tmp_path):
    """Every benchmark's --merge recombines seeds (here the matrix games and Cleanup;
    Escape Room above): the parts' merged figures are the whole run's."""
    from benchmarks import cleanup as cleanup_bench

    def split_and_merge(module, common, key):
        whole = module.main(module.Args(seeds=2, out=str(tmp_path / "whole.json"), **common))
        parts = []
        for first, seeds in ((0, 1), (1, 1)):
            parts.append(str(tmp_path / f"{key}{first}.json"))
            module.main(module.Args(seeds=seeds, first_seed=first, out=parts[-1], **common))
        merged = module.main(module.Args(merge=tuple(parts), out=str(tmp_path / "m.json"),
                                         plots=str(tmp_path / "merged")))
        return whole, merged

    common = dict(game="ipd", alg="none", episodes=60, wandb_mode="disabled", progress=False,
                  plots=str(tmp_path / "mp"))
    whole, merged = split_and_merge(matrix_games, common, "m")
    a, b = whole["games"]["ipd"]["none"], merged["games"]["ipd"]["none"]
    assert b["seeds"] == 2 and b["merged_from"] == 2
    for key in ("coop_rate_per_seed", "final_eval_return_per_seed", "final_tables",
                "payoff_dilemma_removed", "payoff_seed_min_margin"):
        assert a[key] == b[key], key
    np.testing.assert_allclose(b["coop_rate"]["mean"], a["coop_rate"]["mean"], atol=1e-4)
    np.testing.assert_allclose(b["coop_rate_curve"]["mean"], a["coop_rate_curve"]["mean"],
                               atol=1e-4)
    legacy = json.loads(open(tmp_path / "m1.json").read())  # as written before --merge here
    del legacy["games"]["ipd"]["none"]["first_seed"]
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="do not say which seeds they hold"):
        matrix_games.main(matrix_games.Args(merge=(str(tmp_path / "m0.json"),
                                                   str(tmp_path / "legacy.json"))))

    common = dict(alg="ac", episodes=2, chunk_episodes=1, eval_period=1, wandb_mode="disabled",
                  progress=False, plots=str(tmp_path / "cp"))
    whole, merged = split_and_merge(cleanup_bench, common, "c")
    a, b = whole["algorithms"]["ac"], merged["algorithms"]["ac"]
    assert b["seeds"] == 2 and b["merged_from"] == 2 and b["config"] == a["config"]
    assert a["eval_return_per_seed"] == b["eval_return_per_seed"]
    for key in ("eval_return_mean", "train_return_mean", "actions_taken_by_action"):
        np.testing.assert_allclose(b[key], a[key], atol=1e-3, err_msg=key)


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_matrix_games_stop_and_resume_with_their_tables(tmp_path):
    """The matrix games take --stop-after and --resume like the others: the tables read
    after each chunk travel in the checkpoint, so the resumed run's are the whole run's."""
    common = dict(game="ipd", alg="iqflow", seeds=2, episodes=60, wandb_mode="disabled",
                  progress=False, plots=str(tmp_path / "p"))
    whole = matrix_games.main(matrix_games.Args(**common))["games"]["ipd"]["iqflow"]
    ckpt = str(tmp_path / "ckpt")
    matrix_games.main(matrix_games.Args(checkpoint_dir=ckpt, stop_after=30, **common))
    resumed = matrix_games.main(matrix_games.Args(checkpoint_dir=ckpt, resume=True,
                                                  **common))["games"]["ipd"]["iqflow"]
    for key in ("coop_rate_per_seed", "final_tables", "coop_rate_curve",
                "payoff_dilemma_removed", "q_dilemma_removed"):
        assert resumed[key] == whole[key], key
    assert set(whole["final_tables"]) == {"payoff", "q_env", "q_ind", "q_coop"}
    tables = (tmp_path / "p" / "ipd_tables.txt").read_text()
    assert "payoff after 30 episodes" in tables  # drawn from the first sitting's chunk
    assert "q_coop after 60 episodes" in tables


HAND_HLO = """HloModule hand

%fused_a (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %t = f32[4]{0} tanh(%p)
}

%body (s: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %s = (s32[], f32[4,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%s), index=0
  %x = f32[4,4]{1,0} get-tuple-element(%s), index=1
  %d = f32[4,4]{1,0} dot(%x, %x), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %f = f32[4,4]{1,0} fusion(%d), kind=kLoop, calls=%fused_a
  %n = s32[] fusion(%i), kind=kLoop, calls=%fused_a
  ROOT %r = (s32[], f32[4,4]{1,0}) tuple(%n, %f)
}

%cond (s: (s32[], f32[4,4])) -> pred[] {
  %s = (s32[], f32[4,4]{1,0}) parameter(0)
  ROOT %lt = pred[] fusion(%s), kind=kLoop, calls=%fused_a
}

%cheap (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} exponential(%x)
}

%dear (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %a = f32[4]{0} exponential(%x)
  %b = f32[4]{0} log(%a)
  ROOT %c = f32[4]{0} copy(%b)
}

ENTRY %main (x: f32[4,4], v: f32[4], k: s32[]) -> f32[4] {
  %x = f32[4,4]{1,0} parameter(0)
  %v = f32[4]{0} parameter(1)
  %k = s32[] parameter(2)
  %z = s32[] constant(0)
  %t = (s32[], f32[4,4]{1,0}) tuple(%z, %x)
  %w = (s32[], f32[4,4]{1,0}) while(%t), WHILE_ATTRIBUTES
  %c = f32[4]{0} conditional(%k, %v, %v), branch_computations={%cheap, %dear}
  ROOT %out = f32[4]{0} fusion(%c), kind=kLoop, calls=%fused_a
}
""".replace("WHILE_ATTRIBUTES", 'condition=%cond, body=%body, metadata={op_name="jit(f)/while"}, '
            'backend_config={"known_trip_count":{"n":"3"}}')


def test_kernel_count_on_a_hand_worked_module():
    """Body (dot + 2 fusions) x 3 trips = 9, its condition x 4 checks = 4, the dearer
    branch of the conditional 3, the entry's fusion 1: 17 kernels, 3 of them matmuls,
    3 loop iterations; per episode over a chunk of 2 episodes, half of each."""
    from benchmarks.kernel_count import kernels_per_episode

    counts = kernels_per_episode(HAND_HLO, episodes=1)
    assert (counts["kernels"], counts["matmul_kernels"], counts["loop_iterations"]) == (17, 3, 3)
    assert counts["by_opcode"] == {"fusion": 11, "dot": 3, "exponential": 1, "log": 1, "copy": 1}
    assert counts["matmul_shapes"] == {"f32[4,4]": 3}
    assert counts["by_loop"] == {"jit(f)/while x3": 13, "(outside any loop)": 4}
    assert kernels_per_episode(HAND_HLO, episodes=2)["kernels"] == 8.5


def test_kernel_count_reads_a_compiled_scan():
    """A scan of 7 matmul steps, compiled here: 7 loop iterations and 7 matmuls."""
    from benchmarks.kernel_count import kernels_per_episode

    def f(x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c), None), x, None, length=7)[0].sum()

    text = jax.jit(f).lower(jnp.ones((4, 4))).compile().as_text()
    counts = kernels_per_episode(text, episodes=1)
    assert counts["loop_iterations"] == 7 and counts["matmul_kernels"] == 7
    assert counts["kernels"] > 7


def test_kernel_count_knows_the_gpus_matmuls():
    """cuBLAS calls (a tuple result with the workspace) and Triton GEMM fusions are
    matmuls; an elementwise fusion is not."""
    from benchmarks.kernel_count import kernels_per_episode

    text = """HloModule gpu

%fused_dot (p: f32[4,4]) -> f32[4,4] {
  %p = f32[4,4]{1,0} parameter(0)
  ROOT %d = f32[4,4]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: f32[4,4]) -> f32[4,4] {
  %x = f32[4,4]{1,0} parameter(0)
  %g = (f32[4,4]{1,0}, s8[64]{0}) custom-call(%x, %x), custom_call_target="__cublas$gemm"
  %r = f32[4,4]{1,0} get-tuple-element(%g), index=0
  %t = f32[4,4]{1,0} fusion(%r), kind=kCustom, calls=%fused_dot, TRITON
  ROOT %e = f32[4,4]{1,0} fusion(%t), kind=kLoop, calls=%fused_dot
}
""".replace("TRITON", 'backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}')
    counts = kernels_per_episode(text, episodes=1)
    assert (counts["kernels"], counts["matmul_kernels"]) == (3, 2)
    assert counts["matmul_shapes"] == {"f32[4,4]": 2}
