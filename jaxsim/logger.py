"""Weights & Biases logging from the host, between compiled chunks.

Offline by default, so nothing needs the network; `mode="online"` syncs live and
`mode="disabled"` turns logging off. `read_history` reads an offline run back.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from typing import Any, Literal, Mapping

import numpy as np

WandbMode = Literal["online", "offline", "disabled"]
WANDB_MODES = ("online", "offline", "disabled")


class WandbLogger:
    """A thin wrapper over one W&B run; every value logged is a plain float."""

    def __init__(self, mode: WandbMode = "offline", *, project: str = "iqflow-jax",
                 name: str | None = None, config: Mapping[str, Any] | None = None,
                 group: str | None = None, directory: str | None = None):
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        # Our `agents` package shares its name with a library W&B's Weave integration
        # watches for; without this W&B prints an advert for Weave on every run.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb

        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        self.run = wandb.init(
            mode=mode, project=project, name=name, group=group, dir=directory,
            config=dict(config or {}), reinit="finish_previous",
            settings=wandb.Settings(silent=True, x_disable_stats=True, save_code=False),
        )

    @property
    def run_dir(self) -> str | None:
        """The folder of this run's files (offline: what `wandb sync` uploads later)."""
        return None if self.run is None else os.path.dirname(self.run.dir)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: float(v) for k, v in metrics.items()}, step=int(step))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Seed-averaged scalars from per-seed arrays: `f32[seeds, N]` becomes `name/0`,
    `name/1`, ... (one entry per agent or action), averaged over the seed axis."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        value = np.asarray(value, np.float64)
        mean = value.mean(axis=0) if value.ndim else value
        if mean.ndim == 0:
            flat[prefix + name] = float(mean)
        else:
            for index in np.ndindex(mean.shape):
                flat[prefix + name + "/" + "/".join(map(str, index))] = float(mean[index])
    return flat


def read_history(run_dir: str) -> list[dict[str, Any]]:
    """The history rows stored in an offline run's `run-*.wandb` file.

    The file is a LevelDB-style log (32 KiB blocks of records, each with a 7-byte
    header: crc32c, length, type) after a 7-byte W&B header; each record is a
    protobuf `Record`, of which we keep the `history` ones.
    """
    from wandb.proto import wandb_internal_pb2

    paths = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    if not paths:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    data = open(paths[0], "rb").read()
    block, position, pending, rows = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        pending += data[position:position + length]
        position += length
        if kind in (1, 4):  # FULL or LAST piece of a record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                             for item in record.history.item})
    return rows
