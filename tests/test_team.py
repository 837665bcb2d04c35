"""Mixed teams (issue 19): agent i learns with its own learner, agents of one learner
are one vmapped group, and no agent ever reads another's parameters."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents as agents_lib
import envs_jax
from agents import DQNConfig, MixedConfig, PGConfig, PPOConfig, Team, agent_view
from jaxsim.checkpoint import config_from_json, config_json
from jaxsim.config import escape_room, matrix_game, validate
from jaxsim.rollout import rollout
from jaxsim.train import Experiment
from jaxsim.checkpoint import _config_differences
from mechanism import make as make_mechanism
from mechanism.id import IDConfig, IncentiveDesigner
from mechanism.none import NoMechanismConfig

PG = PGConfig(hidden=(8,))
PPO = PPOConfig(hidden=(8,), num_minibatches=1, update_epochs=2)
DQN = DQNConfig(hidden=(8,), buffer_size=64, batch_size=8, learning_starts=8, train_interval=2,
                target_update_period=4)


def room():
    return envs_jax.make("escape_room", n_agents=3, n_required=1)


def episode(env, team, params, key):
    mech = make_mechanism(NoMechanismConfig(), env, None)
    return rollout(env, team, mech, params, mech.init(key), key)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_groups_follow_the_members_and_names_say_which():
    """Agents 0 and 2 share the PG group (one vmap), agent 1 is PPO's; the team's
    layout keeps agent order for everything stacked over all agents."""
    config = MixedConfig(members=(PG, PPO, PG))
    assert config.groups() == [(PG, (0, 2)), (PPO, (1,))]
    team = Team.from_config(config, room())
    assert team.names == ("pg", "ppo") and team.agents == ((0, 2), (1,))
    x = jnp.arange(3 * 2).reshape(3, 2)
    parts = team.split(x)
    np.testing.assert_array_equal(parts[0], x[np.array([0, 2])])
    np.testing.assert_array_equal(team.join(parts), x)
    assert MixedConfig.of("pg", "ppo").members == (PGConfig(), PPOConfig())
    with pytest.raises(ValueError, match="unknown learner 'sarsa'"):
        MixedConfig.of("pg", "sarsa")


def test_one_learner_team_is_the_stacked_state_the_engine_always_had():
    env = room()
    agent = agents_lib.make(PG, env)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    team = Team.uniform(agent, 3)
    for a, b in zip(leaves(team.init(keys)), leaves(jax.vmap(agent.init)(keys)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert team.only is agent
    with pytest.raises(ValueError, match="no single learner"):
        _ = Team.from_config(MixedConfig(members=(PG, PPO, PG)), env).only


@pytest.mark.timeout(120)
def test_each_agent_acts_with_its_own_learner():
    """The team's actions are, agent by agent, what that agent's learner picks from
    its own parameters, observation and key."""
    env = room()
    team = Team.from_config(MixedConfig(members=(PG, DQN, PG)), env)  # agents 0, 2: one vmap
    state = team.init(jax.random.split(jax.random.PRNGKey(1), 3))
    _, first = env.reset(jax.random.PRNGKey(2))
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    actions = team.act(team.params(state), first.observation, keys)
    for group, (learner, agents) in enumerate(zip(team.learners, team.agents, strict=True)):
        params = team.groups_of(team.params(state))[group]
        for slot, i in enumerate(agents):
            own = jax.tree.map(lambda x, slot=slot: x[slot], params)
            assert int(actions[i]) == int(learner.act(own, first.observation[i], keys[i]))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("members", [(PG, PPO, DQN), (PG, PG, PPO)],
                         ids=["another learner", "one vmap"])
def test_a_changed_parameter_of_agent_1_leaves_agent_0s_update_unchanged(members):
    """Agent 1's parameters (another learner's, or agent 0's groupmate's in one vmap)
    moved by a large amount: agent 0's new state is the same, bit for bit, and agent
    1's is not. The trajectory is held fixed, so only reading agent 1's parameters
    could change agent 0's update."""
    env = room()
    config = MixedConfig(members=members)
    team = Team.from_config(config, env)
    state = team.init(jax.random.split(jax.random.PRNGKey(0), 3))
    traj = episode(env, team, team.params(state), jax.random.PRNGKey(5))
    view = agent_view(traj)

    group_1 = next(g for g, agents in enumerate(team.agents) if 1 in agents)
    slot_1 = team.agents[group_1].index(1)
    groups = list(team.groups_of(state))
    groups[group_1] = groups[group_1].replace(params=jax.tree.map(
        lambda p: p.at[slot_1].add(3.0), groups[group_1].params))
    changed = team.pack(groups)

    update = jax.jit(team.update)
    new, _ = update(state, view)
    new_changed, _ = update(changed, view)

    def agent(tree, i):
        g = next(g for g, agents in enumerate(team.agents) if i in agents)
        slot = team.agents[g].index(i)
        return leaves(jax.tree.map(lambda x: x[slot], team.groups_of(tree)[g]))

    for a, b in zip(agent(new, 0), agent(new_changed, 0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(agent(new, 1), agent(new_changed, 1), strict=True))


def test_a_mixed_team_is_checked_before_compiling():
    base = escape_room(3, 1, "none", episodes=20, chunk_episodes=10, eval_period=10)
    with pytest.raises(ValueError, match="one learner per agent: escape_room has 3 agents, "
                                         "the team 2"):
        validate(base.replace(agent=MixedConfig(members=(PG, PPO))))
    with pytest.raises(ValueError, match="agent.hidden"):
        validate(base.replace(agent=MixedConfig(members=(PG, PPO, PPOConfig(hidden=(0,))))))
    with pytest.raises(ValueError, match="members are learners, not teams"):
        validate(base.replace(agent=MixedConfig(members=(PG, PPO, MixedConfig(members=(PG,))))))


def test_id_refuses_a_team_with_a_learner_it_cannot_model():
    """ID with PG and PPO agents: refused, naming PPO, without agent_model 'pg_step';
    accepted with it; a team of learners it models (PG only) needs no flag."""
    base = escape_room(3, 1, "id", episodes=20, chunk_episodes=10, eval_period=10)
    mixed = base.replace(agent=MixedConfig(members=(PG, PPO, PG)))
    with pytest.raises(ValueError, match="PPOConfig agents declare no such step") as error:
        validate(mixed)
    assert "agent_model='pg_step'" in str(error.value)
    flagged = mixed.replace(mechanism=dataclasses.replace(mixed.mechanism, agent_model="pg_step"))
    validate(flagged)
    assert "PGAgent and PPOAgent" in Experiment(flagged).mechanism.describe()
    validate(base.replace(agent=MixedConfig(members=(PG, PGConfig(hidden=(4,)), PG))))


def test_a_mixed_config_survives_its_checkpoint_json():
    config = matrix_game("ipd", "none").replace(agent=MixedConfig(members=(PG, DQN)))
    saved = config_json(config)
    assert [m["type"] for m in saved["agent"]["members"]] == ["PGConfig", "DQNConfig"]
    assert config_from_json(saved) == config
    assert config_from_json(config_json(matrix_game("ipd"))) == matrix_game("ipd")


@pytest.mark.timeout(180)
def test_each_agent_of_a_team_updates_as_its_learner_alone():
    """Agents 0 and 2 (one PG vmap) and agent 1 (PPO): each agent's new state is its
    learner's update of its own state on its own trajectory, computed alone (up to a
    batched matmul's rounding), so no agent is handed another's data."""
    env = room()
    team = Team.from_config(MixedConfig(members=(PG, PPO, PG)), env)
    state = team.init(jax.random.split(jax.random.PRNGKey(0), 3))
    view = agent_view(episode(env, team, team.params(state), jax.random.PRNGKey(4)))
    new, metrics = jax.jit(team.update)(state, view)
    assert set(metrics) >= {"pg/entropy/0", "pg/entropy/2", "ppo/value_loss/1"}
    for g, (learner, agents) in enumerate(zip(team.learners, team.agents, strict=True)):
        for slot, i in enumerate(agents):
            mine = lambda tree, slot=slot: jax.tree.map(lambda x: x[slot], tree)  # noqa: E731
            own = jax.tree.map(lambda x, i=i: x[i], view)
            alone, _ = jax.jit(learner.update)(mine(team.groups_of(state)[g]), own)
            for a, b in zip(leaves(alone), leaves(mine(team.groups_of(new)[g])), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"agent {i}")


@pytest.mark.timeout(180)
def test_id_over_several_groups_is_id_over_one():
    """The same PG learner split into groups (agents 0 and 2, agent 1): ID's
    meta-gradient through the rebuilt updates is the one-group team's."""
    env = room()
    agent = agents_lib.make(PG, env)
    one, two = Team.uniform(agent, 3), Team([agent, agent], [(0, 2), (1,)])
    agents_one = one.init(jax.random.split(jax.random.PRNGKey(0), 3))
    agents_two = two.pack(two.split(agents_one))
    played, scored = (episode(env, one, one.params(agents_one), jax.random.PRNGKey(k))
                      for k in (1, 2))
    grads = []
    for team, agents in ((one, agents_one), (two, agents_two)):
        mech = IncentiveDesigner(IDConfig(), env, team)
        state = mech.init(jax.random.PRNGKey(3)).replace(prev_agents=agents, prev_traj=played,
                                                         has_prev=jnp.asarray(True))
        grads.append(jax.jit(jax.grad(mech.outer_loss))(state.eta, state, scored))
    assert any(np.abs(g).max() > 0 for g in leaves(grads[0]))
    for a, b in zip(leaves(grads[0]), leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_mixed_checkpoint_reads_a_member_field_added_since_as_its_default():
    config = matrix_game("ipd", "none").replace(agent=MixedConfig(members=(PG, PPO)))
    saved = config_json(config)
    del saved["agent"]["members"][1]["vf_coef"]  # a field PPOConfig gained after the save
    assert _config_differences(saved, config_json(config), config) == []
    changed = config_json(config.replace(agent=MixedConfig(members=(PG, PPO.__class__(lr=1.0)))))
    assert _config_differences(changed, config_json(config), config)
