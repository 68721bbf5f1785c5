"""Deterministic evaluation, and the saved-model format that ``colonyrl evaluate`` loads.

A saved model is a folder with two files:

* ``model.pt``: ``{"format", "config", "state_dict", "counters"}`` of plain tensors and primitive
  values, loadable with ``torch.load(path, weights_only=True)`` (nothing in it can run code);
  colonyrl rebuilds the actor from ``config``.
* ``policy.pt2``: the deterministic policy as a ``torch.export`` program with a dynamic batch
  dimension: plain torch runs it without colonyrl,
  ``torch.export.load("policy.pt2").module()(obs) -> action``; a recurrent policy's takes and
  returns its state, ``(obs, state) -> (action, state)`` (zeros where an episode starts).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from colonyrl.agents.base import Algorithm, Policy, initial_state
from colonyrl.agents.networks import export_module
from colonyrl.envs.factory import EnvConfig

__all__ = ["ModelFileError", "EvalResult", "evaluate", "save_model", "load_model", "MODEL_FORMAT", "EVAL_WORKER_INDEX",
           "FINAL_EVAL_WORKER_INDEX"]

MODEL_FORMAT = "colonyrl-model/1"
#: Evaluation envs are seeded as this worker index, apart from every training worker.
EVAL_WORKER_INDEX = 1_000_000
#: The final evaluation's own seeds, apart from the periodic evaluations' (which may have decided
#: an early stop: reusing their episodes would report the best of many looks at the same starts).
FINAL_EVAL_WORKER_INDEX = 2_000_000


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted or not a colonyrl model."""


class EvalResult(NamedTuple):
    mean: float
    std: float
    returns: np.ndarray
    lengths: np.ndarray


def evaluate(agent: Policy | Algorithm, env: EnvConfig, episodes: int = 10, seed: int = 0,
             deterministic: bool = True, worker_index: int = EVAL_WORKER_INDEX) -> EvalResult:
    """Mean and std of the return over ``episodes`` episodes, one per sub-env, run side by side
    (sub-env seeds from ``seed`` and ``worker_index``, envs/factory.py ``env_seeds``), acting with
    ``agent``'s policy (an algorithm's own policy, or a policy on its own). A stateful (recurrent)
    policy starts from its initial state, carries it step by step and resets it where an episode
    starts (the step after an autoreset step), as a CWorker does."""
    policy: Policy = agent.policy if isinstance(agent, Algorithm) else agent
    venv, obs = env.make(num_envs=episodes, seed=seed, worker_index=worker_index)
    try:
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        running = np.ones(episodes, dtype=bool)
        state, episode_start, prev_done = initial_state(policy, episodes), running.copy(), ~running
        while running.any():
            if state is None:
                action = policy.act(obs, deterministic=deterministic).env_action
            else:
                out = policy.act(obs, deterministic, state=state, episode_start=episode_start)
                action, state, episode_start = out.env_action, out.state, prev_done
            obs, reward, terminated, truncated, _ = venv.step(action)
            prev_done = terminated | truncated
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)  # each sub-env counts its first episode only
    finally:
        venv.close()
    return EvalResult(float(returns.mean()), float(returns.std()), returns, lengths)


def save_model(folder: str | os.PathLike[str], algo: Algorithm, config: Any, counters: dict[str, int]) -> Path:
    """Write ``model.pt`` (the acting weights) and ``policy.pt2`` into ``folder`` (each atomically:
    temp file, rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "format": MODEL_FORMAT,
        "config": dataclasses.asdict(config),
        "state_dict": {k: torch.from_numpy(v) for k, v in algo.acting_weights().items()},
        "counters": dict(counters),
    }
    _atomic(folder / "model.pt", lambda p: torch.save(state, p))
    space = config.components().spaces().observation
    _atomic(folder / "policy.pt2", lambda p: export_module(algo.policy.export_module(), space, str(p)))
    return folder


def load_model(path: str | os.PathLike[str]) -> tuple[Policy, Any, dict[str, int]]:
    """(policy with the saved acting weights, TrainConfig, counters) from a model folder or file."""
    from colonyrl.config import from_dict
    from colonyrl.launch.config import TrainConfig

    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.exists():
        raise ModelFileError(f"no saved model at {file} (expected a run folder with model.pt)")
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:
        raise ModelFileError(f"{file} is not a readable colonyrl model ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{file} is not a colonyrl model (format {MODEL_FORMAT!r} expected)")
    config = from_dict(TrainConfig, state["config"])
    components = config.components()
    policy = components.build_policy(components.spaces())
    policy.set_weights({k: v.numpy() for k, v in state["state_dict"].items()})
    return policy, config, state.get("counters", {})


def _atomic(target: Path, write: Any) -> None:
    # keep the suffix: torch.export.save insists on a '.pt2' name
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    write(tmp)
    os.replace(tmp, target)  # atomic on POSIX: readers see the old file or the new one, never half
