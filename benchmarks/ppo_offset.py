"""Why IQ-Flow stops PPO on Cleanup (issue 19): PPO alone, no mechanism, paid a constant.

    python -m benchmarks.ppo_offset --offset 0 0.01 0.1 1.0 -0.1 --seeds 8 --episodes 500
    python -m benchmarks.ppo_offset --offset 0 0.01 1.0 --advantage-norm none

IQ-Flow's incentive (SPEC §3: incentive_max * sigmoid(z), in (0, 2)) pays every agent
about 1 per step from the start, whatever it does. This runs `benchmarks.learners`'
PPO cell without a mechanism on Cleanup 7x7 with every agent's reward raised by the
same constant at every step (`RewardOffset`), one run per offset, same seeds, and
reports the evaluated environment return with the offset taken back out (2 agents x
50 steps x offset: Cleanup's episodes have a fixed length). Offset 0 is the table's
`none+ppo` cell's config (a run of its own). A diagnostic: it patches the
environment factory `envs_jax.make` for the duration of each run (`offset_env`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Literal
from unittest import mock

import numpy as np
import tyro

import envs_jax
from benchmarks.common import mean_ci95, write_json
from benchmarks.learners import Args as LearnerArgs
from benchmarks.learners import make_config
from envs_jax.base import MultiAgentEnv
from jaxsim.runner import run


class RewardOffset(MultiAgentEnv):
    """`env` with `offset` added to every agent's reward at every step; everything else
    (observations, specs, episodes, compact replay form, central state) is `env`'s."""

    def __init__(self, env: MultiAgentEnv, offset: float):
        self.env, self.offset = env, float(offset)
        self.num_agents, self.num_actions = env.num_agents, env.num_actions
        self.max_steps = env.max_steps
        self.has_central_state = env.has_central_state
        super().__init__()

    def __repr__(self) -> str:
        return f"RewardOffset({self.env!r}, {self.offset:g})"

    @property
    def observation_spec(self):
        return self.env.observation_spec

    def compact(self, state):
        return self.env.compact(state)

    def observe_compact(self, *compact):
        return self.env.observe_compact(*compact)

    def central_state(self, obs):
        return self.env.central_state(obs)

    def reset(self, key):
        return self.env.reset(key)

    def step(self, state, action):
        state, timestep = self.env.step(state, action)
        return state, timestep.replace(reward=timestep.reward + self.offset)


@contextlib.contextmanager
def offset_env(offset: float):
    """Within the block, every environment `envs_jax.make` builds (the run's, so
    `jaxsim.train.Experiment`'s) carries `RewardOffset(offset)`."""
    make = envs_jax.make
    with mock.patch.object(envs_jax, "make",
                           lambda name, **params: RewardOffset(make(name, **params), offset)):
        yield


@dataclass
class Args:
    offset: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, -0.1)
    """constants added to every agent's reward at every step, one run each"""
    advantage_norm: Literal["minibatch", "none"] = "minibatch"
    """PPO's advantages: standardised per minibatch (PureJaxRL, the table's) or raw"""
    seeds: int = 8
    episodes: int = 500
    eval_period: int = 100
    out: str | None = None


def main(args: Args) -> dict:
    if args.seeds < 1 or args.episodes < 1:
        raise ValueError("--seeds and --episodes must be >= 1")
    offsets = [float(o) for o in args.offset]
    if not offsets or not np.all(np.isfinite(offsets)) or len(set(offsets)) < len(offsets):
        raise ValueError("--offset needs one or more distinct finite numbers, got "
                         f"{list(args.offset)}")
    base = LearnerArgs(env=("cleanup",), mechanism=("none",), learner=("ppo",),
                       seeds=args.seeds, episodes=args.episodes,
                       eval_period=args.eval_period, wandb_mode="disabled", progress=False)
    config = make_config(base, "none+ppo", "cleanup")
    config = config.replace(agent=dataclasses.replace(config.agent,
                                                      advantage_norm=args.advantage_norm))
    env = envs_jax.make(config.env, **dict(config.env_params))
    steps = env.num_agents * env.max_steps  # Cleanup's episodes all last max_steps
    runs = {}
    for offset in offsets:
        with offset_env(offset):
            result = run(config, wandb_mode="disabled", progress=False)
        returns = np.asarray(result.eval_metrics["eval/return"], float) - steps * offset
        entropy = np.asarray(result.metrics["agent/entropy"], float).mean((1, 2))
        runs[f"{offset:g}"] = {
            "eval_episodes": [int(e) for e in result.eval_episodes],
            "eval_return_mean": returns.mean(1).round(4).tolist(),
            "eval_return_per_seed": returns.round(4).tolist(),
            "final_return_ci95": np.round(mean_ci95(returns[-1])["ci95"], 4).tolist(),
            "entropy_by_chunk": entropy.round(4).tolist()}
    payload = {"args": dataclasses.asdict(args), "runs": runs}
    if args.out:
        write_json(args.out, payload)
    print(f"\nPPO alone on Cleanup 7x7 (advantages: {args.advantage_norm}), every agent paid "
          f"a constant per step; env return, offset removed, {args.seeds} seeds")
    print("offset   " + "  ".join(f"{e:>6d}" for e in runs[f"{offsets[0]:g}"]["eval_episodes"])
          + "   final 95% interval")
    for name, r in runs.items():
        lo, hi = r["final_return_ci95"]
        print(f"{name:>6s}   " + "  ".join(f"{m:6.2f}" for m in r["eval_return_mean"])
              + f"   [{lo:.2f}, {hi:.2f}]")
    return payload


if __name__ == "__main__":
    main(tyro.cli(Args))
