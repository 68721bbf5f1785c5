"""The trained policy as an MLflow model: the pyfunc flavor over ``policy.pt2``, with a signature.

A tracked run logs the folder ``<run dir>/model`` as its ``model`` artifact, so
``mlflow.pyfunc.load_model("runs:/<run id>/model")`` and ``mlflow models serve -m runs:/<run id>/model``
(or ``models:/<name>/<version>`` after ``--run.register-model NAME``) act as the deterministic
policy, normalizer inside, on raw observations (``runs:/<run id>/best_model`` too, the best periodic
evaluation's model with ``--save-best-model``: :class:`BestModel`):

* **no state** (every non-recurrent policy): input one tensor ``[B, *obs_shape]`` (numpy array, or a
  DataFrame of one column per observation dim), or for a Dict space one named tensor per key (a
  dict of arrays, or a DataFrame of one column per key); output the env actions ``[B, ...]``;
* **recurrent** policies: input ``{"obs": ..., "state": [B, *state_shape]}`` (a Dict space's keys in
  place of ``"obs"``), zeros where an episode starts; output ``{"action": ..., "state": ...}``.

The signature is built from the env's spaces (``ModelSignature`` of ``TensorSpec`` s:
https://mlflow.org/docs/latest/ml/model/signatures/), its output from running the policy once.

This file is the model's code too ("models from code", https://mlflow.org/docs/latest/ml/model/models-from-code/):
MLflow copies it into the model and runs it on load, so the model needs numpy, torch and mlflow but
not colonyrl. The part above ``# --- colonyrl side`` imports nothing else; the functions below it
import colonyrl inside, and run only in colonyrl (``__package__`` is empty when MLflow runs the
file on its own, and only then is :class:`PolicyModel` set as the model).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

__all__ = ["PolicyModel", "save_mlflow_model", "log_model", "register_model", "BestModel", "log_best_model", "read_best",
           "MODEL_FOLDER", "BEST_FOLDER", "BEST_MODEL_FOLDER", "BEST_ALIAS", "OBS_INPUT", "STATE_INPUT"]

#: The MLflow model's folder in the run folder, and its artifact path in the run.
MODEL_FOLDER = "model"
#: ``--save-best-model``: the model of the best periodic evaluation, in ``<run dir>/best/`` (``model.pt``,
#: ``policy.pt2``, ``best.json``), and its MLflow model (``best/best_model/``, the run's ``best_model`` artifact).
BEST_FOLDER, BEST_MODEL_FOLDER, BEST_INFO = "best", "best_model", "best.json"
#: With ``--register-model NAME`` too, the best model is a version of NAME that this alias points at.
BEST_ALIAS = "best"
#: Input names of a recurrent policy's model (a Dict space's keys replace ``obs``).
OBS_INPUT, STATE_INPUT = "obs", "state"


class PolicyModel(mlflow.pyfunc.PythonModel):
    """The deterministic policy of ``policy.pt2`` (``torch.export``, normalizer baked in), in plain torch.

    ``model_config``: ``obs_keys`` (a Dict space's keys, None for one tensor), ``obs_dtypes`` (one per
    key, or one), ``stateful`` (the program takes and returns a state)."""

    def load_context(self, context: Any) -> None:
        self.program = torch.export.load(context.artifacts["policy"]).module()
        config = dict(context.model_config or {})
        self.keys: list[str] | None = config.get("obs_keys")
        self.dtypes: list[str] = list(config["obs_dtypes"])
        self.stateful = bool(config.get("stateful", False))

    # ``np.ndarray``: a hint MLflow infers no schema from (its type_hints_no_signature_inference), so
    # the signature checks every input, dicts of arrays and DataFrames too.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        columns = _columns(model_input)
        if self.keys is None and not self.stateful:
            obs: Any = _tensor(model_input, self.dtypes[0])  # an array, or a DataFrame of obs dims
        else:
            if columns is None:
                raise TypeError(f"this model takes named inputs {self._names()}, got one unnamed "
                                f"{type(model_input).__name__}")
            missing = [k for k in self._names() if k not in columns]
            if missing:
                raise KeyError(f"missing model inputs {missing} (inputs: {self._names()})")
            obs = (_tensor(columns[OBS_INPUT], self.dtypes[0]) if self.keys is None else
                   {k: _tensor(columns[k], d) for k, d in zip(self.keys, self.dtypes, strict=True)})
        with torch.no_grad():
            if not self.stateful:
                return self.program(obs).numpy()
            action, state = self.program(obs, _tensor(columns[STATE_INPUT], "float32"))
        return {"action": action.numpy(), "state": state.numpy()}

    def _names(self) -> list[str]:
        return ([OBS_INPUT] if self.keys is None else list(self.keys)) + ([STATE_INPUT] if self.stateful else [])


def _columns(model_input: Any) -> dict[str, Any] | None:
    """Named inputs (a dict, or a DataFrame's columns, each row one env), or None for one tensor."""
    if isinstance(model_input, dict):
        return model_input
    if hasattr(model_input, "columns") and hasattr(model_input, "to_numpy"):  # a pandas DataFrame
        names = [str(c) for c in model_input.columns]
        if not all(n.isdigit() for n in names):  # named columns (MLflow names unnamed ones 0, 1, ...)
            return {n: np.stack([np.asarray(v) for v in model_input[c]]) for n, c in zip(names, model_input.columns,
                                                                                           strict=True)}
    return None


def _tensor(x: Any, dtype: str) -> torch.Tensor:
    if hasattr(x, "to_numpy"):  # DataFrame of one column per observation dim
        x = x.to_numpy()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.dtype(dtype))))


if not __package__:  # run by MLflow from inside the model folder (models from code), not imported
    mlflow.models.set_model(PolicyModel())


# --- colonyrl side: writing and registering the model ----------------------------------------------------


def _example(space: Any, n: int, seed: int = 0) -> Any:
    """``n`` samples of ``space`` stacked as numpy arrays (a dict of them for a Dict space)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return {k: _example(sub, n, seed + i) for i, (k, sub) in enumerate(space.spaces.items())}
    space.seed(seed)
    return np.stack([np.asarray(space.sample()) for _ in range(n)])


def _spec(array: np.ndarray, name: str | None = None) -> Any:
    from mlflow.types import TensorSpec

    return TensorSpec(array.dtype, (-1, *array.shape[1:]), name)


def _inputs(obs: Any, state: np.ndarray | None) -> Any:
    """The model input: one array, or named arrays (Dict keys and/or obs + state)."""
    if state is None and not isinstance(obs, dict):
        return obs
    named = dict(obs) if isinstance(obs, dict) else {OBS_INPUT: obs}
    if state is not None:
        if STATE_INPUT in named:
            raise ValueError(f"a Dict observation key {STATE_INPUT!r} collides with the recurrent state input")
        named[STATE_INPUT] = state
    return named


def _signature(inputs: Any, outputs: Any) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

    def schema(value: Any) -> Any:
        items = value.items() if isinstance(value, dict) else [(None, value)]
        return Schema([_spec(np.asarray(v), k) for k, v in items])

    return ModelSignature(inputs=schema(inputs), outputs=schema(outputs))


def _requirements() -> list[str]:
    """What the model's code imports, pinned; listed rather than inferred (MLflow infers them by
    loading the model in a subprocess, seconds per run). Local version labels (``+cpu``) dropped."""
    import pandas

    return [f"{name}=={version.split('+')[0]}" for name, version in
            (("mlflow", mlflow.__version__), ("torch", torch.__version__), ("numpy", np.__version__),
             ("pandas", pandas.__version__))]


def save_mlflow_model(run_dir: str | os.PathLike[str], name: str = MODEL_FOLDER,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write ``<run_dir>/<name>``: the pyfunc model of the saved model in ``run_dir`` (``model.pt`` and
    ``policy.pt2``, launch/evaluate.py ``save_model``), with its signature, a 2-row input example and
    ``metadata`` (the MLmodel file's free-form ``metadata``), replacing an older one (a resumed run).
    Returns the folder."""
    from colonyrl.agents.base import initial_state
    from colonyrl.launch.evaluate import load_model

    run_dir = Path(run_dir)
    policy, cfg, _ = load_model(run_dir)
    space = cfg.components().spaces().observation
    obs = _example(space, 2, cfg.run.seed)
    state = initial_state(policy, 2)
    inputs = _inputs(obs, None if state is None else np.asarray(state, dtype=np.float32))
    model = PolicyModel()
    keys = list(obs) if isinstance(obs, dict) else None
    config = {"obs_keys": keys, "obs_dtypes": [str(v.dtype) for v in (obs.values() if keys else [obs])],
              "stateful": state is not None}
    model.load_context(mlflow.pyfunc.PythonModelContext(artifacts={"policy": str(run_dir / "policy.pt2")},
                                                        model_config=config))
    outputs = model.predict(None, inputs)
    tmp, target = run_dir / f".{name}.tmp{os.getpid()}", run_dir / name
    shutil.rmtree(tmp, ignore_errors=True)
    with warnings.catch_warnings():  # an integer input column: a warning about missing values in JSON
        warnings.filterwarnings("ignore", message=".*integer column.*")
        mlflow.pyfunc.save_model(str(tmp), python_model=__file__, artifacts={"policy": str(run_dir / "policy.pt2")},
                                 model_config=config, signature=_signature(inputs, outputs), input_example=inputs,
                                 pip_requirements=_requirements(), metadata=metadata)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def register_model(tracking_uri: str | None, run_id: str, artifact_uri: str, name: str,
                   folder: str = MODEL_FOLDER, alias: str | None = None) -> int:
    """Register ``runs:/<run_id>/<folder>`` as a new version of the registered model ``name`` (created
    if new) in the Model Registry at ``tracking_uri``, as ``mlflow.register_model`` does for a run
    artifact, but at this URI rather than the global one; ``alias`` (e.g. ``best``) then points at
    that version (``models:/<name>@<alias>``; MLflow moves an alias that pointed elsewhere). Returns
    the version number."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = client.create_model_version(name, f"{artifact_uri}/{folder}", run_id=run_id)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def log_model(tracker: Any, run_dir: str | os.PathLike[str], register: str | None = None) -> int | None:
    """Write the MLflow model of the saved model in ``run_dir`` and log it through ``tracker``
    (launch/tracking.py ``Tracker``: journaled during a server outage) as the run's ``model``
    artifact, beside ``model.pt`` and ``policy.pt2``; then register it as a new version of ``register``.
    Returns that version (None: not registered). A failure warns, naming what to do, and never fails
    the finished run: its ``model.pt`` and ``policy.pt2`` are logged already."""
    try:
        folder = save_mlflow_model(run_dir)
    except Exception as e:
        warnings.warn(f"could not write the run's MLflow model (model.pt and policy.pt2 are logged): {e!r}",
                      stacklevel=2)
        return None
    tracker.log_artifact(folder)  # a folder keeps its name: the run's model/ artifact
    return None if register is None else _register(tracker, register, MODEL_FOLDER)


def _register(tracker: Any, register: str, folder: str, alias: str | None = None) -> int | None:
    """:func:`register_model` of the run's ``folder`` artifact; a failure, or a server that does not
    answer, warns with the call that registers it later and returns None."""
    later = f"register it later with mlflow.register_model('runs:/{tracker.run_id}/{folder}', {register!r})"
    if tracker.server_down:
        warnings.warn(f"the run's {folder} was not registered as {register!r}: the tracking server "
                      f"{tracker.tracking_uri} is unreachable. Once the run's fallback is imported (colonyrl "
                      f"tracking-import), {later}", stacklevel=3)
        return None
    try:
        return register_model(tracker.tracking_uri, tracker.run_id, tracker.artifact_uri, register, folder, alias)
    except Exception as e:
        warnings.warn(f"could not register the run's {folder} as {register!r} ({e!r}); {later}", stacklevel=3)
        return None


# --- the best model (RunConfig.save_best_model) -----------------------------------------------------------


class BestModel:
    """The model of the best periodic evaluation so far, in ``<run dir>/best/``: ``model.pt`` and
    ``policy.pt2`` as the final model's, and ``best.json`` (``eval_return``, ``env_steps``).

    A better evaluation (strictly greater mean return) replaces the folder whole: written into a
    temporary folder, then renamed. A folder cannot be renamed onto a non-empty one (POSIX
    ``rename(2)``), so the previous best is first moved aside to ``.best.old``; a crash between the
    two renames leaves it there, and the next :class:`BestModel` of the run folder moves it back.
    ``resume``: continue from the best the folder holds (a resumed run keeps its run folder, so a
    worse evaluation after a resume never replaces it; one onto another ``output_dir`` starts a new
    best there); else a stale folder is removed."""

    def __init__(self, run_dir: str | os.PathLike[str], resume: bool) -> None:
        self.folder = Path(run_dir) / BEST_FOLDER
        self._old = self.folder.with_name(f".{BEST_FOLDER}.old")
        if not self.folder.exists() and self._old.exists():  # a crash between the two renames
            os.replace(self._old, self.folder)
        if not resume:
            shutil.rmtree(self.folder, ignore_errors=True)
        info = read_best(self.folder)
        self.eval_return: float = float("-inf") if info is None else info["eval_return"]
        self.env_steps: int | None = None if info is None else info["env_steps"]

    def offer(self, eval_return: float, env_steps: int, save: Callable[[Path], object]) -> bool:
        """Keep the model if ``eval_return`` beats the best so far: ``save(folder)`` writes its
        ``model.pt`` and ``policy.pt2`` (launch/evaluate.py ``save_model``). Returns whether it did."""
        if not eval_return > self.eval_return:  # NaN never does
            return False
        tmp = self.folder.with_name(f".{BEST_FOLDER}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save(tmp)
        (tmp / BEST_INFO).write_text(json.dumps({"eval_return": float(eval_return), "env_steps": int(env_steps)}))
        shutil.rmtree(self._old, ignore_errors=True)
        if self.folder.exists():
            os.replace(self.folder, self._old)
        os.replace(tmp, self.folder)
        shutil.rmtree(self._old, ignore_errors=True)
        self.eval_return, self.env_steps = float(eval_return), int(env_steps)
        return True


def read_best(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``best.json`` of a best-model folder (``eval_return``, ``env_steps``), or None if there is none."""
    path = Path(folder) / BEST_INFO
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return {"eval_return": float(info["eval_return"]), "env_steps": int(info["env_steps"])}


def log_best_model(tracker: Any, run_dir: str | os.PathLike[str], register: str | None = None) -> bool:
    """Log ``<run dir>/best/`` (if a periodic evaluation made one) as the run's ``best_model``
    artifact: ``model.pt``, ``policy.pt2`` and its MLflow model, whose metadata holds
    ``best_eval_return`` and ``best_env_steps``; both are also run metrics (at that env step), which
    MLflow's run search and UI compare across runs. ``register``: also a version of that registered
    model, with the alias :data:`BEST_ALIAS` (``models:/<name>@best``). Returns whether it logged one;
    a failure warns."""
    folder = Path(run_dir) / BEST_FOLDER
    info = read_best(folder)
    if info is None:
        return False
    metadata = {"best_eval_return": info["eval_return"], "best_env_steps": info["env_steps"]}
    try:
        model = save_mlflow_model(folder, BEST_MODEL_FOLDER, metadata)
    except Exception as e:
        warnings.warn(f"could not write the run's best MLflow model (it is in {folder}): {e!r}", stacklevel=2)
        return False
    for name in ("model.pt", "policy.pt2"):
        tracker.log_artifact(folder / name, BEST_MODEL_FOLDER)
    tracker.log_artifact(model)  # a folder keeps its name: the run's best_model/ artifact
    tracker.log_metrics(metadata, step=info["env_steps"])
    if register is not None:
        _register(tracker, register, BEST_MODEL_FOLDER, BEST_ALIAS)
    return True
