"""Cleanup in Jumanji's layout: `env` (the rules), `types` (the state), `constants`
(cell codes, actions, colours, maps), `rendering` (the map and the agents' windows)."""

from envs_jax.cleanup.constants import (ACTION_NAMES, AGENT_COLOURS, APPLE, APPLE_CELL,
                                        BEAM_BIT, BEAM_COLOUR, CELL_COLOURS, CLEAN,
                                        CLEAN_ACTION, DIRTY, DOWN, EMPTY, LEFT, MAP_7X7,
                                        MAP_10X10, MOVES, RIGHT, STAY, UP, WALL, parse_map)
from envs_jax.cleanup.env import Cleanup, cleanup_7x7, cleanup_10x10
from envs_jax.cleanup.types import CleanupState

__all__ = ["ACTION_NAMES", "AGENT_COLOURS", "APPLE", "APPLE_CELL", "BEAM_BIT", "BEAM_COLOUR",
           "CELL_COLOURS", "CLEAN", "CLEAN_ACTION", "DIRTY", "DOWN", "EMPTY", "LEFT",
           "MAP_7X7", "MAP_10X10", "MOVES", "RIGHT", "STAY", "UP", "WALL", "Cleanup",
           "CleanupState", "cleanup_7x7", "cleanup_10x10", "parse_map"]
