"""Issue 16: IQ-Flow's diagnostics and saturation warning on a planted saturated net
and a healthy one, the host's alarm bookkeeping, and each remedy's gradient where the
paper's head is flat."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim.checkpoint import CheckpointError, check_mechanism_source
from jaxsim.config import (MINI_INIT_SCALE, IDConfig, IQFlowConfig, NoMechanismConfig,
                           escape_room, matrix_game, validate, with_variant)
from jaxsim.runner import AlarmWatch, run
from mechanism import replay
from mechanism.iqflow import IQFlow
from tests.test_iqflow import _tiny_mechanism, assert_step_b_gradient_matches_finite_differences


def _last_layer(eta) -> str:
    return max(eta["params"], key=lambda name: int(name.split("_")[-1]))


def _plant(eta, bias: float):
    """eta with its last layer's bias set to `bias`: z = bias + (something small)."""
    last = _last_layer(eta)
    params = dict(eta["params"])
    params[last] = {**params[last], "bias": jnp.full_like(params[last]["bias"], bias),
                    "kernel": params[last]["kernel"] * 1e-3}
    return {**eta, "params": params}


# --- the host's bookkeeping --------------------------------------------------------------

def test_alarm_watch_waits_a_whole_period_then_reports_once_until_cleared():
    watch = AlarmWatch(period_chunks=3, chunk_episodes=10, run_names=[4, 5])
    on = lambda *agents: {"alarm/x": np.array(agents, np.float32), "other": np.zeros(2)}  # noqa: E731
    assert watch.update(on([1, 0], [0, 0]), 10) == []
    assert watch.update(on([1, 0], [0, 1]), 20) == []
    lines = watch.update(on([1, 0], [0, 1]), 30)  # seed 4 agent 0: three chunks in a row
    assert len(lines) == 1 and "seed 4" in lines[0] and "since episode 0" in lines[0]
    assert watch.flagged() == {"alarm/x": 1}
    lines = watch.update(on([1, 0], [0, 1]), 40)  # seed 5 agent 1 now too; seed 4 not again
    assert len(lines) == 1 and "seed 5: x entry 1" in lines[0]
    assert watch.update(on([0, 0], [0, 0]), 50) == [] and watch.flagged() == {"alarm/x": 0}
    for end in (60, 70):
        assert watch.update(on([1, 0], [0, 0]), end) == []
    assert len(watch.update(on([1, 0], [0, 0]), 80)) == 1  # cleared, then a new streak
    assert [(a["run"], a["entry"], a["since_episode"]) for a in watch.fired] == [
        (4, [0], 0), (5, [1], 10), (4, [0], 50)]


# --- a run: the warning fires on a planted saturated net, not on a healthy one -----------

def _tiny_ipd(**mechanism):
    config = matrix_game("ipd", "iqflow", episodes=150, chunk_episodes=30, eval_period=60,
                         num_seeds=2)
    return config.replace(mechanism=dataclasses.replace(config.mechanism, **mechanism))


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_diagnostics_warn_on_a_planted_saturated_net_and_not_on_a_healthy_one(
        tmp_path, monkeypatch, capsys):
    """Every seed's incentive net planted at z ~ -50 (r_inc ~ 4e-22, slope ~ 0) from the
    start: the per-chunk diagnostics show it, the warning names both seeds and agents
    once their alarm has held for a whole evaluation period (60 episodes), and the run
    records it. The same run unplanted: the slope is far above the threshold and
    nothing fires. stuck_dilemma 0: the test does not depend on where the critics'
    argmaxes fall."""
    config = _tiny_ipd(stuck_dilemma=0.0)
    healthy = run(config, progress=False)
    assert healthy.alarms == []
    slope = healthy.metrics["diag/slope"]  # [chunks, seeds, agents]
    assert slope.shape == (5, 2, 2) and np.all(slope > 1e-2)
    for name in ("grad_meta", "grad_cost1", "grad_cost2", "grad_total", "step_norm",
                 "eps_floor_fraction"):
        assert healthy.metrics[f"diag/{name}"].shape == (5, 2)
    assert np.all(healthy.metrics["diag/grad_meta"][1:] > 0)  # step B active from chunk 2
    np.testing.assert_array_equal(healthy.metrics["diag/grad_cost1"], 0.0)  # c1 = 0 here

    real_init = IQFlow.init
    monkeypatch.setattr(IQFlow, "init", lambda self, key: (
        lambda state: state.replace(eta=_plant(state.eta, -50.0)))(real_init(self, key)))
    capsys.readouterr()
    planted = run(config, progress=False, checkpoint_dir=str(tmp_path / "planted"))
    err = capsys.readouterr().err
    z = planted.metrics["diag/logit_mean"]
    assert np.all(z < -40) and np.all(planted.metrics["diag/slope"] < 1e-15)
    # Step B (from 200 steps = episode 40) is active in chunks 2-5: the alarm holds from
    # chunk 2, so a whole period (2 chunks) ends at episode 90.
    fired = sorted((a["run"], a["entry"][0], a["since_episode"], a["episode"])
                   for a in planted.alarms)
    assert fired == [(0, 0, 30, 90), (0, 1, 30, 90), (1, 0, 30, 90), (1, 1, 30, 90)]
    assert err.count("warning: seed") == 4 and "incentive_saturated" in err

    # A mechanism checkpoint is loaded only into a run that reads it with the same
    # incentive function.
    source = str(tmp_path / "planted")
    check_mechanism_source(source, config)
    other = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                         incentive_activation="abs_tanh"))
    with pytest.raises(CheckpointError, match="incentive_activation: checkpoint 'sigmoid'"):
        check_mechanism_source(source, other)


# --- each remedy has a gradient where the paper's head is flat ---------------------------

def test_each_remedy_slope_is_nonzero_where_the_paper_head_pays_nothing():
    """Where the paper's head pays ~0 (z = -50) its slope is ~1e-21; the row-13 head
    pays 0 at z = 0, its steepest point (slope 2); the straight-through clip at b = 6
    keeps the slope of z = -6; `slope` agrees with autodiff of `activate`."""
    z = jnp.array([-50.0, -6.0, 0.0, 0.5])
    heads = {"paper": IQFlowConfig(),
             "abs_tanh": IQFlowConfig(incentive_activation="abs_tanh"),
             "clip": IQFlowConfig(logit_bound=6.0, logit_bound_mode="clip")}
    slopes = {}
    for name, config in heads.items():
        mech = IQFlow(config, obs_shape=(3,), num_agents=2, num_actions=2, capacity=8)
        auto = jax.vmap(jax.grad(mech.activate))(z)
        slope, steepest = mech.slope(z)
        np.testing.assert_allclose(jnp.abs(auto), slope, rtol=1e-5, atol=1e-30)
        slopes[name] = (np.asarray(slope), steepest, np.asarray(mech.activate(z)))
    slope, steepest, paid = slopes["paper"]
    assert paid[0] < 1e-20 and slope[0] < 1e-20 and steepest == 0.5
    slope, steepest, paid = slopes["abs_tanh"]
    assert paid[2] == 0.0 and slope[2] == 2.0 == steepest
    slope, _, paid = slopes["clip"]
    np.testing.assert_allclose(slope[0], slope[1], rtol=1e-6)  # clipped: z = -50 acts as -6
    np.testing.assert_allclose(paid[0], 2 * jax.nn.sigmoid(-6.0), rtol=1e-6)
    assert slope[0] > 4e-3


def _grad_norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree))))


def _draw_with_dilemma(mech, state, meta_gradient=None):
    """A train and validation batch with a dilemma row; `meta_gradient` (default: jitted
    here) is the mechanism's, compiled once rather than run op by op."""
    meta_gradient = meta_gradient or jax.jit(mech.meta_gradient)
    for draw in range(20):
        rows = replay.sample_distinct_rows(jax.random.PRNGKey(draw), state.buffer.size, 12)
        train, validation = (replay.gather(state.buffer, rows[:6]),
                             replay.gather(state.buffer, rows[6:]))
        if float(meta_gradient(state, train, validation)[1]["dilemma_fraction"]) > 0:
            return train, validation
    raise AssertionError("no draw with a dilemma row")


def test_step_b_gradient_at_a_saturated_point_vanishes_only_for_the_paper_head():
    """Step B's d loss / d eta at a net planted at z ~ -50, on a draw with dilemma rows:
    ~0 with the paper's head; clearly non-zero with the clip and with the penalty; and
    the row-13 head, at the same (zero) incentive from its own mini init, has a
    gradient as large as a healthy sigmoid net's."""
    norms = {}
    for name, overrides in {"paper": {}, "clip": dict(logit_bound=6.0, logit_bound_mode="clip"),
                            "penalty": dict(logit_bound=6.0),
                            "abs_tanh": dict(incentive_activation="abs_tanh",
                                             incentive_output_scale=MINI_INIT_SCALE)}.items():
        mech, state = _tiny_mechanism(c1=0.0, c2=0.0, **overrides)
        if name != "abs_tanh":
            state = state.replace(eta=_plant(state.eta, -50.0))
        meta_gradient = jax.jit(mech.meta_gradient)
        train, validation = _draw_with_dilemma(mech, state, meta_gradient)
        _, terms, grad = meta_gradient(state, train, validation)
        norms[name] = _grad_norm(grad)
        if name == "penalty":
            assert float(terms["logit_penalty"]) > 40 ** 2 * 0.9
    mech, healthy = _tiny_mechanism(c1=0.0, c2=0.0)
    meta_gradient = jax.jit(mech.meta_gradient)
    train, validation = _draw_with_dilemma(mech, healthy, meta_gradient)
    reference = _grad_norm(meta_gradient(healthy, train, validation)[2])
    assert norms["paper"] < 1e-12 * reference
    assert norms["clip"] > 1e-4 * reference
    assert norms["penalty"] > reference
    assert norms["abs_tanh"] > 1e-2 * reference


def test_logit_penalty_hand_worked_and_its_gradient_against_finite_differences():
    with jax.enable_x64(True):
        mech, state = _tiny_mechanism(logit_bound=0.05)
        state = jax.tree.map(
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state)
        meta_gradient = jax.jit(mech.meta_gradient)
        train, validation = _draw_with_dilemma(mech, state, meta_gradient)
        z = [np.asarray(mech.logits(state.eta, b.obs, b.action)) for b in (train, validation)]
        by_hand = np.mean([np.mean(np.maximum(np.abs(x) - 0.05, 0) ** 2) for x in z])
        assert by_hand > 0
        np.testing.assert_allclose(mech.logit_penalty(state.eta, train, validation), by_hand,
                                   rtol=1e-12)
        loss, terms, grad = meta_gradient(state, train, validation)
        np.testing.assert_allclose(loss, terms["meta"] + 0.3 * terms["cost1"]
                                   + 0.2 * terms["cost2"] + 1.0 * by_hand, rtol=1e-12)
        assert_step_b_gradient_matches_finite_differences(mech, state, train, validation, grad)


def test_a_larger_eps_damps_the_step_of_a_vanishing_gradient():
    """RMSprop's step g / sqrt(nu + eps) keeps a tiny gradient's step near full size
    while nu >> eps; with eps above g^2 the step shrinks with g (Adam: eps outside the
    root, the same once sqrt(nu) < eps)."""
    grad = {"w": jnp.full((3,), 1e-5)}
    steps = {}
    for optimizer in ("rmsprop", "adam"):
        for eps in (1e-12, 1e-4):
            config = IQFlowConfig(incentive_optimizer=optimizer, incentive_eps=eps)
            mech = IQFlow(config, obs_shape=(3,), num_agents=2, num_actions=2, capacity=8)
            opt = mech.eta_optimizer
            update, _ = opt.update(grad, opt.init(grad), grad)
            steps[optimizer, eps] = float(jnp.abs(update["w"]).max())
    lr = IQFlowConfig().lr_incentive
    assert steps["rmsprop", 1e-12] > 1.0 * lr  # 1e-5 / sqrt(0.1 * 1e-10): ~3 lr
    assert steps["rmsprop", 1e-4] < 1e-2 * lr
    assert steps["adam", 1e-12] > 0.9 * lr and steps["adam", 1e-4] < 0.1 * lr


def test_own_action_incentive_ignores_the_others_actions():
    """incentive_input "own_action": agent i's incentive at (o, a) is output i of the
    net fed agent i's one-hot alone, so changing the others' actions changes nothing
    of it; "joint_action" (SPEC §3) reads them."""
    obs = jnp.repeat(jax.random.normal(jax.random.PRNGKey(1), (1, 3, 4)), 9, axis=0)
    action = jnp.array([[a, b, c] for a in range(3) for b in range(3) for c in (0,)])
    paid = {}
    for source in ("joint_action", "own_action"):
        mech = IQFlow(IQFlowConfig(incentive_input=source), obs_shape=(4,), num_agents=3,
                      num_actions=3, capacity=8)
        eta = mech.init(jax.random.PRNGKey(0)).eta
        paid[source] = np.asarray(mech.incentives(eta, obs, action)).reshape(3, 3, 3)
        # By hand: agent 1's output of the net fed only agent 1's one-hot.
        one_hot = jax.nn.one_hot(action, 3).at[:, [0, 2]].set(0.0).reshape(9, 9)
        by_hand = 2 * jax.nn.sigmoid(mech.eta_net.apply(eta, obs, one_hot)[:, 1])
        if source == "own_action":
            np.testing.assert_allclose(paid[source][..., 1].ravel(), by_hand, rtol=1e-6)
    own, joint = paid["own_action"], paid["joint_action"]  # [a0, a1, agent]
    np.testing.assert_allclose(own[:, :, 0], own[:, :1, 0].repeat(3, 1), rtol=1e-6)  # a1 moot
    np.testing.assert_allclose(own[:, :, 1], own[:1, :, 1].repeat(3, 0), rtol=1e-6)  # a0 moot
    assert np.ptp(joint[:, :, 0], axis=1).max() > 1e-3  # the joint form reads a1


def test_meta_actions_redraw_only_the_validation_rows_joint_actions():
    """meta_actions "replay" (SPEC §3) draws step B's rows exactly as before; "both"
    scores the validation rows as played and again with each joint action redrawn
    uniformly (observations, rewards and the train rows untouched); "uniform" is the
    redrawn half alone."""
    key = jax.random.PRNGKey(7)
    rows = {}
    for where in ("replay", "uniform", "both"):
        mech, state = _tiny_mechanism(num_transitions=60, meta_actions=where)
        rows[where] = mech.step_b_rows(state, key)
    batch = mech.config.batch_size
    drawn = replay.sample_distinct_rows(key, state.buffer.size, 2 * batch)
    for got, want in zip(rows["replay"], (drawn[:batch], drawn[batch:]), strict=True):
        jax.tree.map(np.testing.assert_array_equal, got, replay.gather(state.buffer, want))

    (train_u, val_u), (train_b, val_b) = rows["uniform"], rows["both"]
    jax.tree.map(np.testing.assert_array_equal, train_u, train_b)
    played, redrawn = (jax.tree.map(lambda x, s=s: x[s], val_b)
                       for s in (slice(None, batch), slice(batch, None)))
    jax.tree.map(np.testing.assert_array_equal, redrawn, val_u)
    for name in ("obs", "reward", "next_obs", "done"):
        np.testing.assert_array_equal(getattr(played, name), getattr(redrawn, name))
    # The played half is rows of the buffer, with their stored joint actions.
    stored = replay.gather(state.buffer, jnp.arange(60))
    for row in range(batch):
        match = np.flatnonzero(np.all(np.asarray(stored.obs) == np.asarray(played.obs[row]),
                                      axis=(1, 2)))
        assert len(match) == 1
        np.testing.assert_array_equal(stored.action[match[0]], played.action[row])
    assert not np.array_equal(played.action, redrawn.action)
    assert set(np.unique(np.asarray(redrawn.action))) == {0, 1}
    assert redrawn.action.dtype == played.action.dtype

    # Step B and the diagnostics run on the doubled validation batch, compiled.
    mech, state = _tiny_mechanism(num_transitions=60, meta_actions="both", logit_bound=1.0)
    loss, terms, grad = jax.jit(mech.meta_gradient)(state, *mech.step_b_rows(state, key))
    assert np.isfinite(float(loss)) and float(terms["logit_penalty"]) >= 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grad))
    assert _grad_norm(grad) > 0
    diag = jax.jit(mech.diagnostics)(state, key)
    assert diag["diag/logit_mean"].shape == (2,) and np.isfinite(float(diag["diag/grad_total"]))
    new_state, metrics = jax.jit(mech.update_incentive)(state, key)
    assert float(metrics["meta/active"]) == 1.0
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new_state.eta), jax.tree.leaves(state.eta), strict=True))


def test_meta_actions_and_margin_refused_before_compiling_when_they_cannot_work():
    base = matrix_game("ipd", "iqflow")
    for field, value, message in (("meta_actions", "others", "meta_actions must be one of"),
                                  ("meta_margin", -1.0, "meta_margin must be"),
                                  ("meta_margin", float("nan"), "meta_margin must be"),
                                  ("meta_margin", float("inf"), "meta_margin must be"),
                                  ("coop_expectile", 1.0, "coop_expectile must be"),
                                  ("coop_expectile", 0.0, "coop_expectile must be"),
                                  ("coop_expectile", float("nan"), "coop_expectile must be"),
                                  ("coop_gamma", -0.5, "coop_gamma must be"),
                                  ("coop_gamma", 1.5, "coop_gamma must be")):
        with pytest.raises(ValueError, match=message):
            validate(base.replace(mechanism=dataclasses.replace(base.mechanism,
                                                                **{field: value})))
    validate(base.replace(mechanism=dataclasses.replace(base.mechanism, coop_expectile=0.99)))
    validate(base.replace(mechanism=dataclasses.replace(base.mechanism, meta_margin=1.0,
                                                        meta_actions="both")))


# --- the variant and the flags -------------------------------------------------------------

def test_the_robust_variant_changes_iqflow_only_and_is_refused_elsewhere():
    from benchmarks import escape_room as er_bench
    from benchmarks import matrix_games

    base = matrix_game("ipd", "iqflow")
    robust = with_variant(base, "robust")
    assert robust.variant == "robust" and base.variant == "none"
    assert robust.mechanism.logit_bound == 5.0 and robust.mechanism.logit_bound_mode == "penalty"
    assert robust.mechanism.incentive_input == "own_action"
    validate(robust)
    none = matrix_game("ipd", "none")
    assert with_variant(none, "robust") == none  # no IQ-Flow, nothing changed, label "none"
    with pytest.raises(ValueError, match="unknown variant 'sturdy'"):
        with_variant(base, "sturdy")
    id_config = escape_room(5, 2, "id")
    assert isinstance(id_config.mechanism, IDConfig)
    with pytest.raises(ValueError, match="changes IQ-Flow"):
        validate(id_config.replace(variant="robust"))
    with pytest.raises(ValueError, match="incentive_activation must be one of"):
        validate(base.replace(mechanism=dataclasses.replace(base.mechanism,
                                                            incentive_activation="relu")))
    with pytest.raises(ValueError, match="logit_bound must be a finite number"):
        validate(base.replace(mechanism=dataclasses.replace(base.mechanism, logit_bound=-1.0)))
    assert not isinstance(none.mechanism, IQFlowConfig)
    assert isinstance(none.mechanism, NoMechanismConfig)

    # In the benchmarks: flags apply to IQ-Flow runs only, refused before compiling.
    args = matrix_games.Args(game="ipd", alg="iqflow", seeds=2, episodes=60, logit_bound=5.0,
                             variant="robust")
    config = matrix_games.make_config(args, "ipd", "iqflow")
    assert config.variant == "robust" and config.mechanism.logit_bound == 5.0
    assert matrix_games.make_config(dataclasses.replace(args, logit_bound=0.0), "ipd",
                                    "iqflow").mechanism.logit_bound is None
    with pytest.raises(ValueError, match="--variant robust changes IQ-Flow only"):
        matrix_games.main(matrix_games.Args(game="ipd", alg="none", variant="robust"))
    with pytest.raises(ValueError, match="--logit-bound does not apply"):
        matrix_games.main(matrix_games.Args(game="ipd", alg="none", logit_bound=5.0))
    assert matrix_games.make_config(dataclasses.replace(args, coop_expectile=0.95), "ipd",
                                    "iqflow").mechanism.coop_expectile == 0.95
    with pytest.raises(ValueError, match="--coop-expectile does not apply"):
        er_bench.main(er_bench.Args(alg="pg", coop_expectile=0.95, seeds=2))
    with pytest.raises(ValueError, match="--incentive-optimizer does not apply"):
        er_bench.main(er_bench.Args(alg="id", incentive_optimizer="adam", seeds=2))


@pytest.mark.heavy
@pytest.mark.timeout(400)
def test_incentive_health_benchmark_reports_every_seed(tmp_path, capsys):
    """The diagnosis benchmark end to end on a short IPD run: one health verdict per
    seed, every diagnostic curve per evaluation, the table's last line."""
    from benchmarks import incentive_health

    out = tmp_path / "health.json"
    payload = incentive_health.main(incentive_health.Args(
        env="ipd", seeds=2, episodes=90, out=str(out), wandb_mode="disabled", progress=False))
    assert json.loads(out.read_text())["seeds"] == payload["seeds"] == [0, 1]
    assert len(payload["healthy"]) == 2 and payload["episodes"] == 90
    assert payload["healthy_fraction"] == sum(payload["healthy"]) / 2
    curves = payload["curves_at_evals"]
    assert curves["episodes"] == [90]  # the run's last chunk is evaluated
    for name in ("slope", "logit_mean", "grad_meta", "dilemma", "eps_floor_fraction"):
        assert np.asarray(curves[name]).shape[:2] == (1, 2), name
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("healthy fraction: ")
    with pytest.raises(ValueError, match="one recipe per run"):
        incentive_health.main(incentive_health.Args(recipe=("paper", "authors")))
