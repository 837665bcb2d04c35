"""The learners of issue 19 under the engine's seed axis: PPO, DQN and mixed-team
seeds trained together (one vmap) are the seeds trained alone."""

import jax
import numpy as np
import pytest

from agents import DQNConfig, MixedConfig, PGConfig, PPOConfig
from jaxsim.config import escape_room
from jaxsim.runner import run

LEARNERS = {"ppo": PPOConfig(hidden=(8,), num_minibatches=1, update_epochs=2),
            "dqn": DQNConfig(hidden=(8,), buffer_size=64, batch_size=8, learning_starts=8,
                             train_interval=2, target_update_period=4)}
LEARNERS["mixed"] = MixedConfig(members=(PGConfig(hidden=(8,)), LEARNERS["ppo"], LEARNERS["dqn"]))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learners_under_vmap_equal_separate_runs(name):
    """Two seeds at once against each alone, on ER(3, 1) without a mechanism: the same
    returns and final states, up to the float rounding of a batched matmul 2 wide
    instead of 1 (the engine's own seeds test allows the same)."""
    config = escape_room(3, 1, "none", episodes=20, chunk_episodes=10, eval_period=10,
                         num_seeds=2).replace(agent=LEARNERS[name])
    both = run(config, progress=False)
    for seed in range(2):
        alone = run(config.replace(num_seeds=1, first_seed=seed), progress=False)
        np.testing.assert_allclose(alone.metrics["return"][:, 0],
                                   both.metrics["return"][:, seed], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.eval_metrics["eval/return"][:, 0],
                                   both.eval_metrics["eval/return"][:, seed], rtol=1e-5,
                                   atol=1e-6)
        for a, b in zip(jax.tree.leaves(alone.state.agents), jax.tree.leaves(both.state.agents),
                        strict=True):
            a, b = np.asarray(a)[0], np.asarray(b)[seed]
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
