"""ID against learners it cannot model (issue 19): refused unless asked for by name
(`IDConfig.agent_model = "pg_step"`), then one SGD step of REINFORCE on the policy each
learner declares (PPO's actor, a softmax over a DQN's Q), and exactly ID's own model
where the learner is the policy-gradient agent it models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import DQNConfig, PPOConfig
from jaxsim.config import IDConfig, PGConfig, escape_room, validate
from jaxsim.runner import run
from jaxsim.train import Experiment, seed_keys

TINY = dict(episodes=20, chunk_episodes=10, eval_period=10, num_seeds=2)
PG_STEP = IDConfig(incentive_hidden=(5,), output_scale=1.0, agent_model="pg_step")


@pytest.mark.parametrize("agent", [PPOConfig(), DQNConfig()], ids=["ppo", "dqn"])
def test_id_refuses_a_learner_it_cannot_model_and_names_the_flag(agent):
    with pytest.raises(ValueError, match=r"declare no such step.*agent_model='pg_step'"):
        validate(escape_room(3, 1, "id").replace(agent=agent))
    validate(escape_room(3, 1, "id", mechanism=PG_STEP).replace(agent=agent))
    with pytest.raises(ValueError, match="agent_model must be one of"):
        validate(escape_room(3, 1, "id", mechanism=dataclasses.replace(
            PG_STEP, agent_model="exact")).replace(agent=agent))


def _relearned(config, agent_model: str):
    """ID's re-learned parameters on one episode, with the model named."""
    config = config.replace(mechanism=dataclasses.replace(config.mechanism,
                                                          agent_model=agent_model))
    exp = Experiment(config)
    state = jax.jit(exp.init)(seed_keys(config)[0])
    from jaxsim.rollout import rollout

    traj = jax.jit(lambda key: rollout(exp.env, exp.agent, exp.mechanism, state.agents.params,
                                       state.mechanism, key))(jax.random.PRNGKey(4))
    return jax.jit(exp.mechanism.relearned_params)(state.mechanism.eta, state.agents, traj)


def test_pg_step_is_ids_own_model_for_the_policy_gradient_agents_it_models():
    """For PG agents taking the reward-to-go step without entropy at ID's gamma, the
    REINFORCE step of 'pg_step' is the agents' own declared step: the same parameters."""
    config = escape_room(3, 1, "id", agent=PGConfig(hidden=(6,), lr=0.05, entropy_coef=0.0,
                                                    gamma=0.99),
                         mechanism=dataclasses.replace(PG_STEP, gamma=0.99), **TINY)
    own, modelled = _relearned(config, "own"), _relearned(config, "pg_step")
    for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(modelled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    exp = Experiment(config)  # and the step moved them: not a vacuous zero step
    start = jax.jit(exp.init)(seed_keys(config)[0]).agents.params
    assert any(not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(start), jax.tree.leaves(modelled), strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(own), jax.tree.leaves(_relearned(config.replace(
            agent=dataclasses.replace(config.agent, entropy_coef=0.5)), "own")), strict=True))


def test_a_q_learner_is_modelled_by_the_softmax_over_its_q_values():
    config = escape_room(3, 1, "id", agent=DQNConfig(hidden=(8,)), mechanism=PG_STEP, **TINY)
    exp = Experiment(config)
    state = exp.agent.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, *exp.agent.obs_shape))
    q = exp.agent.q_values(state.params["q"], obs)
    np.testing.assert_allclose(exp.agent.model_policy(state.params, obs).probs,
                               jax.nn.softmax(q), rtol=1e-6)
    assert exp.agent.model_lr == config.agent.lr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("agent", [PPOConfig(hidden=(8,), num_minibatches=1),
                                   DQNConfig(hidden=(8,), buffer_size=64, batch_size=8,
                                             learning_starts=8, train_interval=2)],
                         ids=["ppo", "dqn"])
def test_id_with_the_named_wrong_model_trains_and_says_so(agent, capfd):
    result = run(escape_room(3, 1, "id", mechanism=PG_STEP, **TINY).replace(agent=agent),
                 progress=False)
    err = capfd.readouterr().err
    assert "agent_model 'pg_step'" in err and "not as the update it really takes" in err
    assert np.isfinite(np.asarray(result.metrics["id/meta_loss"])).all()
    assert float(jnp.abs(result.metrics["id/meta_loss"]).max()) > 0
