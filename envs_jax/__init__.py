"""Pure-JAX multi-agent environments behind one factory: `make(name, **params)`."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from envs_jax.base import MultiAgentEnv
from envs_jax.centralised import Centralised
from envs_jax.cleanup import cleanup_7x7, cleanup_10x10
from envs_jax.escape_room import EscapeRoom
from envs_jax.matrix_games import MatrixGame


def _matrix_game(game: str) -> Callable[..., MatrixGame]:
    def build(episode_length: int = 5) -> MatrixGame:
        return MatrixGame(game, episode_length=episode_length)

    build.__name__ = game
    return build


REGISTRY: dict[str, Callable[..., MultiAgentEnv]] = {
    "ipd": _matrix_game("ipd"),
    "chicken": _matrix_game("chicken"),
    "stag_hunt": _matrix_game("stag_hunt"),
    "escape_room": EscapeRoom,
    "cleanup_7x7": cleanup_7x7,
    "cleanup_10x10": cleanup_10x10,
}


# `make(CENTRALISED + name)`: the environment `name` played by one joint-action
# controller (envs_jax.centralised, SPEC §6 row 9).
CENTRALISED = "centralised:"


def env_parameters(name: str) -> dict[str, Any]:
    """The parameters `make(name, ...)` accepts, with their defaults."""
    name = name.removeprefix(CENTRALISED)
    _check_name(name)
    signature = inspect.signature(REGISTRY[name])
    return {p.name: p.default for p in signature.parameters.values()}


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        raise ValueError(f"unknown environment {name!r}; valid names: {sorted(REGISTRY)}, "
                         f"each also as {CENTRALISED}NAME (one joint-action controller)")


def make(name: str, **params: Any) -> MultiAgentEnv:
    """Build the environment registered as `name`; unknown names or parameters raise
    a ValueError that lists what is valid. Environments hold no mutable state, so one
    built for the same name and parameters is handed out again (a run's config is
    validated, swept and traced several times on its way in)."""
    key = tuple(sorted((k, type(v).__name__, v) for k, v in params.items()))
    try:
        hash(key)
    except TypeError:  # unhashable parameter values: build afresh
        return _make(name, **params)
    return _make_cached(name, key)


@functools.lru_cache(maxsize=64)
def _make_cached(name: str, key: tuple) -> MultiAgentEnv:
    return _make(name, **{k: v for k, _, v in key})


def _make(name: str, **params: Any) -> MultiAgentEnv:
    valid = env_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for environment {name!r}; valid: {valid}"
        )
    if name.startswith(CENTRALISED):
        return Centralised(REGISTRY[name.removeprefix(CENTRALISED)](**params))
    return REGISTRY[name](**params)


__all__ = ["CENTRALISED", "Centralised", "MultiAgentEnv", "make", "env_parameters", "REGISTRY"]
