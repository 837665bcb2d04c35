"""Fingerprints of the `paper` recipe, for the test that it stays bit for bit what it
was before recipes existed (`tests/data/paper_recipe.json`, written by
`python -m tests.golden` with the code of commit e226a82, before any SPEC §6 row was
built).

A fingerprint is every preset's config (as checkpoints and W&B store it) and, for a
few tiny runs of every environment family and algorithm, each seed's evaluated returns
and two float64 sums of every learned array of the final train state."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxsim.checkpoint import config_json
from jaxsim.config import (ACConfig, IDConfig, IQFlowConfig, PGConfig, cleanup, escape_room,
                           matrix_game)
from jaxsim.train import make_train, seed_keys

PATH = os.path.join(os.path.dirname(__file__), "data", "paper_recipe.json")

TINY_IQFLOW = IQFlowConfig(critic_hidden=(8,), incentive_hidden=(8,), unroll_steps=2,
                           batch_size=8, start_train=16)
TINY_PG = PGConfig(hidden=(6,), lr=0.05, entropy_coef=0.01)
TINY_AC = ACConfig(conv_filters=2, hidden=(8,))


def presets() -> dict:
    out = {}
    for game in ("ipd", "chicken", "stag_hunt"):
        for alg in ("iqflow", "none"):
            out[f"matrix/{game}/{alg}"] = matrix_game(game, alg)
    for n, m in ((5, 2), (10, 5)):
        for alg in ("iqflow", "id", "none"):
            out[f"er/{n}_{m}/{alg}"] = escape_room(n, m, alg)
    for size in ("7x7", "10x10"):
        for alg in ("ac", "shared", "iqflow", "id"):
            out[f"cleanup/{size}/{alg}"] = cleanup(size, alg)
    return out


def tiny_runs() -> dict:
    short = dict(episodes=20, chunk_episodes=10, eval_period=10, eval_episodes=2, num_seeds=2,
                 seed=3)
    er = dict(agent=TINY_PG, **short)
    tiny_cleanup = dict(episodes=4, chunk_episodes=2, eval_period=2, eval_episodes=2,
                        num_seeds=2, agent_reset_period=2, env_params={"max_steps": 6})
    conv = dict(conv_filters=2, incentive_hidden=(8,), critic_hidden=(8,))
    return {
        "matrix/ipd/iqflow": matrix_game("ipd", "iqflow", mechanism=TINY_IQFLOW, **short),
        "matrix/ipd/none": matrix_game("ipd", "none", agent=TINY_PG, **short),
        "er/3_1/iqflow": escape_room(3, 1, "iqflow", mechanism=TINY_IQFLOW, **er),
        "er/3_1/id": escape_room(3, 1, "id", mechanism=IDConfig(incentive_hidden=(5,)), **er),
        "er/3_1/none": escape_room(3, 1, "none", **er),
        "cleanup/7x7/shared": cleanup("7x7", "shared", agent=TINY_AC, **tiny_cleanup),
        "cleanup/7x7/iqflow": cleanup("7x7", "iqflow", agent=TINY_AC, mechanism=IQFlowConfig(
            unroll_steps=2, batch_size=8, start_train=16, **conv), **tiny_cleanup),
        "cleanup/7x7/id": cleanup("7x7", "id", agent=TINY_AC, mechanism=IDConfig(
            outer_weight="td_error", cost_weight=1e-4, **conv), **tiny_cleanup),
    }


SKIPPED = (".buffer", ".prev_traj")  # stored data, not learned: its size drowns the rest


def fingerprint(config) -> dict:
    """Each seed's evaluated returns and, per float leaf of the final agents' and
    mechanism's states (replay and stored episodes left out), its float64 sum and sum
    of magnitudes over seeds."""
    state, _, evals = jax.jit(jax.vmap(make_train(config)))(seed_keys(config))
    leaves = {}
    for prefix, part in (("agents", state.agents), ("mechanism", state.mechanism)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
            name = prefix + jax.tree_util.keystr(path)
            leaf = np.asarray(leaf)
            if any(skip in name for skip in SKIPPED) or not np.issubdtype(leaf.dtype,
                                                                          np.floating):
                continue
            leaf = leaf.astype(np.float64)
            leaves[name] = [float(leaf.sum()), float(np.abs(leaf).sum())]
    return {"eval_return": np.asarray(evals["eval/return"], np.float64).tolist(),
            "leaves": leaves}


def preset_json(config) -> dict:
    return json.loads(json.dumps(config_json(config)))


if __name__ == "__main__":
    payload = {"presets": {k: preset_json(c) for k, c in presets().items()},
               "runs": {k: fingerprint(c) for k, c in tiny_runs().items()}}
    with open(PATH, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    print(json.dumps(payload["runs"], indent=1))
