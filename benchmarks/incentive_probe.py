"""What an IQ-Flow run's incentive network does, seed by seed, read from a checkpoint.

    python -m benchmarks.incentive_probe runs/ckpt/NAME/iqflow [--episode N] [--out FILE]

Rebuilds the run's config from the checkpoint itself, restores every seed's state and,
on transitions drawn from each seed's replay buffer (its last `--recent-episodes`
episodes), reports per seed and agent: the incentive net's mean pre-sigmoid output
(`logit`), overall and at each action the agent took; the activation's mean slope there
(`sigmoid_slope`: |d r_inc / d logit| / incentive_max, for the paper's head
r_inc = incentive_max sigmoid(logit) the sigmoid's own slope; where it is ~0 the
meta-gradient cannot move that output); and step B on one fresh 64 + 64 draw, as
training draws it: the
meta-loss, the fraction of validation rows in a dilemma and the norm of d loss / d eta.
A seed whose mechanism "pays nothing" shows logits far below 0, a slope near 0 and a
meta-gradient orders of magnitude smaller than the others', with a dilemma still there.
Only reads the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from benchmarks.common import write_json
from jaxsim.checkpoint import Checkpointer, CheckpointError, saved_config
from jaxsim.config import IQFlowConfig, matmul_precision_scope
from jaxsim.train import Experiment, seed_keys


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """the checkpoint directory of one IQ-Flow run (e.g. runs/ckpt/NAME/iqflow)"""
    episode: int | None = None
    """which checkpoint (default: the latest)"""
    rows: int = 2048
    """transitions drawn per seed for the incentive statistics"""
    recent_episodes: int = 1000
    """draw from the last this many episodes of each seed's replay buffer"""
    seed: int = 0
    """key of the draws"""
    out: str | None = None
    """write the figures as JSON to this file"""


def probe_fn(experiment: Experiment, rows: int, recent_rows: int):
    """`probe(mechanism_state, key) -> dict` of one seed's statistics (see module doc),
    drawn from the buffer's last `recent_rows` rows (all it holds, if fewer)."""
    mech = experiment.mechanism
    num_actions = mech.num_actions

    def probe(state, key):
        buffer = state.buffer
        draw_key, step_b_key = jax.random.split(key)
        recent = jnp.maximum(jnp.minimum(buffer.size, recent_rows), 1)
        back = jax.random.randint(draw_key, (rows,), 0, recent)
        data = mech.transitions(buffer, (buffer.cursor - 1 - back) % buffer.capacity)
        logits = mech.logits(state.eta, data.obs, data.action)  # [R, N]
        # |d r_inc / d z| / incentive_max: sigmoid(z)(1 - sigmoid(z)) for the paper's head
        slope = mech.slope(logits)[0] / mech.config.incentive_max
        taken = jax.nn.one_hot(data.action, num_actions)  # [R, N, A]
        count = taken.sum(0)
        by_action = (logits[..., None] * taken).sum(0) / jnp.maximum(count, 1)
        by_action = jnp.where(count > 0, by_action, jnp.nan)
        loss, terms, grad = mech.meta_gradient(state, *mech.step_b_rows(state, step_b_key))
        grad_norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grad)))
        return {"logit": logits.mean(0), "logit_by_action": by_action,
                "action_fraction": count / rows, "sigmoid_slope": slope.mean(0),
                "saturated_fraction": (slope < 1e-3).mean(0),
                "meta_loss": loss, "dilemma_fraction": terms["dilemma_fraction"],
                "meta_grad_norm": grad_norm}

    return probe


def main(args: Args) -> dict:
    if args.rows < 1 or args.recent_episodes < 1:
        raise ValueError("--rows and --recent-episodes must be positive")
    config, episode = saved_config(args.checkpoint, args.episode)
    if not isinstance(config.mechanism, IQFlowConfig):
        raise CheckpointError(f"{args.checkpoint} is a run of {type(config.mechanism).__name__},"
                              " not IQ-Flow: nothing to probe")
    if config.freeze_mechanism:
        raise CheckpointError(f"{args.checkpoint} is a run with a frozen mechanism (no replay "
                              "to draw from): probe the run it was loaded from")
    experiment = Experiment(config)
    abstract = jax.eval_shape(jax.vmap(experiment.init), seed_keys(config))
    checkpointer = Checkpointer(args.checkpoint, config)
    try:
        state, _, _ = checkpointer.restore(abstract, episode)
    finally:
        checkpointer.close()
    steps = experiment.env.max_steps  # rows per episode at most (ER's can end early)
    probe = jax.vmap(probe_fn(experiment, args.rows, args.recent_episodes * steps))
    keys = jax.random.split(jax.random.key(args.seed), config.num_seeds)
    with matmul_precision_scope(config.matmul_precision):
        figures = jax.tree.map(np.asarray, jax.jit(probe)(state.mechanism, keys))
    seeds = list(range(config.first_seed, config.first_seed + config.num_seeds))
    payload = {"checkpoint": args.checkpoint, "episode": episode, "env": config.env,
               "seeds": seeds, "rows": args.rows, "recent_episodes": args.recent_episodes,
               **{k: v.tolist() for k, v in figures.items()}}
    write_json(args.out, payload)
    print_table(payload)
    return payload


def print_table(payload: dict) -> None:
    print(f"\nIQ-Flow incentive network of {payload['checkpoint']} at episode "
          f"{payload['episode']} ({payload['rows']} transitions per seed from its last "
          f"{payload['recent_episodes']} episodes)")
    num_agents = len(payload["logit"][0])
    print("seed  " + "  ".join(f"logit{i:<2d} slope{i:<2d}" for i in range(num_agents))
          + "  meta_loss  dilemma  |d loss/d eta|")
    for j, seed in enumerate(payload["seeds"]):
        agents = "  ".join(f"{payload['logit'][j][i]:7.2f} {payload['sigmoid_slope'][j][i]:7.1e}"
                           for i in range(num_agents))
        print(f"{seed:4d}  {agents}  {payload['meta_loss'][j]:9.3f}  "
              f"{payload['dilemma_fraction'][j]:7.3f}  {payload['meta_grad_norm'][j]:14.3e}")


if __name__ == "__main__":
    main(tyro.cli(Args))
