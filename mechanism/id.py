"""The ID baseline: adaptive incentive design by an on-policy meta-gradient (SPEC §4).

Unlike IQ-Flow, ID reads the agents' parameters and assumes their learning rule (one
plain SGD step of the agent's `inner_loss` at its `inner_lr` per episode). After
episode k+1 it rebuilds each agent's update on episode k differentiably, with reward
r_env + r_inc(eta), from the agent state that generated episode k, and scores the
updated policies on episode k+1 by the discounted team return (ER) or by a
centralised critic's TD error on the team reward (Cleanup). The cost charges the
incentives paid in episode k+1 (L1, discounted over time): with its own Adam (ER)
and/or weighted inside the meta loss (Cleanup).

The other recipes' forms (SPEC §6 rows 4-8, §7) are config fields: the outer loss
weighted per step by gamma^t R_team,t; the cost on episode k; one incentive per action
shared by the agents, over the central state; a team critic with a Polyak target; the
rebuilt actor step with the agent's updated critic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import struct

import agents as agents_lib
from agents.ac import ACConfig
from agents.base import Trajectory, agent_view
from agents.networks import JointNet, joint_action_one_hot
from agents.pg import discounted_reward_to_go
from agents.team import Team
from envs_jax import checks
from mechanism.base import ReadsAgents, check_conv_layout


@dataclass(frozen=True)
class IDConfig:
    """The ID baseline (SPEC §4): an on-policy meta-gradient through each agent's own
    last SGD step. Defaults are the Escape Room values."""

    incentive_hidden: tuple[int, ...] = (64, 32)
    lr_meta: float = 7.93e-4  # Adam on the outer (team-return) loss
    lr_cost: float = 6.03e-5  # a separate Adam on the incentive cost
    gamma: float = 0.99
    incentive_max: float = 2.0  # r_inc = incentive_max * |tanh(.)|
    output_scale: float = 0.01  # orthogonal scale of the last layer: starts near zero
    conv_filters: int = 0  # as IQFlowConfig.conv_filters
    cost_weight: float = 0.0  # the cost's weight inside the meta loss (Cleanup: 1e-4)
    # What weights log pi in the outer loss: "return", the discounted team return-to-go
    # (ER), or "td_error", a centralised critic's TD error on the team reward (Cleanup),
    # the critic V(all observations) learning by TD(0) with Adam at lr_critic.
    # "per_step" (SPEC §6 row 4): each step's log pi weighted by gamma^t R_team,t,
    # that step's team reward alone, as the IQ-Flow authors' ID on ER.
    outer_weight: Literal["return", "td_error", "per_step"] = "return"
    critic_hidden: tuple[int, ...] = (64, 64)
    lr_critic: float = 2.4e-5
    # Which episode the cost charges (SPEC §6 row 5): "new", episode k+1 that the
    # outer loss scores (SPEC §4), or "rebuilt", episode k of the rebuilt inner step.
    cost_episode: Literal["new", "rebuilt"] = "new"
    # "agent": one incentive per agent (SPEC §4); "action" (SPEC §7): one per action,
    # shared by all agents, agent i receiving output[a_i], and the cost charged on
    # every output of every step, before the incentive_max scale, as the ID authors'.
    output_type: Literal["agent", "action"] = "agent"
    activation: Literal["abs_tanh", "sigmoid"] = "abs_tanh"  # r = max * act(.)
    init: Literal["orthogonal", "glorot"] = "orthogonal"  # glorot: no output bias (SPEC §7)
    # What the incentive net sees beside the joint action: "observations", every
    # agent's (SPEC §4), or "state", the environment's central state (SPEC §7: on ER
    # the one-hot position of every agent in id order).
    designer_input: Literal["observations", "state"] = "observations"
    # SPEC §6 row 8 (ID on Cleanup): None, the team critic bootstraps from itself;
    # a number, from a Polyak target moved by this much per step.
    critic_polyak: float | None = None
    critic_conv_filters: int | None = None  # None: conv_filters (row 8: 2 x 6)
    # The critic inside the rebuilt actor step (actor-critic agents): "before", that of
    # the agent state that played episode k (SPEC §4); "after", the agent's critic once
    # updated on episode k, the one its real actor step used (SPEC §6 row 8).
    inner_critic: Literal["before", "after"] = "before"
    # What ID assumes each agent's update is (beyond the paper, issue 19): "own", the
    # one plain SGD step the agent declares (`inner_loss` at `inner_lr`: PG and AC
    # agents, whose real update it is, as in the paper); "pg_step", one plain SGD step
    # of REINFORCE (reward-to-go at ID's gamma) on the policy the agent declares
    # (`model_policy`, at `model_lr`) - for learners ID cannot model (PPO, or DQN with
    # a softmax over Q as its policy), a knowingly wrong model, accepted only by name.
    agent_model: Literal["own", "pg_step"] = "own"


def check(mech: IDConfig, env, run) -> None:
    """Raise ValueError on an ID config that cannot work with `env` and `run`'s agents."""
    check_conv_layout(mech, env, run.env)
    checks.hidden_layers("mechanism.incentive_hidden", mech.incentive_hidden)
    checks.hidden_layers("mechanism.critic_hidden", mech.critic_hidden)
    for name in ("lr_meta", "incentive_max", "output_scale", "lr_critic"):
        checks.positive(f"mechanism.{name}", getattr(mech, name))
    checks.non_negative("mechanism.lr_cost", mech.lr_cost)
    checks.non_negative("mechanism.cost_weight", mech.cost_weight)
    checks.finite_in("mechanism.gamma", mech.gamma, 0, 1)
    checks.choice("mechanism.outer_weight", mech.outer_weight, ("return", "td_error", "per_step"))
    checks.choice("mechanism.cost_episode", mech.cost_episode, ("new", "rebuilt"))
    checks.choice("mechanism.output_type", mech.output_type, ("agent", "action"))
    checks.choice("mechanism.activation", mech.activation, ("abs_tanh", "sigmoid"))
    checks.choice("mechanism.init", mech.init, ("orthogonal", "glorot"))
    checks.choice("mechanism.designer_input", mech.designer_input, ("observations", "state"))
    checks.choice("mechanism.inner_critic", mech.inner_critic, ("before", "after"))
    if mech.critic_polyak is not None:
        checks.finite_in("mechanism.critic_polyak", mech.critic_polyak, 0, 1, low_open=True)
    if mech.critic_conv_filters is not None:
        checks.positive_int("mechanism.critic_conv_filters", mech.critic_conv_filters)
    checks.require(mech.designer_input == "observations" or env.has_central_state,
                   f"mechanism.designer_input 'state' needs an environment with a central "
                   f"state (escape_room); {run.env} has none: use 'observations'")
    checks.choice("mechanism.agent_model", mech.agent_model, ("own", "pg_step"))
    members = agents_lib.members(run.agent, env.num_agents)
    unmodelled = sorted({type(m).__name__ for m in members
                         if not hasattr(agents_lib.agent_class(m), "inner_loss")})
    checks.require(mech.agent_model == "pg_step" or not unmodelled,
                   f"the ID baseline models each agent's update as one plain SGD step of its "
                   f"policy-gradient loss; {', '.join(unmodelled)} agents declare no such "
                   "step (inner_loss, inner_lr): ID cannot model them. To run ID with a model "
                   "it knows to be wrong (one SGD step of REINFORCE on the agent's policy; "
                   "for Q-learners a softmax over Q), set mechanism.agent_model='pg_step'")
    checks.require(mech.inner_critic == "before"
                   or all(isinstance(m, ACConfig) for m in members),
                   "mechanism.inner_critic 'after' rebuilds an actor-critic step with its "
                   "updated critic; these agents have no critic: use 'before'")
    checks.require(mech.init == "orthogonal" or not mech.conv_filters,
                   "mechanism.init 'glorot' is the ID authors' MLP head; conv heads are "
                   "orthogonal: use 'orthogonal'")
    checks.require(mech.init == "orthogonal" or mech.output_scale == IDConfig.output_scale,
                   "mechanism.output_scale scales an orthogonal last layer; with init "
                   "'glorot' it would do nothing: leave it at its default")
    checks.require(mech.outer_weight == "td_error" or (mech.critic_polyak is None and
                                                       mech.critic_conv_filters is None),
                   "mechanism.critic_polyak and critic_conv_filters shape the team critic of "
                   "outer_weight 'td_error'; this config has none")
    checks.require(mech.critic_conv_filters is None or mech.conv_filters > 0,
                   "mechanism.critic_conv_filters needs image observations (conv_filters > 0)")


@struct.dataclass
class IDState:
    """prev_traj and prev_agents: the last episode and the agents' train states that
    generated it (stacked over agents); has_prev: False before the first episode;
    critic, critic_opt: the centralised team critic (None unless outer_weight is
    "td_error")."""

    eta: dict
    meta_opt: optax.OptState
    cost_opt: optax.OptState
    prev_traj: Trajectory
    prev_agents: object
    has_prev: jax.Array
    critic: dict | None = None
    critic_opt: optax.OptState | None = None


@struct.dataclass
class IDStateWithTarget(IDState):
    """IDState and the team critic's Polyak target (critic_polyak set, SPEC §6 row 8).
    A type of its own, so that the states of the other recipes keep the fields (and
    checkpoints) they had before."""

    critic_target: dict | None = None


class IncentiveDesigner(ReadsAgents):
    check_config = staticmethod(check)

    @classmethod
    def from_config(cls, config: IDConfig, env, run, agent=None) -> "IncentiveDesigner":
        del run
        return cls(config, env, agent)

    def __init__(self, config: IDConfig, env, agent):
        """agent: the team (agents.team.Team), or one learner for every agent."""
        team = agent if agent is None or isinstance(agent, Team) else Team.uniform(
            agent, env.num_agents)
        if team is None or (config.agent_model == "own" and not all(
                hasattr(learner, "inner_loss") for learner in team.learners)):
            raise ValueError("the ID baseline needs agents that declare the step it "
                             "models (`inner_loss`, `inner_lr`): PGAgent or ACAgent, or "
                             "agent_model 'pg_step'")
        self.config = config
        self.env = env
        self.team = team
        self.num_agents = env.num_agents
        self.num_actions = env.num_actions
        self.obs_shape = tuple(env.observation_spec.shape[1:])
        self.per_action = config.output_type == "action"
        self.eta_net = JointNet(hidden=tuple(config.incentive_hidden),
                                out=env.num_actions if self.per_action else env.num_agents,
                                conv_filters=config.conv_filters,
                                output_scale=config.output_scale, weight_init=config.init)
        self.meta_optimizer = optax.adam(config.lr_meta)
        self.cost_optimizer = optax.adam(config.lr_cost)
        self.uses_critic = config.outer_weight == "td_error"
        self.critic_net = JointNet(hidden=tuple(config.critic_hidden), out=1,
                                   conv_filters=config.critic_conv_filters or config.conv_filters)
        self.critic_optimizer = optax.adam(config.lr_critic)

    def describe(self) -> str | None:
        if self.config.agent_model == "own":
            return None
        kinds = list(dict.fromkeys(type(learner).__name__ for learner in self.team.learners))
        kinds = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
        return (f"ID models each {kinds} as one plain SGD step of "
                "REINFORCE on its declared policy (agent_model 'pg_step'), not as the "
                "update it really takes")

    def designer_view(self, obs: jax.Array) -> jax.Array:
        return self.env.central_state(obs) if self.config.designer_input == "state" else obs

    def outputs(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The net's squashed outputs in [0, 1): f32[B, N] (one per agent) or f32[B, A]
        (one per action, output_type "action"). It reads every observation, or the
        environment's central state (designer_input "state"), and the joint action."""
        logits = self.eta_net.apply(eta, self.designer_view(obs),
                                    joint_action_one_hot(action, self.num_actions))
        if self.config.activation == "sigmoid":
            return jax.nn.sigmoid(logits)
        return jnp.abs(jnp.tanh(logits))

    def incentives(self, eta, obs: jax.Array, action: jax.Array) -> jax.Array:
        """obs [B, N, *obs_shape], action i32[B, N] -> f32[B, N] in [0, incentive_max);
        the same function in the rollout and inside the differentiated update."""
        out = self.outputs(eta, obs, action)
        if self.per_action:  # agent i receives the output of its own action
            out = jnp.take_along_axis(out, action, axis=-1)
        return self.config.incentive_max * out

    def incentive(self, state: IDState, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.incentives(state.eta, obs[None], action[None])[0]

    def init(self, key: jax.Array) -> IDState:
        eta_key, agent_key = jax.random.split(key)
        example_obs = jnp.zeros((1, self.num_agents, *self.obs_shape))
        example_action = jnp.zeros((1, self.num_agents), jnp.int32)
        eta = self.eta_net.init(eta_key, self.designer_view(example_obs),
                                joint_action_one_hot(example_action, self.num_actions))
        agent_keys = jax.random.split(agent_key, self.num_agents)
        agents = jax.eval_shape(self.team.init, agent_keys)  # shapes only
        critic = critic_opt = None
        if self.uses_critic:
            critic = self.critic_net.init(jax.random.fold_in(key, 1), example_obs)
            critic_opt = self.critic_optimizer.init(critic)
        steps, n = self.env.max_steps, self.num_agents
        empty = Trajectory(
            obs=jnp.zeros((steps, n, *self.obs_shape)), action=jnp.zeros((steps, n), jnp.int32),
            reward=jnp.zeros((steps, n)), incentive=jnp.zeros((steps, n)),
            next_obs=jnp.zeros((steps, n, *self.obs_shape)), done=jnp.zeros((steps,)),
            mask=jnp.zeros((steps,)),
        )
        fields = {}
        state_type = IDState
        if self.uses_critic and self.config.critic_polyak is not None:
            state_type, fields = IDStateWithTarget, {"critic_target": critic}
        return state_type(eta=eta, meta_opt=self.meta_optimizer.init(eta),
                          cost_opt=self.cost_optimizer.init(eta), prev_traj=empty,
                          prev_agents=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                   agents),
                          has_prev=jnp.asarray(False), critic=critic, critic_opt=critic_opt,
                          **fields)

    def relearned_params(self, eta, prev_agents, prev: Trajectory, agent_state=None):
        """Each agent's SGD step on episode k with reward r_env + r_inc(eta), from the
        state that played episode k (with inner_critic "after", its critic replaced
        by the one the agent has after its update on episode k, `agent_state`'s)."""
        team = self.team
        if self.config.inner_critic == "after":
            prev_agents = team.pack([
                learner.with_critic_of(prev, updated) for learner, prev, updated
                in zip(team.learners, team.groups_of(prev_agents), team.groups_of(agent_state),
                       strict=True)])
        incentive = self.incentives(eta, prev.obs, prev.action) * prev.mask[:, None]
        own_step = self.config.agent_model == "own"

        def sgd_step(learner, agent_state, own):
            lr = learner.inner_lr if own_step else learner.model_lr
            inner_loss = learner.inner_loss if own_step else self.modelled_pg_loss(learner)
            grads = jax.grad(lambda p: inner_loss(agent_state, p, own))(agent_state.params)
            return jax.tree.map(lambda p, g: p - lr * g, agent_state.params, grads)

        view = agent_view(prev.replace(incentive=incentive))
        return team.pack(team.vmap(sgd_step, grouped=[prev_agents], stacked=[view]))

    def modelled_pg_loss(self, learner):
        """agent_model "pg_step": the REINFORCE loss ID assumes a learner it cannot model
        descends, -sum_t log pi(a_t | o_t) G_t on the learner's declared policy, G_t the
        discounted reward-to-go of r_env + r_inc at ID's gamma."""
        def loss(agent_state, params, own) -> jax.Array:
            del agent_state
            weights = discounted_reward_to_go(own.reward, own.mask, self.config.gamma)
            log_prob = learner.model_policy(params, own.obs).log_prob(own.action)
            return -jnp.sum(own.mask * log_prob * weights)
        return loss

    def policy(self, learner, params, obs: jax.Array):
        """The policy ID scores in its outer loss: the learner's own (agent_model "own")
        or the one it declares for modelling."""
        if self.config.agent_model == "own":
            return learner.policy(params, obs)
        return learner.model_policy(params, obs)

    def team_values(self, critic, obs: jax.Array) -> jax.Array:
        """The centralised critic's V(every observation): obs [T, N, ...] -> f32[T]."""
        return self.critic_net.apply(critic, obs)[:, 0]

    def team_td_error(self, critic, traj: Trajectory) -> jax.Array:
        """r_team + gamma (1 - d) V(s') - V(s) on every step: f32[T] (masked)."""
        team = traj.reward.sum(-1)
        next_v = self.team_values(critic, traj.next_obs)
        error = team + self.config.gamma * (1 - traj.done) * next_v - self.team_values(
            critic, traj.obs)
        return traj.mask * error

    def outer_weights(self, state: IDState, traj: Trajectory) -> jax.Array:
        """What weights log pi at each step of episode k+1: f32[T], constant."""
        if self.uses_critic:
            return jax.lax.stop_gradient(self.team_td_error(state.critic, traj))
        team = traj.reward.sum(-1)
        if self.config.outer_weight == "per_step":  # gamma^t R_team,t (SPEC §6 row 4)
            return traj.mask * self.config.gamma ** jnp.arange(team.shape[0]) * team
        return traj.mask * discounted_reward_to_go(team, traj.mask, self.config.gamma)

    def outer_loss(self, eta, state: IDState, traj: Trajectory, agent_state=None) -> jax.Array:
        """-sum_i sum_t log pi(a_it | o_it; theta_i') w_t, theta' the re-learned
        parameters and w the team's return-to-go, per-step reward or TD error in
        episode k+1."""
        params = self.relearned_params(eta, state.prev_agents, state.prev_traj, agent_state)
        view = agent_view(traj)
        log_prob = self.team.join(self.team.vmap(
            lambda learner, p, o, a: self.policy(learner, p, o).log_prob(a),
            grouped=[params], stacked=[view.obs, view.action]))  # [N, T]
        return -jnp.sum(log_prob * self.outer_weights(state, traj)[None])

    def update_critic(self, state: IDState, traj: Trajectory):
        """One TD(0) step of the centralised critic on the team reward (masked MSE)."""
        polyak = self.config.critic_polyak  # None: the critic bootstraps from itself

        def loss(critic):
            bootstrap = critic if polyak is None else state.critic_target
            target = jax.lax.stop_gradient(
                traj.reward.sum(-1) + self.config.gamma * (1 - traj.done)
                * self.team_values(bootstrap, traj.next_obs))
            error = traj.mask * (self.team_values(critic, traj.obs) - target)
            return jnp.sum(error**2) / jnp.maximum(traj.mask.sum(), 1.0)

        value, grads = jax.value_and_grad(loss)(state.critic)
        updates, critic_opt = self.critic_optimizer.update(grads, state.critic_opt)
        critic = optax.apply_updates(state.critic, updates)
        if polyak is not None:
            state = state.replace(critic_target=optax.incremental_update(
                critic, state.critic_target, polyak))
        return state.replace(critic=critic, critic_opt=critic_opt), value

    def cost(self, eta, traj: Trajectory) -> jax.Array:
        """L1 of the incentives paid in the episode, discounted over time; with one
        output per action, of every output at every step, unscaled (the ID authors')."""
        discount = self.config.gamma ** jnp.arange(traj.mask.shape[0])
        if self.per_action:
            paid = self.outputs(eta, traj.obs, traj.action).sum(-1)
        else:
            paid = jnp.abs(self.incentives(eta, traj.obs, traj.action)).sum(-1)
        return jnp.sum(discount * traj.mask * paid)

    def update(self, state: IDState, traj: Trajectory, key: jax.Array, *, agent_state):
        del key
        traj = traj.replace(compact=None, compact_next=None)  # kept as observations
        meta_loss, meta_grad = jax.value_and_grad(self.outer_loss)(state.eta, state, traj,
                                                                   agent_state)
        if self.config.cost_episode == "rebuilt":  # episode k (SPEC §6 row 5), once there
            cost, cost_grad = jax.value_and_grad(self.cost)(state.eta, state.prev_traj)
            cost, cost_grad = jax.tree.map(lambda g: g * state.has_prev, (cost, cost_grad))
        else:
            cost, cost_grad = jax.value_and_grad(self.cost)(state.eta, traj)
        meta_grad = jax.tree.map(lambda g: g * state.has_prev, meta_grad)
        weight = self.config.cost_weight  # the cost inside the meta loss (Cleanup)
        meta_grad = jax.tree.map(lambda m, c: m + weight * c, meta_grad, cost_grad)
        meta_updates, meta_opt = self.meta_optimizer.update(meta_grad, state.meta_opt)
        cost_updates, cost_opt = self.cost_optimizer.update(cost_grad, state.cost_opt)
        eta = optax.apply_updates(optax.apply_updates(state.eta, meta_updates), cost_updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(state.has_prev, n, o),
                                             new, old)
        if self.config.cost_episode == "rebuilt":
            cost_opt = keep(cost_opt, state.cost_opt)
        new_state = state.replace(eta=eta, meta_opt=keep(meta_opt, state.meta_opt),
                                  cost_opt=cost_opt, prev_traj=traj, prev_agents=agent_state,
                                  has_prev=jnp.asarray(True))
        metrics = {"id/meta_loss": meta_loss * state.has_prev, "id/cost": cost}
        if self.uses_critic:  # after the meta step, which used the critic's old values
            new_state, metrics["id/critic_loss"] = self.update_critic(new_state, traj)
        return new_state, metrics

    def diagnostics(self, state: IDState, key: jax.Array) -> dict:
        """Nothing of ID's is watched yet (its incentive's saturation is IQ-Flow's
        issue 16 question): {}."""
        del state, key
        return {}
