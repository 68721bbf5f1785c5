"""Checkpoints: everything needed to continue a run exactly, written atomically, loaded safely.

A checkpoint is one ``torch.save`` file of tensors and primitive values only (the config as a
dict, counters, the algorithm's weights and optimizer, and every worker's env and RNG state),
so ``torch.load(weights_only=True)`` reads it and nothing in it can run code. It is written to a
temporary file and renamed, so a reader sees the old checkpoint or the new one, never half of one;
the last ``keep`` are kept.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "find_checkpoint"]

CHECKPOINT_FORMAT = "colonyrl-checkpoint/1"
_PREFIX = "ckpt-"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted or not a colonyrl checkpoint."""


def save_checkpoint(folder: str | os.PathLike[str], learner: Any, config: Any, run_id: str | None,
                    keep: int = 3) -> Path:
    """Write ``ckpt-<env steps>.pt`` into ``folder`` atomically; keep the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # The config as it is now: runtime changes (a new lr, a replaced env) are part of the state.
    current = config.replace(env=learner.components.env, algo=learner.components.algo,
                             storage=learner.components.storage, test_env=learner.components.test_env)
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(current),
        "run_id": run_id,
        "learner": learner.state_dict(workers=learner.at_round_boundary()),
        "saved_at": time.time(),
    }
    target = folder / f"{_PREFIX}{learner.env_steps:012d}.pt"
    tmp = folder / f".{target.stem}.tmp{os.getpid()}.pt"
    torch.save(state, tmp)
    os.replace(tmp, target)
    for old in sorted(folder.glob(f"{_PREFIX}*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return target


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file, else the newest checkpoint in the folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob(f"{_PREFIX}*.pt"))
        if found:
            return found[-1]
    raise CheckpointError(f"no checkpoint at {path} (expected a {_PREFIX}*.pt file or a folder of them)")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint (file or folder) with ``weights_only=True``; clear errors when it is bad."""
    file = find_checkpoint(path)
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:  # truncated zip, flipped bytes, a pickle with code in it, ...
        raise CheckpointError(f"checkpoint {file} is unreadable (truncated or corrupted?): "
                              f"{type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file} is not a colonyrl checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    missing = {"config", "learner", "run_id"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {file} lacks {sorted(missing)}")
    state["path"] = str(file)
    return state


def export_dataset(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write the replay memories of a checkpoint (every GWorker's, concatenated) as an offline
    dataset ``out`` (``.npz``, storage/replay.py ``DATASET_KEYS``), which ``ReplayConfig.dataset_path``
    initialises another run's memories from. Returns the number of transitions written."""
    import numpy as np

    from colonyrl.config import from_dict
    from colonyrl.launch.config import TrainConfig
    from colonyrl.storage.replay import DATASET_KEYS

    state = load_checkpoint(checkpoint)
    cfg = from_dict(TrainConfig, state["config"])
    workers = state["learner"]["workers"]
    if workers is None:
        raise CheckpointError(f"{state['path']} holds no worker state (taken mid-round), so no replay memory")
    if cfg.storage.kind != "replay":
        raise CheckpointError(f"{state['path']} is a {cfg.algo.name} run with {cfg.storage.kind} storage: "
                              "no replay memory to export")
    spaces = cfg.components().spaces()
    parts = []
    for worker in workers:
        memory = cfg.storage.replace(dataset_path=None).build(spaces.observation, spaces.action, cfg.env.num_envs)
        memory.load_state_dict(worker["storage"])
        parts.append(memory.transitions())
    data = {key: np.concatenate([p[key] for p in parts]) for key in DATASET_KEYS}
    tmp = Path(out).with_name(f".{Path(out).name}.tmp{os.getpid()}")
    with open(tmp, "wb") as file:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(file, **data)
    os.replace(tmp, out)
    return int(len(data["obs"]))
