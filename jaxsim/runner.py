"""The host loop: compiles the vmapped chunk once, then evaluates, logs and reports
progress between chunks. Per-seed metrics are kept on the host, one row per chunk."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxsim.config import TrainConfig, validate
from jaxsim.logger import WandbLogger, flatten_metrics
from jaxsim.train import Experiment, TrainState, seed_keys


@dataclass
class RunResult:
    """What a run leaves on the host. Arrays of metrics are `[rows, seeds, ...]`."""

    config: TrainConfig
    episodes: np.ndarray  # episodes completed at the end of each chunk
    metrics: dict[str, np.ndarray]  # each chunk's mean over its episodes
    eval_episodes: np.ndarray
    eval_metrics: dict[str, np.ndarray]
    probes: list[tuple[int, Any]] = field(default_factory=list)  # (episode, on_chunk output)
    timing: dict[str, float] = field(default_factory=dict)
    state: TrainState | None = None
    wandb_dir: str | None = None
    interrupted: bool = False


def _stack(rows: list[dict]) -> dict[str, np.ndarray]:
    if not rows:
        return {}
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def config_dict(config: TrainConfig) -> dict:
    out = dataclasses.asdict(config)
    out["agent_type"] = type(config.agent).__name__
    out["mechanism_type"] = type(config.mechanism).__name__
    out["env_params"] = dict(config.env_params)
    return out


def run(
    config: TrainConfig,
    *,
    wandb_mode: str = "disabled",
    wandb_project: str = "iqflow-jax",
    wandb_name: str | None = None,
    wandb_group: str | None = None,
    wandb_dir: str | None = None,
    on_chunk: Callable[[TrainState, int], Any] | None = None,
    progress: bool = True,
) -> RunResult:
    """Train every seed of `config` in one compiled program.

    `on_chunk(state, episode)` runs on the host after each chunk (state is stacked
    over seeds) and its result is kept in `RunResult.probes`. Ctrl-C stops the run
    cleanly after the current chunk is abandoned, and the result says how far it got.
    """
    validate(config)  # before any compilation
    experiment = Experiment(config)
    logger = WandbLogger(wandb_mode, project=wandb_project, name=wandb_name,
                         group=wandb_group, config=config_dict(config), directory=wandb_dir)
    state = jax.jit(jax.vmap(experiment.init))(seed_keys(config))

    start = time.perf_counter()
    chunk = jax.jit(jax.vmap(experiment.run_chunk)).lower(state).compile()
    evaluate = jax.jit(jax.vmap(experiment.evaluate)).lower(state).compile()
    compile_s = time.perf_counter() - start

    rows, evals, eval_at, ends, probes = [], [], [], [], []
    train_s, steps_done, episode = 0.0, 0.0, 0
    per_chunk = config.chunk_episodes
    bar = tqdm(total=config.episodes, unit="ep", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    interrupted = False
    try:
        while episode < config.episodes:
            tick = time.perf_counter()
            state, metrics = chunk(state)
            metrics = jax.device_get(metrics)  # waits for the chunk
            elapsed = time.perf_counter() - tick
            train_s += elapsed
            episode += per_chunk
            chunk_steps = float(np.sum(metrics["episode_length"])) * per_chunk
            steps_done += chunk_steps
            rows.append(metrics)
            ends.append(episode)
            log = flatten_metrics(metrics)
            log["throughput/seed_episodes_per_s"] = per_chunk * config.num_seeds / elapsed
            log["throughput/env_steps_per_s"] = chunk_steps / elapsed
            log["throughput/compile_s"] = compile_s
            if episode % config.eval_period == 0 or episode == config.episodes:
                eval_metrics = jax.device_get(evaluate(state))
                evals.append(eval_metrics)
                eval_at.append(episode)
                log.update(flatten_metrics(eval_metrics))
            if on_chunk is not None:
                probes.append((episode, on_chunk(state, episode)))
            logger.log(log, step=episode)
            bar.update(per_chunk)
            bar.set_postfix(ep_s=f"{episode * config.num_seeds / train_s:.0f}",
                            steps_s=f"{steps_done / train_s:.0f}",
                            ret=f"{log['return']:.2f}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: {episode} of {config.episodes} episodes done "
              f"({len(evals)} evaluations); results so far are kept", file=sys.stderr)
    finally:
        bar.close()
        run_dir = logger.run_dir
        logger.finish()

    timing = {
        "compile_s": compile_s,
        "train_s": train_s,
        "num_seeds": config.num_seeds,
        "episodes_per_s": episode * config.num_seeds / train_s if train_s else 0.0,
        "env_steps_per_s": steps_done / train_s if train_s else 0.0,
    }
    return RunResult(
        config=config, episodes=np.asarray(ends), metrics=_stack(rows),
        eval_episodes=np.asarray(eval_at), eval_metrics=_stack(evals), probes=probes,
        timing=timing, state=state, wandb_dir=run_dir, interrupted=interrupted,
    )
