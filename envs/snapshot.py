"""Env state for exact resume, without pickle.

A checkpoint must load with ``torch.load(weights_only=True)`` (nothing in the file may run code),
so env objects are not pickled. Instead every layer of a vector env (the vector wrappers, the
vector env, and each sub-env's wrapper chain down to the unwrapped env) gives up its plain state:
numbers, booleans, None, numeric numpy arrays and numpy random generators (as their bit-generator
state). That is all the state of pure-Python envs such as gymnasium's classic control (CartPole's
``state``, ``steps_beyond_terminated``, ``_np_random``; ``TimeLimit._elapsed_steps``; the vector
env's autoreset flags; the episode statistics). Envs that keep state elsewhere (MuJoCo's C data,
emulators) resume from what these attributes hold, which is not bit-exact; ``restore`` reports
whether the snapshot covered every layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["snapshot", "restore"]

_SCALARS = (bool, int, float, type(None))


def _layers(env: Any) -> list[Any]:
    """The vector wrappers and vector env, then each sub-env's chain, in a fixed order."""
    layers, obj = [], env
    while obj is not None:
        layers.append(obj)
        obj = getattr(obj, "env", None)
    for sub in getattr(layers[-1], "envs", ()):
        obj = sub
        while obj is not None:
            layers.append(obj)
            obj = getattr(obj, "env", None)
    return layers


def _capture(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value.copy())
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    return _SKIP


_SKIP = object()


def snapshot(env: Any) -> list[dict[str, Any]]:
    """One dict per layer: the plain attributes named above, as tensors and primitives."""
    out = []
    for layer in _layers(env):
        state = {}
        for key, value in vars(layer).items():
            captured = _capture(value)
            if captured is not _SKIP:
                state[key] = captured
        out.append({"type": type(layer).__name__, "state": state})
    return out


def restore(env: Any, saved: list[dict[str, Any]]) -> None:
    """Put a :func:`snapshot` back into an env built from the same config."""
    layers = _layers(env)
    kinds = [type(layer).__name__ for layer in layers]
    if kinds != [s["type"] for s in saved]:
        raise ValueError(f"env snapshot does not match this env: saved layers {[s['type'] for s in saved]}, "
                         f"env layers {kinds}")
    for layer, entry in zip(layers, saved, strict=True):
        for key, value in entry["state"].items():
            current = getattr(layer, key, None)
            if isinstance(value, dict) and "__generator__" in value:
                current.bit_generator.state = value["__generator__"]
            elif isinstance(value, torch.Tensor):
                array = value.numpy()
                if isinstance(current, np.ndarray) and current.shape == array.shape:
                    current[...] = array  # in place: other objects may hold this array
                else:
                    setattr(layer, key, array.copy())
            else:
                setattr(layer, key, value)
