"""The checks every part's config runs on itself: each raises a ValueError whose
message says what to change. The bottom layer, so that agents, mechanisms and the
engine all validate alike without importing each other."""

from __future__ import annotations

import math


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def positive_int(name: str, value) -> None:
    require(is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")


def finite_in(name: str, value, low: float, high: float, low_open=False, high_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    require(ok, f"{name} must be a finite number in {interval}, got {value!r}")


def positive(name: str, value) -> None:
    finite_in(name, value, 0, math.inf, low_open=True)


def non_negative(name: str, value) -> None:
    finite_in(name, value, 0, math.inf)


def choice(name: str, value, valid: tuple) -> None:
    require(value in valid, f"{name} must be one of {valid}, got {value!r}")


def hidden_layers(name: str, hidden) -> None:
    require(isinstance(hidden, tuple) and all(is_int(h) and h >= 1 for h in hidden),
            f"{name} must be a tuple of positive layer widths, got {hidden!r}")


def image_observations(who_needs: str, env, env_name: str) -> None:
    """`who_needs` (e.g. "X needs") image observations [N, H, W, C]."""
    shape = env.observation_spec.shape
    require(len(shape) == 4, f"{who_needs} image observations [N, H, W, C]; {env_name} "
                             f"gives {shape}")


class PartRegistry(dict):
    """Config type -> the class of the part it builds (agents.AGENTS,
    mechanism.MECHANISMS); `lookup` refuses an unregistered type, listing the valid."""

    def __init__(self, kind: str, entries: dict):
        super().__init__(entries)
        self.kind = kind

    def register(self, config_type: type, part_class: type) -> None:
        """Make `part_class` the part of configs of `config_type`."""
        self[config_type] = part_class

    def lookup(self, config) -> type:
        """The part of `config`'s type, or of the nearest registered base class."""
        for kind in type(config).__mro__:
            if kind in self:
                return self[kind]
        raise ValueError(f"unknown {self.kind} config {type(config).__name__}; "
                         f"valid: {', '.join(t.__name__ for t in self)}")

    def check(self, config, env, run) -> None:
        """Raise ValueError on a config its part cannot work with (`check_config`)."""
        self.lookup(config).check_config(config, env, run)
