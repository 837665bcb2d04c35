"""Cleanup's cell codes, actions, colours and maps (SPEC §1.3, §1.4)."""

from __future__ import annotations

import numpy as np

# Cell codes of `cells` (the low 7 bits); BEAM_BIT marks this step's clean-beam cells.
EMPTY, WALL, APPLE, APPLE_CELL, DIRTY, CLEAN = 0, 1, 2, 3, 4, 5
BEAM_BIT = 0x80
LEFT, RIGHT, UP, DOWN, STAY, CLEAN_ACTION = range(6)
ACTION_NAMES = ("left", "right", "up", "down", "stay", "clean")
MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0], [0, 0], [0, 0]], np.int32)

# RGB by cell code; an apple cell without an apple is drawn as empty ground.
CELL_COLOURS = np.array([(0, 0, 0), (180, 180, 180), (0, 255, 0), (0, 0, 0),
                         (113, 75, 24), (99, 156, 194)], np.float32)
AGENT_COLOURS = np.array([(159, 67, 255), (2, 81, 154), (204, 0, 204)], np.float32)
BEAM_COLOUR = np.array((100, 255, 255), np.float32)

MAP_7X7 = (
    "@@@@@@@",
    "@H  PB@",
    "@H   B@",
    "@    B@",
    "@    B@",
    "@ P  B@",
    "@@@@@@@",
)
MAP_10X10 = (
    "@@@@@@@@@@",
    "@HH   P B@",
    "@RR    BB@",
    "@HH     B@",
    "@RR    BB@",
    "@HH P   B@",
    "@RR    BB@",
    "@HH     B@",
    "@RRP   BB@",
    "@@@@@@@@@@",
)
_CHAR_CODES = {"@": WALL, "H": DIRTY, "R": CLEAN, "B": APPLE_CELL, " ": EMPTY, "P": EMPTY}


def parse_map(rows: tuple[str, ...]) -> np.ndarray:
    """u8[H, W] cell codes of an ASCII map (the SPEC's legend)."""
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every row of the map must have the same length")
    try:
        return np.array([[_CHAR_CODES[ch] for ch in row] for row in rows], np.uint8)
    except KeyError as err:
        raise ValueError(f"unknown map character {err.args[0]!r}") from None
