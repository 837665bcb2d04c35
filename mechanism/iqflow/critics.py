"""IQL critics with one Q head per agent (SPEC §3, paper Eq. 1 and Appendix A.1).

Head i of a Q critic sees every agent's observation and the other agents' actions
(its own action slot zeroed) and outputs Q_i(s, . | a_-i) over its own actions.
V is one network over all observations with one output per agent (or one, for the
team critic), trained by expectile regression toward the target Q at the data action;
Q regresses on r + gamma (1 - d) V(s') with the online V; both step from the same
pre-step parameters.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.networks import MLP, Conv3x3, JointNet
from mechanism.replay import Transition


@struct.dataclass
class CriticState:
    """q, q_target: per-agent Q heads stacked on a leading agent axis; v: V network."""

    q: dict
    q_target: dict
    v: dict
    q_opt: optax.OptState
    v_opt: optax.OptState


def expectile_loss(u: jax.Array, expectile: float) -> jax.Array:
    """mean |tau - 1(u < 0)| u^2 (Eq. 1)."""
    weight = jnp.abs(expectile - (u < 0).astype(u.dtype))
    return jnp.mean(weight * u**2)


def others_actions(action: jax.Array, num_actions: int) -> jax.Array:
    """The action input of every agent's Q head: the joint action one-hot with the
    head's own slot zeroed, f32[B, N (head), N * A]. Every head also sees all
    observations."""
    batch, num_agents = action.shape
    one_hot = jax.nn.one_hot(action, num_actions, dtype=jnp.float32)  # [B, N, A]
    others = 1.0 - jnp.eye(num_agents, dtype=jnp.float32)  # [head, slot]
    masked = one_hot[:, None, :, :] * others[None, :, :, None]  # [B, head, slot, A]
    return masked.reshape(batch, num_agents, num_agents * num_actions)


def at_action(q: jax.Array, action: jax.Array) -> jax.Array:
    """Q[B, N, A] read at action i32[B, N] -> [B, N]."""
    return jnp.take_along_axis(q, action[..., None], axis=-1)[..., 0]


class SharedConvHeads(nn.Module):
    """Every agent's Q head over one conv (SPEC §6 row 12, the authors' Cleanup
    critics): Conv(filters, 3x3, SAME) + ReLU over each agent's image with shared
    weights, flattened and joined over agents; head i is an MLP (hidden -> out) over
    concat(those features, the others' actions of head i). obs [B, N, H, W, C],
    others [B, heads, N * A] -> [B, heads, out]."""

    hidden: Sequence[int]
    out: int
    num_heads: int
    conv_filters: int

    @nn.compact
    def __call__(self, obs: jax.Array, others: jax.Array) -> jax.Array:
        features = nn.relu(Conv3x3(self.conv_filters, name="Conv_0")(obs))
        features = features.reshape(obs.shape[0], -1)
        heads = [MLP(hidden=tuple(self.hidden), out=self.out, name=f"head_{i}")(
            jnp.concatenate([features, others[:, i]], -1)) for i in range(self.num_heads)]
        return jnp.stack(heads, axis=1)


class ConstantValues(nn.Module):
    """The authors' V_env and V_ind in their MLP environments (SPEC §6 row 2): the MLP
    is applied to the fixed vector (hidden..., out) instead of the observations, so
    it is one learned value per output whatever the state. obs [B, ...] -> [B, out]."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        fixed = jnp.asarray([*self.hidden, self.out], jnp.float32)
        value = MLP(hidden=tuple(self.hidden), out=self.out, name="MLP_0")(fixed)
        return jnp.broadcast_to(value, (obs.shape[0], self.out))


class IQLCritic:
    """One family of critics (Q with per-agent heads, V) and its IQL update.

    `v_outputs` is N for per-agent values (V_env, V_ind) and 1 for the team value
    V_coop, which every head of Q_coop bootstraps from. `q_layout="shared_conv"`:
    the heads share one conv (`SharedConvHeads`); `values_ignore_obs`: V is
    `ConstantValues` (both SPEC §6).
    """

    def __init__(self, hidden: Sequence[int], num_agents: int, num_actions: int,
                 obs_shape: tuple[int, ...], v_outputs: int,
                 optimizer: optax.GradientTransformation, expectile: float, gamma: float,
                 polyak: float, conv_filters: int = 0, q_layout: str = "per_head",
                 values_ignore_obs: bool = False):
        self.shared_conv = q_layout == "shared_conv"
        if self.shared_conv:
            self.q_net = SharedConvHeads(hidden=tuple(hidden), out=num_actions,
                                         num_heads=num_agents, conv_filters=conv_filters)
        else:
            self.q_net = JointNet(hidden=tuple(hidden), out=num_actions,
                                  conv_filters=conv_filters)
        if values_ignore_obs:
            self.v_net = ConstantValues(hidden=tuple(hidden), out=v_outputs)
        else:
            self.v_net = JointNet(hidden=tuple(hidden), out=v_outputs, conv_filters=conv_filters)
        self.num_agents = num_agents
        self.num_actions = num_actions
        self.obs_shape = tuple(obs_shape)
        self.optimizer = optimizer
        self.expectile = expectile
        self.gamma = gamma
        self.polyak = polyak

    def init(self, key: jax.Array) -> CriticState:
        q_key, v_key = jax.random.split(key)
        obs = jnp.zeros((1, self.num_agents, *self.obs_shape))
        actions = jnp.zeros((1, self.num_agents * self.num_actions))
        if self.shared_conv:
            q = self.q_net.init(q_key, obs, others_actions(jnp.zeros((1, self.num_agents),
                                                                     jnp.int32),
                                                           self.num_actions))
        else:
            q = jax.vmap(lambda k: self.q_net.init(k, obs, actions))(
                jax.random.split(q_key, self.num_agents))
        v = self.v_net.init(v_key, obs)
        return CriticState(q=q, q_target=q, v=v, q_opt=self.optimizer.init(q),
                           v_opt=self.optimizer.init(v))

    def q_values(self, q_params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """Q_i(s, . | a_-i) for every agent: f32[B, N, A]; the heads share `obs`."""
        if self.shared_conv:
            return self.q_net.apply(q_params, obs, others_actions(action, self.num_actions))
        heads = jax.vmap(self.q_net.apply, in_axes=(0, None, 1), out_axes=1)
        return heads(q_params, obs, others_actions(action, self.num_actions))

    def values(self, v_params, obs: jax.Array) -> jax.Array:
        """V(s) broadcast over agents: f32[B, N]."""
        v = self.v_net.apply(v_params, obs)
        return jnp.broadcast_to(v, (obs.shape[0], self.num_agents))

    def value_loss(self, v_params, q_target, batch: Transition) -> jax.Array:
        q_data = at_action(self.q_values(q_target, batch.obs, batch.action), batch.action)
        return expectile_loss(q_data - self.values(v_params, batch.obs), self.expectile)

    def td_target(self, v_params, batch: Transition, reward: jax.Array) -> jax.Array:
        """r + gamma (1 - d) V(s'): f32[B, N]. No gradient reaches V; the reward's own
        gradient is kept, which is the path step B differentiates to the incentives."""
        next_v = jax.lax.stop_gradient(self.values(v_params, batch.next_obs))
        not_done = (1.0 - batch.done)[:, None]
        return reward + self.gamma * not_done * next_v

    def q_loss(self, q_params, batch: Transition, target: jax.Array) -> jax.Array:
        q_data = at_action(self.q_values(q_params, batch.obs, batch.action), batch.action)
        return jnp.mean((target - q_data) ** 2)

    def update(self, state: CriticState, batch: Transition, reward: jax.Array):
        """One IQL step of Q and V from the same pre-step parameters (V toward the
        target Q's expectile, Q toward r + gamma V'), then the Polyak target.
        reward: f32[B, N], held constant."""
        v_loss, v_grad = jax.value_and_grad(self.value_loss)(state.v, state.q_target, batch)
        target = jax.lax.stop_gradient(self.td_target(state.v, batch, reward))
        q_loss, q_grad = jax.value_and_grad(self.q_loss)(state.q, batch, target)
        v_updates, v_opt = self.optimizer.update(v_grad, state.v_opt, state.v)
        q_updates, q_opt = self.optimizer.update(q_grad, state.q_opt, state.q)
        q = optax.apply_updates(state.q, q_updates)
        new_state = CriticState(
            q=q,
            q_target=optax.incremental_update(q, state.q_target, self.polyak),
            v=optax.apply_updates(state.v, v_updates),
            q_opt=q_opt,
            v_opt=v_opt,
        )
        return new_state, {"q_loss": q_loss, "v_loss": v_loss}
