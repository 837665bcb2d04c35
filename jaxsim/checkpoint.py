"""Orbax checkpoints of a whole run: the training state of every seed (environment
keys, agents, mechanism, replay), the per-chunk metrics so far and the config.

A checkpoint is written between chunks, asynchronously, and the last `keep` are kept.
`restore` refuses a checkpoint written by another config (everything but the run's
length and logging must match) or one that cannot be read, saying which and why,
and never touches the files it refuses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

import agents as agents_lib
import mechanism as mechanism_lib
from jaxsim.config import TrainConfig
from jaxsim.distributed import global_history, history_target, host_rows

# Keys of the config that may change between a run and its resumption: the run's
# length (train further) is the only one; everything else changes the program.
RESUMABLE_CHANGES = ("episodes",)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run."""


def config_json(config: TrainConfig) -> dict:
    out = dataclasses.asdict(config)
    out["agent"] = agents_lib.config_to_json(config.agent)
    out["agent_type"] = type(config.agent).__name__
    out["mechanism_type"] = type(config.mechanism).__name__
    out["env_params"] = dict(config.env_params)
    return json.loads(json.dumps(out))  # tuples -> lists, as they come back from disk


def _part_types(part: str) -> dict[str, type]:
    """The config classes a checkpoint's `part` ("agent", "mechanism") may name: the
    registered ones, by class name."""
    registry = agents_lib.AGENTS if part == "agent" else mechanism_lib.MECHANISMS
    return {cls.__name__: cls for cls in registry}


def _fields_from_json(kind, saved: dict) -> dict:
    """`saved`'s values for the fields of dataclass `kind`, lists back to tuples (as
    JSON wrote them); fields it lacks keep their defaults."""
    as_tuple = lambda v: tuple(as_tuple(x) for x in v) if isinstance(v, list) else v
    return {f.name: as_tuple(saved[f.name]) for f in dataclasses.fields(kind) if f.name in saved}


def config_from_json(saved: dict) -> TrainConfig:
    """The TrainConfig that `config_json` wrote (the inverse, up to fields added since,
    which take their defaults)."""
    parts = {}
    for part in ("agent", "mechanism"):
        kind = _part_types(part).get(saved.get(f"{part}_type"))
        if kind is None:
            raise CheckpointError(f"the checkpoint's config names an unknown {part} type "
                                  f"{saved.get(f'{part}_type')!r}")
        if part == "agent":
            try:
                parts[part] = agents_lib.config_from_json(kind.__name__, saved[part],
                                                          _fields_from_json)
            except (KeyError, ValueError) as error:
                raise CheckpointError(f"the checkpoint's agent config cannot be read: "
                                      f"{error}") from error
        else:
            parts[part] = kind(**_fields_from_json(kind, saved[part]))
    top = _fields_from_json(TrainConfig, saved)
    top["env_params"] = dict(saved.get("env_params", {}))
    return TrainConfig(**{**top, **parts})


def _pick(steps: list[int], episode: int | None, directory: str) -> int:
    """`episode` if a checkpoint of it is among `steps`, the latest for None; else why not."""
    if not steps:
        raise CheckpointError(f"no checkpoint in {directory}")
    if episode is not None and episode not in steps:
        raise CheckpointError(f"no checkpoint of episode {episode} in {directory}; "
                              f"there are {steps}")
    return steps[-1] if episode is None else episode


def _read(directory: str, episode: int | None, read):
    """`(read(reader, episode), episode)` for checkpoint `episode` of `directory`
    (default: the latest), through a read-only reader; a missing directory, checkpoint
    or unreadable item is refused with the reason, and nothing is created."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such directory")
    reader = _state_reader(directory)
    try:
        episode = _pick(list(reader.all_steps()), episode, directory)
        try:
            return read(reader, episode), episode
        except Exception as error:  # noqa: BLE001 - any failure to read is the same news
            raise CheckpointError(f"checkpoint {directory}/{episode} cannot be read "
                                  f"({type(error).__name__}: {error})") from error
    finally:
        reader.close()


def saved_config(directory: str, episode: int | None = None) -> tuple[TrainConfig, int]:
    """(the config that wrote checkpoint `episode` of `directory` (default: the
    latest), that episode), read from the checkpoint alone; refused with the reason."""
    meta, episode = _read(directory, episode, lambda reader, step: reader.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    return config_from_json(meta["config"]), episode


def _with_defaults(saved: dict, config_type) -> dict:
    """`saved` with the fields of `config_type` that it lacks at their defaults."""
    added = {f.name: f.default for f in dataclasses.fields(config_type)
             if f.name not in saved and f.default is not dataclasses.MISSING}
    return json.loads(json.dumps({**added, **saved}))


def _config_differences(saved: dict, current: dict, config: TrainConfig | None = None
                        ) -> list[str]:
    """What differs between a checkpoint's config and this run's, both as
    `config_json`. A field added to TrainConfig (or to the agent's or mechanism's
    config, given `config`) after the checkpoint was written counts as its default."""
    saved = _with_defaults(saved, TrainConfig)
    if config is not None:
        for part in ("agent", "mechanism"):
            kind = type(getattr(config, part))
            if isinstance(saved.get(part), dict) and saved.get(f"{part}_type") == kind.__name__:
                saved[part] = _with_defaults(saved[part], kind)
        if isinstance(config.agent, agents_lib.MixedConfig) and isinstance(
                saved.get("agent"), dict) and isinstance(saved["agent"].get("members"), list):
            kinds = {type(m).__name__: type(m) for m in config.agent.members}
            saved["agent"]["members"] = [
                _with_defaults(m, kinds[m["type"]])
                if isinstance(m, dict) and m.get("type") in kinds else m
                for m in saved["agent"]["members"]]
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in keys
            if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)]


def _state_reader(directory: str) -> ocp.CheckpointManager:
    """A manager that reads the `state` item of a run's checkpoints (its metadata or
    its arrays, without a target structure) and never writes. Every item a checkpoint
    holds gets its handler, else Orbax warns on each read of the metadata that
    "history" and "meta" cannot be restored."""
    return ocp.CheckpointManager(directory, item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "history": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler()})


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


class Checkpointer:
    """Saves and restores one run's checkpoints under `directory` (one folder per
    episode count)."""

    def __init__(self, directory: str, config: TrainConfig, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.config = config
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, episode: int, state, history: dict[str, Any], extra: dict,
             runs: NamedSharding | None = None) -> None:
        """Start writing the checkpoint of `episode`; the host goes on training. With
        several processes every host calls it with its own runs' history and `runs`,
        the run axis's sharding."""
        meta = {"config": config_json(self.config), "episode": int(episode), **extra}
        history = jax.tree.map(np.asarray, history)
        if runs is not None and jax.process_count() > 1:
            history = global_history(history, runs)
        self.manager.save(episode, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            history=ocp.args.StandardSave(history),
            meta=ocp.args.JsonSave(meta),
        ))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def _shape_differences(self, episode: int, abstract_state) -> list[str]:
        """Leaves whose saved shape differs from `abstract_state`'s, read from the
        checkpoint's metadata alone, so that a mismatch is named before any restore."""
        reader = _state_reader(self.directory)
        try:
            saved = reader.item_metadata(episode)["state"]
        except Exception:  # noqa: BLE001 - unreadable metadata: restore() says why
            return []
        finally:
            reader.close()
        saved = {_leaf_name(path): tuple(leaf.shape)
                 for path, leaf in jax.tree_util.tree_leaves_with_path(saved)
                 if hasattr(leaf, "shape")}
        wanted = {_leaf_name(path): tuple(leaf.shape)
                  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)}
        return [f"{name}: checkpoint {saved[name]} vs now {shape}"
                for name, shape in wanted.items()
                if name in saved and saved[name] != shape][:8]

    def restore(self, abstract_state, episode: int | None = None,
                runs: NamedSharding | None = None):
        """(state, history, meta) of checkpoint `episode` (default: the latest); with
        `runs` (the run axis's sharding) each host gets its own runs' history."""
        steps = self.steps()
        episode = _pick(steps, episode, self.directory)
        where = os.path.join(self.directory, str(episode))
        try:
            meta = self.manager.restore(episode, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception as error:  # noqa: BLE001 - any failure to read is the same news
            raise CheckpointError(f"checkpoint {where} cannot be read ({type(error).__name__}: "
                                  f"{error}); older ones: {steps[:-1] or 'none'}") from error
        differences = _config_differences(meta["config"], config_json(self.config),
                                          self.config)
        if differences:
            raise CheckpointError(f"checkpoint {where} was written by another config:\n  "
                                  + "\n  ".join(differences))
        mismatched = self._shape_differences(episode, abstract_state)
        if mismatched:
            raise CheckpointError(
                f"checkpoint {where} holds a state of other shapes than this config builds "
                "(a replay buffer that holds every transition grows with `episodes`: resume "
                "with the run's own `episodes`, and use stop_after to end a sitting early):"
                "\n  " + "\n  ".join(mismatched))
        try:
            target = None
            if runs is not None and jax.process_count() > 1:
                target = history_target(
                    self.manager.item_metadata(episode)["history"], runs)
            restored = self.manager.restore(episode, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                history=ocp.args.StandardRestore(target),
            ))
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} is damaged ({type(error).__name__}: "
                                  f"{error}); older ones: {steps[:-1] or 'none'}") from error
        history = host_rows(restored["history"], axis=1)
        return restored["state"], history, meta


# The mechanism fields that turn an incentive network's parameters into rewards: a
# network loaded into a run must be read by the same function it learned under.
INCENTIVE_FUNCTION_FIELDS = ("incentive_max", "incentive_activation", "logit_bound",
                             "logit_bound_mode", "incentive_input", "activation",
                             "output_type", "designer_input")


def incentive_function_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """The INCENTIVE_FUNCTION_FIELDS on which two configs' mechanisms differ (a field
    added since the checkpoint counts as its default)."""
    if type(saved.mechanism) is not type(current.mechanism):
        return [f"mechanism: checkpoint {type(saved.mechanism).__name__} vs now "
                f"{type(current.mechanism).__name__}"]
    fields = {f.name for f in dataclasses.fields(current.mechanism)}
    out = []
    for name in INCENTIVE_FUNCTION_FIELDS:
        if name in fields:
            was, now = getattr(saved.mechanism, name), getattr(current.mechanism, name)
            if was != now:
                out.append(f"mechanism.{name}: checkpoint {was!r} vs now {now!r}")
    return out


def check_mechanism_source(directory: str, config: TrainConfig,
                           episode: int | None = None) -> None:
    """Refuses, before anything compiles, a checkpoint whose incentive network another
    function read (its activation, bound, scale or output layout differ from `config`'s)."""
    saved, at = saved_config(directory, episode)
    problems = incentive_function_differences(saved, config)
    if problems:
        raise CheckpointError(f"the incentive network of {os.path.abspath(directory)}/{at} "
                              "learned under another incentive function than this run's:\n  "
                              + "\n  ".join(problems))


def load_mechanism(directory: str, mechanism_state, part: str = "eta", episode: int | None = None):
    """`mechanism_state` (stacked over seeds) with its `part` (default: IQ-Flow's or
    ID's incentive network) replaced by the one a run checkpointed in `directory`:
    seed i takes the checkpoint's seed i, so the run may have as many seeds as the
    checkpoint or fewer. Refused with the reason when the checkpoint has no such part,
    too few seeds or other shapes; the checkpoint is only read. (A network learnt under
    another incentive function the runner refuses first: `check_mechanism_source`.)"""
    def read_state(reader, step):
        target = None
        if jax.process_count() > 1:  # every host reads it whole, onto a device of its own
            local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=local),
                reader.item_metadata(step)["state"])
        return reader.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]

    saved, episode = _read(directory, episode, read_state)
    directory = os.path.abspath(directory)
    mechanism = saved.get("mechanism") if isinstance(saved, dict) else None
    if not isinstance(mechanism, dict) or part not in mechanism:
        raise CheckpointError(f"checkpoint {directory}/{episode} holds no mechanism "
                              f"'{part}' (is it a run of IQ-Flow or ID?)")
    current = getattr(mechanism_state, part)
    seeds = jax.tree.leaves(current)[0].shape[0]
    loaded_leaves = jax.tree.leaves(mechanism[part])
    current_leaves, treedef = jax.tree.flatten(current)
    problems = []
    if len(loaded_leaves) != len(current_leaves):
        problems.append(f"{len(loaded_leaves)} arrays vs {len(current_leaves)} now")
    else:
        for got, want in zip(loaded_leaves, current_leaves, strict=True):
            if got.shape[0] < seeds or got.shape[1:] != want.shape[1:]:
                problems.append(f"{got.shape} vs {want.shape} now (seeds first)")
    if problems:
        raise CheckpointError(f"the '{part}' of checkpoint {directory}/{episode} does not fit "
                              "this run: " + "; ".join(problems[:4]))
    # Orbax restores dicts with sorted keys, the order flax's parameter dicts flatten in.
    loaded = [np.asarray(x)[:seeds].astype(want.dtype)
              for x, want in zip(loaded_leaves, current_leaves, strict=True)]
    return mechanism_state.replace(**{part: jax.tree.unflatten(treedef, loaded)}), episode
