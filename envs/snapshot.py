"""Env state for exact resume, without pickle.

A checkpoint must load with ``torch.load(weights_only=True)`` (nothing in the file may run code),
so env objects are not pickled. Instead every layer of a vector env (the vector wrappers, the
vector env, and each sub-env's wrapper chain down to the unwrapped env) gives up its plain state:
numbers, booleans, None, numeric numpy arrays, deques of numbers and numpy random generators (as
their bit-generator state); attributes that configure or connect a layer (strings, enums, spaces,
specs, thunks, pipes) are not state. Spaces count as configuration: their sampling RNGs are not saved. That is all the state of pure-Python envs such as gymnasium's classic control (CartPole's
``state``, ``steps_beyond_terminated``, ``_np_random``; ``TimeLimit._elapsed_steps``; the vector
env's autoreset flags; the episode statistics). Envs that keep state elsewhere (MuJoCo's C data,
emulators) resume from what these attributes hold, which is not bit-exact: each layer's snapshot
lists the attributes it could not save, and ``restore`` returns that as a :class:`RestoreReport`.

The sub-envs of an ``AsyncVectorEnv`` live in its worker processes, which the main process reaches
only through ``AsyncVectorEnv.call`` / ``get_attr`` / ``set_attr`` (gymnasium's
``vector/async_vector_env.py``, ``_async_worker``: ``env.get_wrapper_attr(name)`` and
``env.set_wrapper_attr(name, value)`` in each worker). So colonyrl's factory puts
:class:`SubEnvState` outermost on each async sub-env: the worker snapshots and restores its own
chain with it, and it mirrors the worker loop's local ``autoreset`` flag, the vector-level state that
``SyncVectorEnv`` keeps as ``_autoreset_envs``. Sub-envs of other async envs cannot be reached; the
snapshot says so instead of saving nothing.

Only :func:`snapshot` and :func:`restore` import torch: the async workers import this module (for
:class:`SubEnvState`) and never need it.
"""

from __future__ import annotations

import functools
import types
from collections import deque
from enum import Enum
from typing import Any, NamedTuple

import gymnasium
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AsyncVectorEnv

from colonyrl.envs.split import SplitVectorEnv

__all__ = ["snapshot", "restore", "RestoreReport", "LayerReport", "SubEnvState"]

_SCALARS = (bool, int, float, type(None))
_SKIP = object()  # what _capture returns for a value it cannot save
# Functions a layer holds (e.g. TimeAwareObservation's ``_obs_postprocess_func``) are set when it is built:
# configuration, like its spaces.
_CONFIG_TYPES = (str, Enum, gymnasium.Space, EnvSpec, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                 functools.partial)
# gymnasium's attributes that are not state although their values are not plain: the links that
# _chain walks, how a layer was built, scratch data overwritten before it is read (SyncVectorEnv's
# per-step observations, PassiveEnvChecker's data-reuse check), AsyncVectorEnv's worker plumbing.
_NOT_STATE = frozenset({"env", "envs", "env_fns", "spec", "metadata", "_saved_kwargs", "_env_obs",
                        "_previous_data", "parent_pipes", "processes", "error_queue"})


class LayerReport(NamedTuple):
    type: str
    restored: tuple[str, ...]  # attributes put back
    missed: tuple[str, ...]  # attributes that may hold state and that the snapshot could not save


class RestoreReport(NamedTuple):
    """What :func:`restore` covered, layer by layer (same order as the snapshot)."""

    layers: tuple[LayerReport, ...]

    @property
    def exact(self) -> bool:
        """Whether every layer's state was saved (then the env resumes bit-exact)."""
        return not any(layer.missed for layer in self.layers)


def _chain(env: Any) -> list[Any]:
    """``env`` and every layer under it through ``.env``."""
    layers = []
    while env is not None:
        layers.append(env)
        env = getattr(env, "env", None)
    return layers


def _capture(value: Any) -> Any:
    # numpy scalars first: np.float64 is a float, yet weights_only cannot load it
    if isinstance(value, (np.number, np.bool_)):  # e.g. a counter after `+= np.sum(...)`
        return {"__scalar__": np.asarray(value)}
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.copy()
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, deque):
        items = [_capture(item) for item in value]
        if not any(item is _SKIP for item in items):
            return {"__deque__": items, "maxlen": value.maxlen}
    return _SKIP


def _capture_layer(layer: Any) -> dict[str, Any]:
    state, missed = {}, []
    for key, value in vars(layer).items():
        captured = _capture(value)
        if captured is not _SKIP:
            state[key] = captured
        elif key not in _NOT_STATE and not isinstance(value, _CONFIG_TYPES):
            missed.append(key)
    return {"type": type(layer).__name__, "state": state, "missed": missed}


def _rebuild(value: Any, current: Any) -> Any:
    """The inverse of :func:`_capture`, reusing ``current`` (the attribute now) where it can."""
    if isinstance(value, dict) and "__scalar__" in value:
        return value["__scalar__"][()]
    if isinstance(value, dict) and "__generator__" in value:
        if not isinstance(current, np.random.Generator):  # e.g. an env not seeded yet
            current = np.random.Generator(getattr(np.random, value["__generator__"]["bit_generator"])())
        current.bit_generator.state = value["__generator__"]
        return current
    if isinstance(value, dict) and "__deque__" in value:
        return deque((_rebuild(item, None) for item in value["__deque__"]), maxlen=value["maxlen"])
    if isinstance(value, np.ndarray):
        if isinstance(current, np.ndarray) and current.shape == value.shape:
            current[...] = value  # in place: other objects may hold this array
            return current
        return value.copy()
    return value


def _apply_layer(layer: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        setattr(layer, key, _rebuild(value, getattr(layer, key, None)))


class SubEnvState(gymnasium.Wrapper):
    """Outermost layer of each sub-env of colonyrl's ``AsyncVectorEnv`` (see the module docstring).

    With next-step autoreset the worker loop keeps ``autoreset = terminated or truncated`` after a
    step and, on the next step, resets instead of stepping (reward 0, both flags False). That flag is
    a local variable of the loop, so this wrapper mirrors it from what its own ``step`` returns. On
    restore the worker has just been reset (flag False): a saved pending autoreset is then replayed
    by this wrapper's next ``step``, exactly as the worker would have done it.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.autoreset = False  # the worker's flag
        self.reset_on_step = False  # a restored autoreset that the worker does not know of

    def step(self, action: Any) -> Any:
        if self.reset_on_step:
            self.reset_on_step = self.autoreset = False
            obs, info = self.env.reset()
            return obs, 0.0, False, False, info
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.autoreset = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.autoreset = self.reset_on_step = False
        return self.env.reset(seed=seed, options=options)

    def colonyrl_snapshot(self) -> list[dict[str, Any]]:
        """This sub-env's chain, as numpy and primitives (``AsyncVectorEnv.call`` pickles it back)."""
        return [_capture_layer(layer) for layer in _chain(self)]

    # Write-only: AsyncVectorEnv.set_attr is gymnasium's one way to send each worker its own value
    # (call() sends every worker the same arguments). The getter is what set_wrapper_attr's hasattr
    # sees.
    @property
    def colonyrl_restore(self) -> None:
        return None

    @colonyrl_restore.setter
    def colonyrl_restore(self, saved: list[dict[str, Any]]) -> None:
        for layer, entry in zip(_chain(self), saved, strict=True):
            _apply_layer(layer, entry["state"])
        self.reset_on_step = self.autoreset  # called right after a reset: the worker's flag is False


def _unreachable(num_envs: int) -> list[dict[str, Any]]:
    return [{"type": "AsyncVectorEnv sub-env", "state": {},
             "missed": ["everything: its worker has no SubEnvState (not built by colonyrl.envs)"]}
            for _ in range(num_envs)]


def _async_chains(vec: AsyncVectorEnv) -> list[list[dict[str, Any]]] | None:
    """Each sub-env's chain, from its worker; None when the workers cannot be reached."""
    if not all(vec.call("has_wrapper_attr", "colonyrl_snapshot")):
        return None
    return list(vec.call("colonyrl_snapshot"))


def _to_torch(obj: Any) -> Any:
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {key: _to_torch(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_torch(value) for value in obj]
    return obj


def _to_numpy(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {key: _to_numpy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_numpy(value) for value in obj]
    return obj


def snapshot(env: Any) -> list[dict[str, Any]]:
    """One dict per layer, ``{"type", "state", "missed"}``, as tensors and primitives: the vector
    wrappers and vector env, then each sub-env's chain (a double-buffered env: one entry holding
    each half's snapshot)."""
    if isinstance(env, SplitVectorEnv):
        return [{"type": type(env).__name__, "state": {}, "halves": [snapshot(half) for half in env.halves]}]
    vector = _chain(env)
    entries = [_capture_layer(layer) for layer in vector]
    base = vector[-1]
    if isinstance(base, AsyncVectorEnv):
        chains = _async_chains(base)
        entries += _unreachable(base.num_envs) if chains is None else [e for chain in chains for e in chain]
    else:
        entries += [_capture_layer(layer) for sub in getattr(base, "envs", ()) for layer in _chain(sub)]
    return _to_torch(entries)


def restore(env: Any, saved: list[dict[str, Any]]) -> RestoreReport:
    """Put a :func:`snapshot` back into an env built from the same config; report what it covered."""
    if isinstance(env, SplitVectorEnv) or saved[0]["type"] == SplitVectorEnv.__name__:
        if not isinstance(env, SplitVectorEnv) or saved[0]["type"] != type(env).__name__:
            raise ValueError(f"env snapshot does not match this env: saved {saved[0]['type']}, env {type(env).__name__} "
                             "(EnvConfig.double_buffered differs)")
        reports = [restore(half, part) for half, part in zip(env.halves, saved[0]["halves"], strict=True)]
        return RestoreReport(reports[0].layers + reports[1].layers)
    saved = _to_numpy(saved)
    vector = _chain(env)
    base, chains = vector[-1], None
    if isinstance(base, AsyncVectorEnv):
        chains = _async_chains(base)
        subs = _unreachable(base.num_envs) if chains is None else [e for chain in chains for e in chain]
        kinds = [type(layer).__name__ for layer in vector] + [e["type"] for e in subs]
        local = vector
    else:
        local = vector + [layer for sub in getattr(base, "envs", ()) for layer in _chain(sub)]
        kinds = [type(layer).__name__ for layer in local]
    if kinds != [s["type"] for s in saved]:
        raise ValueError(f"env snapshot does not match this env: saved layers {[s['type'] for s in saved]}, "
                         f"env layers {kinds}")
    if chains is not None:
        # A worker whose last step ended an episode would reset on its next step whatever the
        # snapshot says; a reset clears that flag (with shared memory, which colonyrl's factory
        # uses), then each SubEnvState puts its chain back and replays a saved pending autoreset.
        base.reset()
        per_env, start = [], len(vector)
        for chain in chains:
            per_env.append(saved[start:start + len(chain)])
            start += len(chain)
        base.set_attr("colonyrl_restore", per_env)
    for layer, entry in zip(local, saved, strict=False):  # async: the vector layers only
        _apply_layer(layer, entry["state"])
    return RestoreReport(tuple(LayerReport(e["type"], tuple(e["state"]), tuple(e.get("missed", ())))
                               for e in saved))
