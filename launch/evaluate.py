"""Deterministic evaluation, and the saved-model format that ``colonyrl evaluate`` loads.

A saved model is a folder with two files:

* ``model.pt``: ``{"format", "config", "state_dict", "counters"}`` of plain tensors and primitive
  values, loadable with ``torch.load(path, weights_only=True)`` (nothing in it can run code);
  colonyrl rebuilds the actor from ``config``.
* ``policy.pt2``: the deterministic policy as a ``torch.export`` program with a dynamic batch
  dimension: plain torch runs it without colonyrl,
  ``torch.export.load("policy.pt2").module()(obs) -> action``; a recurrent policy's takes and
  returns its state, ``(obs, state) -> (action, state)`` (zeros where an episode starts).

A run that normalized observations (``EnvConfig.normalize.obs``) saves its statistics, frozen, in
``model.pt`` and bakes them into ``policy.pt2`` (:class:`NormalizedExport`), so both act on raw
observations; evaluation during training uses the Learner's statistics, frozen, the same way.

A tracked run also logs both as its ``model`` artifact, with the MLflow model over ``policy.pt2``
(launch/mlflow_model.py): :func:`load_model` takes a run id, ``runs:/<run id>/model`` or
``models:/<name>/<version>`` as well as a folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from colonyrl.agents.base import Algorithm, Policy, cpu_policy, initial_state
from colonyrl.agents.networks import export_module
from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.normalization import ObsNormalizer, copy_obs_statistics, empty_obs_statistics, obs_shapes

__all__ = ["ModelFileError", "EvalResult", "evaluate", "save_model", "load_model", "MODEL_FORMAT", "EVAL_WORKER_INDEX",
           "FINAL_EVAL_WORKER_INDEX", "NormalizedPolicy", "NormalizedExport", "learner_obs_normalizer"]

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
             deterministic: bool = True, worker_index: int = EVAL_WORKER_INDEX,
             obs_normalizer: ObsNormalizer | None = None) -> EvalResult:
    """Mean and std of the return over ``episodes`` episodes, one per sub-env, run side by side
    (sub-env seeds from ``seed`` and ``worker_index``, envs/factory.py ``env_seeds``), acting with
    ``agent``'s policy (an algorithm's own policy, or a policy on its own). A stateful (recurrent)
    policy starts from its initial state, carries it step by step and resets it where an episode
    starts (the step after an autoreset step), as a CWorker does. ``obs_normalizer``: the frozen
    observation normalization the policy was trained with (:func:`learner_obs_normalizer`); the
    env's own wrappers (``EnvConfig.wrappers``) apply as in training, since ``env`` builds them."""
    # a CPU copy of a policy trained on a GPU: the env gives numpy, the policy acts on the CPU
    policy: Policy = cpu_policy(agent.policy if isinstance(agent, Algorithm) else agent)
    if obs_normalizer is not None:
        policy = NormalizedPolicy(policy, obs_normalizer)
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


def save_model(folder: str | os.PathLike[str], algo: Algorithm, config: Any, counters: dict[str, int],
               obs_normalizer: ObsNormalizer | None = None) -> Path:
    """Write ``model.pt`` (the acting weights) and ``policy.pt2`` into ``folder`` (each atomically:
    temp file, rename); with ``obs_normalizer``, both normalize raw observations as training did."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "format": MODEL_FORMAT,
        "config": dataclasses.asdict(config),
        "state_dict": {k: torch.from_numpy(v) for k, v in algo.acting_weights().items()},
        "counters": dict(counters),
    }
    module = cpu_policy(algo.policy).export_module()  # policy.pt2 runs on the CPU, whatever the Learner's device
    if obs_normalizer is not None:
        state["normalizer"] = obs_normalizer.state_dict()  # "rms" (a Dict: "rms_keys"), clip, epsilon
        module = NormalizedExport.of(module, obs_normalizer)
    _atomic(folder / "model.pt", lambda p: torch.save(state, p))
    space = config.components().spaces().observation
    _atomic(folder / "policy.pt2", lambda p: export_module(module, space, str(p)))
    return folder


def load_model(path: str | os.PathLike[str], tracking_uri: str | None = None) -> tuple[Policy, Any, dict[str, int]]:
    """(policy with the saved acting weights, TrainConfig, counters) from a model folder or file, or
    from MLflow (at ``tracking_uri``; None: ``MLFLOW_TRACKING_URI``, else MLflow's default): a run id,
    ``runs:/<run id>/model`` or ``models:/<name>/<version>`` (the run's ``model`` artifact holds
    ``model.pt``, launch/mlflow_model.py)."""
    ref = os.fspath(path)
    if not Path(ref).exists() and (ref.startswith(("runs:/", "models:/")) or _RUN_ID.fullmatch(ref)):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="colonyrl-model-") as tmp:
            return _load_file(_download(ref, tracking_uri, Path(tmp)))
    file = Path(ref) / "model.pt" if Path(ref).is_dir() else Path(ref)
    if not file.exists():
        raise ModelFileError(f"no saved model at {file} (expected a run folder with model.pt, a model.pt file, an "
                             "MLflow run id, runs:/<run id>/model or models:/<name>/<version>)")
    return _load_file(file)


#: An MLflow run id: 32 hex digits (a uuid4 without dashes).
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _download(ref: str, tracking_uri: str | None, folder: Path) -> Path:
    """``model.pt`` of the MLflow model ``ref`` (a run id: its ``runs:/<id>/model``), downloaded into
    ``folder``; ModelFileError naming ``ref`` and the store for an unknown run, model or version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = f"runs:/{ref}/model" if _RUN_ID.fullmatch(ref) else ref.rstrip("/")
    store = tracking_uri or mlflow.get_tracking_uri()
    try:  # only model.pt: the run's model artifact also holds the MLflow model (policy.pt2 twice)
        source = uri if uri.startswith("runs:/") else _registered_source(uri, store)
        file = mlflow.artifacts.download_artifacts(f"{source}/model.pt", dst_path=str(folder), tracking_uri=store)
    except MlflowException as e:
        raise ModelFileError(f"no colonyrl model at {uri} in the MLflow store {store} ({e.message})") from e
    return Path(file)


def _registered_source(uri: str, store: str) -> str:
    """Where ``models:/<name>/<version>`` (or ``models:/<name>@<alias>``) lives, asked of the registry
    at ``store`` (MLFLOW_REGISTRY_URI if set): MLflow's own ``models:/`` resolution asks the global
    registry URI, whatever ``tracking_uri`` a download is given (mlflow/store/artifact/models_artifact_repo.py)."""
    import mlflow

    name, _, version = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    if not name or not (version.isdigit() or (alias and not version)):
        raise ModelFileError(f"{uri} is no registered model version: models:/<name>/<version> or models:/<name>@<alias>")
    client = mlflow.MlflowClient(tracking_uri=store)
    if alias:
        version = client.get_model_version_by_alias(name, alias).version
    return client.get_model_version_download_uri(name, version)


def _load_file(file: Path) -> tuple[Policy, Any, dict[str, int]]:
    from colonyrl.config import from_dict
    from colonyrl.launch.config import TrainConfig

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
    saved = state.get("normalizer")
    if saved is not None:  # trained on normalized observations: act on raw ones through them
        policy = NormalizedPolicy(policy, ObsNormalizer.from_state(saved))
    return policy, config, state.get("counters", {})


def learner_obs_normalizer(learner: Any) -> ObsNormalizer | None:
    """The Learner's observation statistics, frozen, with its train env's clip and epsilon (empty
    statistics before any data: what the CWorkers use then too); None when the train env does not
    normalize observations."""
    config = learner.components.env.normalize
    if not config.obs:
        return None
    stats = learner.normalizer
    if stats is not None and stats.obs is not None:
        return ObsNormalizer(copy_obs_statistics(stats.obs), config.clip_obs, config.epsilon)
    shapes = obs_shapes(learner.components.spaces().observation, config)
    assert shapes is not None
    return ObsNormalizer(empty_obs_statistics(shapes), config.clip_obs, config.epsilon)


class NormalizedPolicy:
    """A policy acting on raw observations through frozen normalization; everything else is the
    inner policy's (its state, extras, weights)."""

    def __init__(self, policy: Any, normalizer: ObsNormalizer) -> None:
        self.policy, self.normalizer = policy, normalizer

    def act(self, obs: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        return self.policy.act(self.normalizer(obs), *args, **kwargs)

    def bootstrap(self, obs: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        return self.policy.bootstrap(self.normalizer(obs), *args, **kwargs)

    def export_module(self) -> torch.nn.Module:
        return NormalizedExport.of(self.policy.export_module(), self.normalizer)

    def __getattr__(self, name: str) -> Any:
        if name in ("policy", "normalizer"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.policy, name)


class NormalizedExport(torch.nn.Module):
    """``obs -> policy(normalized obs)`` for ``torch.export``: the frozen statistics in front of an
    exported policy, computed in float64 as the CWorkers' numpy (envs/normalization.py
    ``normalize_obs``), so plain torch on raw observations gives the actions the framework gives.
    A Dict observation (a dict of tensors) has its normalized keys' statistics; its other keys
    reach the policy as they are."""

    def __init__(self, module: torch.nn.Module, normalizer: ObsNormalizer) -> None:
        super().__init__()
        self.policy = module
        stats = normalizer.rms
        #: A Dict's normalized keys, in order (None: one tensor); their buffers are numbered, as a
        #: key need not be a valid buffer name.
        self.keys = list(stats) if isinstance(stats, dict) else None
        for i, rms in enumerate(stats.values() if isinstance(stats, dict) else (stats,)):
            suffix = "" if self.keys is None else f"_{i}"
            self.register_buffer(f"mean{suffix}", torch.from_numpy(rms.mean.copy()))
            self.register_buffer(f"std{suffix}", torch.from_numpy(np.sqrt(rms.var + normalizer.epsilon)))
        self.clip = float(normalizer.clip)

    @staticmethod
    def of(module: torch.nn.Module, normalizer: ObsNormalizer) -> NormalizedExport:
        """The wrapper for ``module``: a stateful policy's (``state_shape``) takes its state too."""
        return (_NormalizedStatefulExport if getattr(module, "state_shape", None) is not None
                else NormalizedExport)(module, normalizer)

    def normalize(self, obs: Any) -> Any:
        if self.keys is None:
            return self._scaled(obs, self.mean, self.std)
        out = dict(obs)
        for i, key in enumerate(self.keys):
            out[key] = self._scaled(obs[key], getattr(self, f"mean_{i}"), getattr(self, f"std_{i}"))
        return out

    def _scaled(self, obs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        x = ((obs.to(torch.float64) - mean) / std).clamp(-self.clip, self.clip)
        return x.to(obs.dtype if obs.is_floating_point() else torch.float32)

    def forward(self, obs: Any) -> Any:
        return self.policy(self.normalize(obs))


class _NormalizedStatefulExport(NormalizedExport):
    """:class:`NormalizedExport` of a stateful policy: ``(obs, state) -> (env action, next state)``."""

    def __init__(self, module: torch.nn.Module, normalizer: ObsNormalizer) -> None:
        super().__init__(module, normalizer)
        self.state_shape = tuple(module.state_shape)

    def forward(self, obs: Any, state: torch.Tensor) -> Any:  # type: ignore[override]
        return self.policy(self.normalize(obs), state)


def _atomic(target: Path, write: Any) -> None:
    # keep the suffix: torch.export.save insists on a '.pt2' name
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    write(tmp)
    os.replace(tmp, target)  # atomic on POSIX: readers see the old file or the new one, never half
