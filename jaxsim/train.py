"""The compiled training program: `make_train(config)` returns a pure `train(key)`.

One episode step is the only path data takes:
  rollout -> mechanism.update (stores the episode, learns) -> agents.update on
  r_env + r_inc -> metrics.
Episodes run as `lax.scan` chunks; seeds are a `vmap` axis added outside; the host
(`jaxsim.runner`) evaluates, logs and checkpoints between chunks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

import agents as agents_lib
import envs_jax
import mechanism as mechanism_lib
from jaxsim.config import TrainConfig, matmul_precision_scope, validate
from jaxsim.rollout import rollout
from jaxsim.schedule import Schedule
from jaxsim.types import Trajectory, agent_view
from mechanism import Frozen, ReadsAgents

EVAL_KEY_SALT = 0x5EED
AGENT_RESET_SALT = 0xA6E7
DIAGNOSTICS_SALT = 0xD1A6


@struct.dataclass
class TrainState:
    """Everything that flows from one episode to the next, for one seed."""

    agents: object  # the team's train states: stacked on a leading agent axis per group
    mechanism: object
    key: jax.Array
    episode: jax.Array  # i32[] episodes completed


@struct.dataclass
class EpisodeMetrics:
    """What every episode step reports of its episode, typed. In the run's metrics
    (logs, JSON, `RunResult.metrics`) each field is named as itself, but
    `total_return` as "return"; `RunResult.episode` reads them back as this type."""

    total_return: jax.Array  # f32[]: environment rewards only, summed over agents
    return_per_agent: jax.Array  # f32[N]
    incentive_per_agent: jax.Array  # f32[N]
    action_freq: jax.Array  # f32[N, A]: the fraction of the episode's steps
    incentive_by_action_sum: jax.Array  # f32[N, A]: incentive paid for each action
    episode_length: jax.Array  # f32[]

    NAMES = {"total_return": "return"}  # field -> metric name, where they differ

    @classmethod
    def of(cls, traj: Trajectory, num_actions: int) -> "EpisodeMetrics":
        one_hot = jax.nn.one_hot(traj.action, num_actions) * traj.mask[:, None, None]  # [T, N, A]
        steps = jnp.maximum(traj.mask.sum(), 1.0)
        return cls(total_return=traj.reward.sum(), return_per_agent=traj.reward.sum(0),
                   incentive_per_agent=traj.incentive.sum(0), action_freq=one_hot.sum(0) / steps,
                   incentive_by_action_sum=(traj.incentive[:, :, None] * one_hot).sum(0),
                   episode_length=traj.mask.sum())

    @classmethod
    def names(cls) -> list[str]:
        return [cls.NAMES.get(f.name, f.name) for f in dataclasses.fields(cls)]

    def as_metrics(self) -> dict:
        return {self.NAMES.get(name, name): value for name, value in vars(self).items()}

    @classmethod
    def from_metrics(cls, metrics: dict) -> "EpisodeMetrics":
        """The fields out of a metrics dict (any leading axes: chunks, runs)."""
        return cls(**{f.name: metrics[cls.NAMES.get(f.name, f.name)]
                      for f in dataclasses.fields(cls)})


def episode_metrics(traj: Trajectory, num_actions: int) -> dict:
    """Per-episode summaries by name (EpisodeMetrics)."""
    return EpisodeMetrics.of(traj, num_actions).as_metrics()


class Experiment:
    """The pure pieces of one experiment, built from a validated config."""

    def __init__(self, config: TrainConfig, check: bool = True):
        """check=False skips `validate`: for configs holding traced sweep values, whose
        concrete grid points were validated before compilation."""
        if check:
            validate(config)
        self.config = config
        self.env = envs_jax.make(config.env, **dict(config.env_params))
        self.team = agents_lib.team(config.agent, self.env)  # one group per learner
        mechanism = mechanism_lib.make(config.mechanism, self.env, config, self.team)
        # Fig. 10's pretrained incentives pay fresh agents unchanged.
        self.mechanism = Frozen(mechanism) if config.freeze_mechanism else mechanism

    @property
    def agent(self):
        """The learner of every agent (a mixed team has none: see `team`)."""
        return self.team.only

    def init(self, key: jax.Array) -> TrainState:
        with matmul_precision_scope(self.config.matmul_precision):
            return self._init(key)

    def _init(self, key: jax.Array) -> TrainState:
        agents_key, mechanism_key, key = jax.random.split(key, 3)
        agent_keys = jax.random.split(agents_key, self.env.num_agents)
        return TrainState(
            agents=self.team.init(agent_keys),
            mechanism=self.mechanism.init(mechanism_key),
            key=key,
            episode=jnp.zeros((), jnp.int32),
        )

    def episode_step(self, state: TrainState, _=None) -> tuple[TrainState, dict]:
        key, rollout_key, mechanism_key = jax.random.split(state.key, 3)
        traj = rollout(self.env, self.team, self.mechanism, self.team.params(state.agents),
                       state.mechanism, rollout_key)
        # The agents' train states reach only the kind of mechanism declared to read them (ID).
        reads = {"agent_state": state.agents} if isinstance(self.mechanism, ReadsAgents) else {}
        mechanism_state, mechanism_metrics = self.mechanism.update(
            state.mechanism, traj, mechanism_key, **reads)
        agents, agent_metrics = self.team.update(
            state.agents, agent_view(traj, reward=self.mechanism.agent_rewards(traj)))
        metrics = episode_metrics(traj, self.env.num_actions)
        metrics.update(mechanism_metrics)
        metrics.update({f"agent/{k}": v for k, v in agent_metrics.items()})
        new_state = TrainState(agents=agents, mechanism=mechanism_state, key=key,
                               episode=state.episode + 1)
        return new_state, metrics

    def maybe_reset_agents(self, state: TrainState) -> TrainState:
        """Fresh agents at every `agent_reset_period`-th episode (never at episode 0);
        their keys branch off the training key, the mechanism is untouched."""
        period = self.config.agent_reset_period
        if not period:
            return state
        due = (state.episode > 0) & (state.episode % period == 0)
        keys = jax.random.split(jax.random.fold_in(state.key, AGENT_RESET_SALT),
                                self.env.num_agents)
        fresh = self.team.init(keys)
        agents = jax.tree.map(lambda f, a: jnp.where(due, f, a), fresh, state.agents)
        return state.replace(agents=agents)

    def run_chunk(self, state: TrainState, length: int | None = None) -> tuple[TrainState, dict]:
        """`length` episode steps (default `chunk_episodes`; a run's last chunk may be
        shorter, `jaxsim.schedule`); metrics are averaged inside the chunk so memory
        does not grow with the run's length."""
        with matmul_precision_scope(self.config.matmul_precision):
            state = self.maybe_reset_agents(state)
            state, metrics = jax.lax.scan(self.episode_step, state, None,
                                          length=length or self.config.chunk_episodes)
        metrics = jax.tree.map(lambda m: m.mean(0), metrics)
        with matmul_precision_scope(self.config.matmul_precision):  # its own look at itself
            metrics.update(self.mechanism.diagnostics(
                state.mechanism, jax.random.fold_in(state.key, DIAGNOSTICS_SALT)))
        metrics["guard/nonfinite_values"] = nonfinite_count(state)
        return state, metrics

    def evaluate(self, state: TrainState) -> dict:
        """`eval_episodes` episodes with the current stochastic policies, no learning.
        Its keys branch off the training key, so evaluating never changes training."""
        with matmul_precision_scope(self.config.matmul_precision):
            return self._evaluate(state)

    def _evaluate(self, state: TrainState) -> dict:
        eval_key = jax.random.fold_in(state.key, EVAL_KEY_SALT)
        keys = jax.random.split(eval_key, self.config.eval_episodes)
        play = lambda k: rollout(self.env, self.team, self.mechanism,  # noqa: E731
                                 self.team.params(state.agents), state.mechanism, k)
        metrics = jax.vmap(lambda k: episode_metrics(play(k), self.env.num_actions))(keys)
        return {"eval/" + k: v.mean(0) for k, v in metrics.items()}


def nonfinite_count(tree) -> jax.Array:
    """How many NaN or Inf values the floating-point leaves of `tree` hold: f32[]."""
    counts = [jnp.sum(~jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return sum(counts, jnp.zeros((), jnp.int32)).astype(jnp.float32)


def over_runs(step, group: int | None = None):
    """`step(state) -> (state, aux)` over a leading run axis: one `vmap`, or with
    `group` a loop over groups of `group` vmapped runs that writes each group's new
    state back into the one state buffer (in place), so that memory holds the state
    once plus one group's temporaries. The same numbers either way, run by run."""
    batched = jax.vmap(step)
    if group is None:
        return batched

    def grouped(state):
        runs = jax.tree.leaves(state)[0].shape[0]
        if runs % group:
            raise ValueError(f"{runs} runs do not split into groups of {group}")
        take = lambda tree, i: jax.tree.map(  # noqa: E731
            lambda x: jax.lax.dynamic_slice_in_dim(x, i * group, group), tree)
        put = lambda tree, part, i: jax.tree.map(  # noqa: E731
            lambda x, y: jax.lax.dynamic_update_slice_in_dim(x, y, i * group, 0), tree, part)
        aux_shape = jax.eval_shape(batched, take(state, 0))[1]
        aux = jax.tree.map(lambda s: jnp.zeros((runs, *s.shape[1:]), s.dtype), aux_shape)

        def body(i, carry):
            state, aux = carry
            new_state, new_aux = batched(take(state, i))
            return put(state, new_state, i), put(aux, new_aux, i)

        return jax.lax.fori_loop(0, runs // group, body, (state, aux))

    return grouped


def seed_keys(config: TrainConfig) -> jax.Array:
    """One key per seed: seed i of a run is the same whatever `num_seeds` is, so a
    sweep split over processes (`first_seed`) trains the same seeds as one run."""
    base = jax.random.PRNGKey(config.seed)
    index = config.first_seed + jnp.arange(config.num_seeds)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def make_train(config: TrainConfig):
    """A pure `train(key) -> (final_state, chunk_metrics, eval_metrics)` for one seed.

    chunk_metrics: each chunk's means, stacked `[num_chunks, ...]`; eval_metrics:
    `[num_chunks, ...]`, filled after the chunks the schedule evaluates
    (`jaxsim.schedule.Schedule.eval_due`), NaN elsewhere. The chunks are those of the
    host loop: full ones, then a shorter last one where they do not divide the run.
    `jax.vmap(train)(seed_keys(config))` runs every seed at once.
    """
    experiment = Experiment(config)
    schedule = Schedule.of(config)
    eval_shapes = jax.eval_shape(experiment.evaluate, jax.eval_shape(experiment.init,
                                                                     jax.random.PRNGKey(0)))

    def skip_eval(state):
        return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), eval_shapes)

    def chunk(length):
        def run(state, end):
            state, metrics = experiment.run_chunk(state, length)
            due = schedule.eval_due(end)
            return state, (metrics, jax.lax.cond(due, experiment.evaluate, skip_eval, state))
        return run

    def train(key: jax.Array):
        state = experiment.init(key)
        ends = config.chunk_episodes * (1 + jnp.arange(schedule.full_chunks))
        state, out = jax.lax.scan(chunk(config.chunk_episodes), state, ends)
        if schedule.last_chunk:
            state, last = chunk(schedule.last_chunk)(state, jnp.asarray(config.episodes))
            out = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), out, last)
        metrics, evals = out
        return state, metrics, evals

    return train
