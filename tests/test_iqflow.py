"""IQ-Flow's parts on hand-worked numbers, and step B's meta-gradient against finite
differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.buffer import sample_distinct_rows_one_by_one
from jaxsim.config import IQFlowConfig
from mechanism import replay
from mechanism.iqflow import IQFlow
from mechanism.iqflow.critics import IQLCritic, expectile_loss, others_actions
from mechanism.iqflow.meta import meta_loss_terms
from tests.gradcheck import assert_directional_derivatives


def test_expectile_loss_hand_worked():
    u = jnp.array([1.0, -2.0, 0.5, 0.0])
    # tau = 0.85: 0.85*1 + 0.15*4 + 0.85*0.25 + 0 = 1.6625, mean over 4.
    np.testing.assert_allclose(expectile_loss(u, 0.85), 1.6625 / 4, rtol=1e-6)
    np.testing.assert_allclose(expectile_loss(u, 0.5), 0.5 * (1 + 4 + 0.25) / 4, rtol=1e-6)


class TableCritic(IQLCritic):
    """A critic whose 'parameters' are its outputs, so losses can be worked by hand."""

    def q_values(self, q_params, obs, action):
        return q_params  # [B, N, A]

    def values(self, v_params, obs):
        return v_params[obs[:, 0, 0].astype(int)]  # V looked up by a state id in obs


def _critic(expectile=0.85, gamma=0.5):
    return TableCritic(hidden=(), num_agents=2, num_actions=2, obs_shape=(1,), v_outputs=2,
                       optimizer=optax.sgd(1.0), expectile=expectile, gamma=gamma, polyak=0.5)


def _batch(done):
    # Two transitions: state ids 0 -> 1 and 1 -> 2; agents' actions (0, 1) and (1, 1).
    obs = jnp.array([[[0.0], [0.0]], [[1.0], [1.0]]])
    next_obs = jnp.array([[[1.0], [1.0]], [[2.0], [2.0]]])
    return replay.Transition(obs=obs, action=jnp.array([[0, 1], [1, 1]]),
                             reward=jnp.array([[1.0, 0.0], [2.0, -1.0]]),
                             next_obs=next_obs, done=jnp.array(done))


def test_iql_q_loss_hand_worked():
    critic = _critic(gamma=0.5)
    v = jnp.array([[0.0, 0.0], [4.0, 2.0], [10.0, 10.0]])  # V_i(state id)
    batch = _batch(done=[0.0, 1.0])
    target = critic.td_target(v, batch, batch.reward)
    # Row 0: r + 0.5 V(s'=1) = (1 + 2, 0 + 1); row 1 is terminal: r only.
    np.testing.assert_allclose(target, [[3.0, 1.0], [2.0, -1.0]])
    q = jnp.array([[[2.0, 9.0], [9.0, 1.5]], [[9.0, 0.0], [9.0, -3.0]]])
    # Q at the data actions: row 0 (a0=0, a1=1) -> (2, 1.5); row 1 (1, 1) -> (0, -3).
    # Errors: (1, -0.5, 2, 2) -> mean of squares (1 + 0.25 + 4 + 4) / 4.
    np.testing.assert_allclose(critic.q_loss(q, batch, target), 9.25 / 4, rtol=1e-6)


def test_iql_value_loss_hand_worked():
    critic = _critic(expectile=0.85)
    batch = _batch(done=[0.0, 0.0])
    v = jnp.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    q_target = jnp.array([[[2.0, 9.0], [9.0, 0.0]], [[9.0, 0.5], [9.0, -1.0]]])
    # u = Qtarget(s, a) - V(s): row 0: (2 - 1, 0 - 1) = (1, -1); row 1: (0.5, -1).
    # weights 0.85, 0.15, 0.85, 0.15 -> (0.85 + 0.15 + 0.2125 + 0.15) / 4.
    np.testing.assert_allclose(critic.value_loss(v, q_target, batch), 1.3625 / 4, rtol=1e-6)


def test_q_heads_see_others_actions_only():
    x = others_actions(jnp.array([[1, 0]]), num_actions=2)
    assert x.shape == (1, 2, 4)
    np.testing.assert_array_equal(x[0, 0], [0, 0, 1, 0])  # own slot 0 zeroed
    np.testing.assert_array_equal(x[0, 1], [0, 1, 0, 0])  # sees agent 0 chose 1
    # Each head's Q depends on the others' actions and never on its own.
    critic = IQLCritic(hidden=(8,), num_agents=2, num_actions=2, obs_shape=(3,), v_outputs=2,
                       optimizer=optax.sgd(0.1), expectile=0.85, gamma=0.9, polyak=0.1)
    state = critic.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 3))
    q = lambda a0, a1: critic.q_values(state.q, obs, jnp.array([[a0, a1]]))[0]
    np.testing.assert_array_equal(q(0, 1)[0], q(1, 1)[0])  # head 0 ignores a0
    np.testing.assert_array_equal(q(1, 0)[1], q(1, 1)[1])  # head 1 ignores a1
    assert not np.allclose(q(0, 0)[0], q(0, 1)[0])  # and reads a1


def test_meta_loss_masks_hand_worked():
    # B = 1, N = 2, A = 2.
    q_coop = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # a_coop = (0, 1)
    q_env = jnp.array([[[0.0, 1.0], [0.0, 1.0]]])  # a_env = (1, 1): agent 0 disagrees
    q_ind = jnp.array([[[0.0, 2.0], [-1.0, 3.0]]])  # a_b = (1, 1): agent 0 in dilemma
    terms = meta_loss_terms(q_ind, q_coop, q_env)
    # Eq. 5: only agent 0 counts: -log softmax([0, 2])[0] = log(1 + e^2); mean over B*N.
    np.testing.assert_allclose(terms["meta"], np.log1p(np.exp(2.0)) / 2, rtol=1e-6)
    # Eq. 6: agent 1 (a_env == a_coop): (|-1| + |3|) / (B*N*A = 4).
    np.testing.assert_allclose(terms["cost1"], 4.0 / 4, rtol=1e-6)
    # Eq. 7: agent 0 (a_env != a_coop): (|0| + |2|) / 4.
    np.testing.assert_allclose(terms["cost2"], 2.0 / 4, rtol=1e-6)
    assert float(terms["dilemma_fraction"]) == 0.5
    # No dilemma anywhere: the meta term vanishes.
    agree = meta_loss_terms(q_coop * 5, q_coop, q_env)
    assert float(agree["meta"]) == 0.0


def test_meta_margin_counts_rows_until_a_coop_leads_by_the_margin_hand_worked():
    # B = 1, N = 3, A = 3; a_coop = (0, 1, 2) for every agent's row.
    q_coop = jnp.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    q_env = q_coop
    # Q_ind(a_coop) leads the best other action by 0.5, 1.5 and -1.0.
    q_ind = jnp.array([[[2.0, 1.5, 0.0], [0.0, 3.0, 1.5], [0.0, 1.0, 0.0]]])
    log_p = np.log(np.asarray(jax.nn.softmax(q_ind, -1)))[0]
    coop = [log_p[0, 0], log_p[1, 1], log_p[2, 2]]
    for margin, rows in ((0.0, [2]), (1.0, [0, 2]), (2.0, [0, 1, 2]), (jnp.float32(1.0), [0, 2])):
        terms = meta_loss_terms(q_ind, q_coop, q_env, margin)
        np.testing.assert_allclose(terms["meta"], -sum(coop[i] for i in rows) / 3, rtol=1e-6)
        np.testing.assert_allclose(terms["dilemma_fraction"], len(rows) / 3, rtol=1e-6)
    # A traced margin of 0 (a sweep's point) counts the rows Eq. 5 counts, a tie where
    # argmax picks another action than a_coop (lead 0, yet a_b != a_coop) included.
    tie_ind, tie_coop = jnp.array([[[1.0, 1.0, 0.0]]]), jnp.array([[[0.0, 1.0, 0.0]]])
    for q_i, q_c in ((q_ind, q_coop), (tie_ind, tie_coop)):
        traced = jax.jit(lambda m, q_i=q_i, q_c=q_c: meta_loss_terms(q_i, q_c, q_c, m))(0.0)
        plain = meta_loss_terms(q_i, q_c, q_c)
        np.testing.assert_allclose(traced["meta"], plain["meta"], rtol=1e-6)
        assert float(traced["dilemma_fraction"]) == float(plain["dilemma_fraction"])
    assert float(meta_loss_terms(tie_ind, tie_coop, tie_coop)["dilemma_fraction"]) == 1.0
    # The mask is a label: the gradient is log softmax's on the counted rows alone.
    grad = jax.grad(lambda q: meta_loss_terms(q, q_coop, q_env, 1.0)["meta"])(q_ind)
    np.testing.assert_array_equal(grad[0, 1], np.zeros(3))
    np.testing.assert_allclose(grad[0, 0], (np.exp(log_p[0]) - [1, 0, 0]) / 3, rtol=1e-5)


def test_coop_expectile_and_gamma_set_the_team_critic_alone_hand_worked():
    """coop_expectile and coop_gamma (issue 16) are V_coop's expectile and Q_coop's
    discount; the other critics keep `expectile` and `gamma`, and None (the default,
    SPEC §3) is those for all three."""
    sizes = dict(obs_shape=(3,), num_agents=2, num_actions=2, capacity=64)
    plain = IQFlow(IQFlowConfig(), **sizes)
    critics = lambda m: (m.critic_coop, m.critic_env, m.critic_ind)  # noqa: E731
    assert {(c.expectile, c.gamma) for c in critics(plain)} == {(0.85, 0.99)}
    mech = IQFlow(IQFlowConfig(coop_expectile=0.99, coop_gamma=0.0), **sizes)
    assert [(c.expectile, c.gamma) for c in critics(mech)] == [(0.99, 0.0), (0.85, 0.99),
                                                                (0.85, 0.99)]
    # V_coop's loss reads 0.99: with V = 0 everywhere, u = Q_target at the data action;
    # a row with u = 2 and one with u = -1 weigh 0.99 * 4 and 0.01 * 1.
    state = mech.init(jax.random.PRNGKey(0))
    v_zero = jax.tree.map(jnp.zeros_like, state.coop.v)
    batch = replay.Transition(obs=jnp.zeros((2, 2, 3)), action=jnp.zeros((2, 2), jnp.int32),
                              reward=jnp.zeros((2, 2)), next_obs=jnp.zeros((2, 2, 3)),
                              done=jnp.zeros(2))
    q_data = jnp.array([[2.0, 2.0], [-1.0, -1.0]])  # [B, heads]
    critic = mech.critic_coop
    table = TableCritic(hidden=(), num_agents=2, num_actions=2, obs_shape=(3,), v_outputs=1,
                        optimizer=optax.sgd(1.0), expectile=critic.expectile,
                        gamma=critic.gamma, polyak=critic.polyak)
    table.values = lambda v_params, obs: jnp.zeros((obs.shape[0], 2))
    q_table = jnp.stack([q_data, q_data], -1)  # the same value at both own actions
    np.testing.assert_allclose(table.value_loss(v_zero, q_table, batch),
                               (0.99 * 4 * 2 + 0.01 * 1 * 2) / 4, rtol=1e-6)
    np.testing.assert_allclose(critic.value_loss(v_zero, state.coop.q_target, batch),
                               expectile_loss(critic.q_values(state.coop.q_target, batch.obs,
                                                              batch.action)[..., 0], 0.99),
                               rtol=1e-6)
    # coop_gamma 0: Q_coop's target is the team reward alone, whatever V_coop(s') is.
    team = jnp.array([[6.0, 6.0], [5.0, 5.0]])
    v_one = jax.tree.map(jnp.ones_like, state.coop.v)
    np.testing.assert_allclose(critic.td_target(v_one, batch, team), team)
    assert float(jnp.abs(plain.critic_coop.td_target(v_one, batch, team) - team).max()) > 0


@functools.lru_cache(maxsize=None)
def _tiny_mechanism(num_transitions=40, c1=0.3, c2=0.2, conv=False, **overrides):
    """conv: 4x4x2 image observations through Conv(2) networks (Cleanup's kind);
    overrides: other IQFlowConfig fields."""
    obs_shape = (4, 4, 2) if conv else (3,)
    config = IQFlowConfig(incentive_hidden=(4, 3) if conv else (4,), critic_hidden=(5,),
                          unroll_steps=3, batch_size=6, start_train=12, c1=c1, c2=c2,
                          lr_ind=3e-2, conv_filters=2 if conv else 0, **overrides)
    mech = IQFlow(config, obs_shape=obs_shape, num_agents=2, num_actions=2, capacity=64)
    key = jax.random.PRNGKey(3)
    state = mech.init(key)
    ks = jax.random.split(key, 5)
    items = replay.Transition(
        obs=jax.random.normal(ks[0], (num_transitions, 2, *obs_shape)),
        action=jax.random.randint(ks[1], (num_transitions, 2), 0, 2),
        reward=jax.random.normal(ks[2], (num_transitions, 2)),
        next_obs=jax.random.normal(ks[3], (num_transitions, 2, *obs_shape)),
        done=(jax.random.uniform(ks[4], (num_transitions,)) < 0.2).astype(jnp.float32),
    )
    state = state.replace(buffer=replay.add(state.buffer, items, jnp.ones(num_transitions)))
    # A few real critic steps, so the RMSprop statistics are not all zero.
    update = jax.jit(mech.update_critics)
    for i in range(3):
        batch = replay.sample_uniform(state.buffer, jax.random.PRNGKey(10 + i), 6)
        state, _ = update(state, batch)
    return mech, state


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_meta_gradient_matches_finite_differences(conv):
    """d L / d eta through K unrolled critic steps (second order included) equals a
    central finite difference of L along random directions, in float64, for the MLP
    networks and for the conv ones of Cleanup."""
    with jax.enable_x64(True):
        mech, state = _tiny_mechanism(conv=conv)
        state = jax.tree.map(
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state)
        for draw in range(10):  # a draw of batches where the meta term is active
            rows = replay.sample_distinct_rows(jax.random.PRNGKey(draw), state.buffer.size, 12)
            train = replay.gather(state.buffer, rows[:6])
            validation = replay.gather(state.buffer, rows[6:])
            loss, terms, grad = jax.jit(mech.meta_gradient)(state, train, validation)
            if float(terms["dilemma_fraction"]) > 0:
                break
        assert float(terms["dilemma_fraction"]) > 0
        assert_step_b_gradient_matches_finite_differences(mech, state, train, validation, grad)


def assert_step_b_gradient_matches_finite_differences(mech, state, train, validation, grad):
    """`grad`, step B's d loss / d eta at `state`, against central finite differences
    of the loss along random directions (call in float64)."""
    def loss_at(eta):
        return mech.meta_gradient(state.replace(eta=eta), train, validation)[0]

    flat_grad, unravel = jax.flatten_util.ravel_pytree(grad)
    flat_eta, _ = jax.flatten_util.ravel_pytree(state.eta)
    assert_directional_derivatives(jax.jit(loss_at), flat_grad, flat_eta, unravel)


def test_incentives_lie_strictly_between_zero_and_two():
    mech, state = _tiny_mechanism()
    obs = jax.random.normal(jax.random.PRNGKey(1), (512, 2, 3)) * 3
    action = jax.random.randint(jax.random.PRNGKey(2), (512, 2), 0, 2)
    r_inc = mech.incentives(state.eta, obs, action)
    assert r_inc.shape == (512, 2)
    assert float(r_inc.min()) > 0.0 and float(r_inc.max()) < 2.0
    single = mech.incentive(state, obs[0], action[0])
    np.testing.assert_allclose(single, r_inc[0], rtol=1e-6)


def test_step_b_waits_for_start_train():
    mech, ready_state = _tiny_mechanism(num_transitions=12)  # start_train = 12
    update = jax.jit(mech.update_incentive)
    early = ready_state.replace(buffer=ready_state.buffer.replace(size=jnp.asarray(11)))
    new_state, metrics = update(early, jax.random.PRNGKey(0))
    assert float(metrics["meta/active"]) == 0.0
    for a, b in zip(jax.tree.leaves(new_state.eta), jax.tree.leaves(early.eta), strict=True):
        np.testing.assert_array_equal(a, b)
    new_state, metrics = update(ready_state, jax.random.PRNGKey(0))
    assert float(metrics["meta/active"]) == 1.0
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(new_state.eta), jax.tree.leaves(ready_state.eta), strict=True)]
    assert any(changed)


@pytest.mark.parametrize("size", [5, 12, 200])
def test_distinct_rows(size):
    keys = jax.random.split(jax.random.PRNGKey(size), 50)
    draws = jax.vmap(lambda k: replay.sample_distinct_rows(k, jnp.asarray(size), 12))(keys)
    for rows in np.asarray(draws):
        assert len(set(rows.tolist())) == 12
        assert rows.min() >= 0 and rows.max() < max(size, 12)


@pytest.mark.parametrize("size,k", [(20, 4), (5, 12), (128, 128), (10**6, 256)])
def test_distinct_rows_drawn_at_once_are_those_drawn_one_by_one(size, k):
    """The candidates drawn in one call before the loop: the same rows, bit for bit, as
    drawing each inside the loop, for buffers smaller than, equal to and far larger
    than the batch (so every run's replay batches are unchanged)."""
    keys = jax.random.split(jax.random.PRNGKey(size + k), 40)
    now = jax.jit(jax.vmap(lambda key: replay.sample_distinct_rows(key, jnp.asarray(size), k)))
    before = jax.jit(jax.vmap(lambda key: sample_distinct_rows_one_by_one(
        key, jnp.asarray(size), k)))
    np.testing.assert_array_equal(now(keys), before(keys))


def test_distinct_rows_are_uniform():
    draws = jax.vmap(lambda k: replay.sample_distinct_rows(k, jnp.asarray(20), 4))(
        jax.random.split(jax.random.PRNGKey(0), 20000))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=20) / draws.size
    np.testing.assert_allclose(counts, 1 / 20, atol=0.004)
    first = np.bincount(np.asarray(draws[:, 0]), minlength=20) / draws.shape[0]
    np.testing.assert_allclose(first, 1 / 20, atol=0.008)  # the order is random too


def test_replay_add_masks_and_wraps():
    example = replay.Transition(obs=jnp.zeros((2, 1)), action=jnp.zeros((2,), jnp.int32),
                                reward=jnp.zeros((2,)), next_obs=jnp.zeros((2, 1)),
                                done=jnp.zeros(()))
    buf = replay.init(example, capacity=5)

    def items(start):
        rows = jnp.arange(start, start + 4, dtype=jnp.float32)
        return jax.tree.map(lambda x: jnp.broadcast_to(rows.reshape((4,) + (1,) * x.ndim),
                                                       (4,) + x.shape).astype(x.dtype), example)

    buf = replay.add(buf, items(0), jnp.array([1.0, 1.0, 1.0, 0.0]))  # rows 0, 1, 2
    assert int(buf.size) == 3 and int(buf.cursor) == 3
    buf = replay.add(buf, items(10), jnp.array([1.0, 1.0, 1.0, 1.0]))  # 10..13, wraps
    assert int(buf.size) == 5 and int(buf.cursor) == 2
    np.testing.assert_array_equal(buf.data.reward[:, 0], [12, 13, 2, 10, 11])
