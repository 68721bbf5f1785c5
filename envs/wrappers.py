"""Observation wrappers colonyrl ships, the gymnasium ids registered with them, and the wrappers
``EnvConfig.wrappers`` may name.

* :class:`RemoveVelocity` drops the velocity entries of a classic-control observation, which turns
  the task into a partially observed one that only a policy with memory solves (the RL Zoo's
  ``rl_zoo3/wrappers.py::MaskVelocityWrapper`` zeroes the same entries instead; SB3-contrib
  benchmarks RecurrentPPO on it as ``CartPoleNoVel-v1``).
* ``colonyrl/CartPoleNoVel-v1``: CartPole-v1 observing cart position and pole angle only (indices
  0 and 2 of [x, x_dot, theta, theta_dot]), with CartPole-v1's 500-step limit and threshold.
* :func:`wrapper_class` / :func:`wrapper_names`: a declarative wrapper list names gymnasium's
  single-env wrappers (``gymnasium.wrappers.__all__``) or colonyrl's own (:data:`PROJECT_WRAPPERS`)
  by class name, with keyword arguments; :func:`check_wrapper_kwargs` checks those against the
  wrapper's signature before any env is built; :class:`WrapperConfig` is one entry of that list
  (``EnvConfig.wrappers``), :func:`check_wrappers` checks a list of them.
* :class:`StepDelay` sleeps before every step: a slow env for benchmarks and straggler tests.

The ids are registered when this module is imported; envs/factory.py imports it, so every
process that builds an env (a CWorker, a Ray worker, an evaluation) knows them.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from colonyrl.config import Config, ConfigError

__all__ = ["RemoveVelocity", "VELOCITY_INDICES", "cartpole_no_velocity", "CARTPOLE_NO_VELOCITY", "PROJECT_WRAPPERS",
           "EXCLUDED_WRAPPERS", "wrapper_names", "wrapper_class", "unknown_wrapper_message", "check_wrapper_kwargs",
           "WrapperConfig", "StepDelay", "check_json", "check_wrappers"]

#: The velocity entries of classic-control observations, by env id.
VELOCITY_INDICES: dict[str, tuple[int, ...]] = {"CartPole-v1": (1, 3)}
CARTPOLE_NO_VELOCITY = "colonyrl/CartPoleNoVel-v1"


class RemoveVelocity(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Remove the entries ``indices`` of a flat Box observation (default: the env's velocities,
    :data:`VELOCITY_INDICES`); the observation space keeps the bounds of the other entries.

    It records its arguments as gymnasium's own wrappers do (``RecordConstructorArgs``), so the
    env's spec can rebuild it (``gymnasium.make(env.spec)``, which the env checker does)."""

    def __init__(self, env: gymnasium.Env, indices: tuple[int, ...] | None = None) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(self, indices=indices)
        gymnasium.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"RemoveVelocity needs a flat Box observation space, got {space}")
        if indices is None:
            spec_id = env.spec.id if env.spec is not None else None
            if spec_id not in VELOCITY_INDICES:
                raise ValueError(f"no known velocity entries for {spec_id!r}: pass indices "
                                 f"(known: {sorted(VELOCITY_INDICES)})")
            indices = VELOCITY_INDICES[spec_id]
        # a numeric array, not a tuple: envs/snapshot.py saves it (constant) and resume stays exact
        self.keep = np.setdiff1d(np.arange(space.shape[0]), np.asarray(indices, dtype=np.int64))
        self.observation_space = gymnasium.spaces.Box(space.low[self.keep], space.high[self.keep],
                                                      dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def cartpole_no_velocity(**kwargs: Any) -> gymnasium.Env:
    """CartPole without its velocities (the entry point of ``colonyrl/CartPoleNoVel-v1``)."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    return RemoveVelocity(CartPoleEnv(**kwargs), VELOCITY_INDICES["CartPole-v1"])


if CARTPOLE_NO_VELOCITY not in gymnasium.envs.registry:
    gymnasium.register(CARTPOLE_NO_VELOCITY, entry_point="colonyrl.envs.wrappers:cartpole_no_velocity",
                       max_episode_steps=500, reward_threshold=475.0)


# -- declarative wrappers (EnvConfig.wrappers) ----------------------------------------------------

#: colonyrl's own wrappers, by the name a wrapper list uses (each passes gymnasium's env checker:
#: tests/envs/test_wrappers.py).
PROJECT_WRAPPERS: dict[str, type[gymnasium.Wrapper]] = {"RemoveVelocity": RemoveVelocity}

#: gymnasium wrappers a declarative list cannot use, and why.
EXCLUDED_WRAPPERS: dict[str, str] = {
    **dict.fromkeys(("TransformObservation", "TransformAction", "TransformReward"),
                    "it takes a Python function, which a config cannot hold (write a wrapper class instead)"),
    "Autoreset": "colonyrl's vector env autoresets every sub-env itself (next-step mode)",
    "RecordEpisodeStatistics": "colonyrl's vector env records episode statistics already",
    **dict.fromkeys(("NormalizeObservation", "NormalizeReward"),
                    "its statistics are per sub-env: use EnvConfig.normalize, shared by every worker"),
    **dict.fromkeys(("ArrayConversion", "JaxToNumpy", "JaxToTorch", "NumpyToTorch"),
                    "colonyrl's sub-envs exchange numpy arrays"),
    "HumanRendering": "it opens a window in every sub-env",
}


def wrapper_names() -> list[str]:
    """Every name a wrapper list accepts: gymnasium's single-env wrappers (not the vector ones, not
    :data:`EXCLUDED_WRAPPERS`), then colonyrl's."""
    names = [n for n in gymnasium.wrappers.__all__ if n != "vector" and n not in EXCLUDED_WRAPPERS]
    return [*names, *PROJECT_WRAPPERS]


def unknown_wrapper_message(name: str) -> str:
    """What a ConfigError says is allowed instead of ``name``: the close matches first, then all."""
    if name in EXCLUDED_WRAPPERS:
        return f"a declarative wrapper ({name} cannot be one: {EXCLUDED_WRAPPERS[name]})"
    allowed = wrapper_names()
    close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)
    hint = f"close matches: {', '.join(map(repr, close))}; " if close else ""
    return f"a wrapper class name ({hint}one of {', '.join(allowed)})"


def wrapper_class(name: str) -> type[gymnasium.Wrapper] | None:
    """The wrapper class a list entry names, or None for a name it may not use."""
    if name in PROJECT_WRAPPERS:
        return PROJECT_WRAPPERS[name]
    if name not in wrapper_names():
        return None
    cls = getattr(gymnasium.wrappers, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, gymnasium.Wrapper) else None


def check_wrapper_kwargs(cls: type, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``(bad key or "", what is allowed)`` when ``cls(env, **kwargs)`` does not fit the wrapper's
    signature (an unknown keyword, or a required argument missing), else None."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # after self, env
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None  # takes any keyword: the wrapper checks them itself when built
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = [p.name for p in named]
    described = ", ".join(accepted) if accepted else "none"
    for key in kwargs:
        if key not in accepted:
            return key, f"a keyword argument of {cls.__name__} ({described})"
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    if missing:
        return "", f"keyword arguments with {', '.join(map(repr, missing))} (required by {cls.__name__}: {described})"
    return None


class StepDelay(gymnasium.Wrapper):
    """Sleeps ``delay_s`` seconds before every ``step``: a slow (I/O-bound) env for benchmarks and
    straggler tests. Module-level so that it pickles into ``AsyncVectorEnv`` workers."""

    def __init__(self, env: gymnasium.Env, delay_s: float) -> None:
        super().__init__(env)
        self.delay_s = float(delay_s)

    def step(self, action: Any) -> Any:
        time.sleep(self.delay_s)
        return self.env.step(action)


def check_json(where: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming the first entry of ``value`` that is not JSON: a dict with
    string keys, a list or tuple, a string, a finite number, a bool or None (nested freely)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):  # JSON has no NaN or infinity
            raise ConfigError(where, value, "a JSON value (numbers finite)")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(f"{where}[{i}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}[{key!r}]", key, "a string key (JSON objects have string keys)")
            check_json(f"{where}.{key}", item)
        return
    raise ConfigError(where, value, "a JSON value: dict (string keys), list, string, number, bool or None")


def _as_arguments(value: Any) -> Any:
    """JSON lists as tuples (gymnasium's wrappers take shapes as tuples: ``ResizeObservation``
    rejects a list), everything else as it is."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_arguments(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_arguments(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class WrapperConfig(Config):
    """One entry of :attr:`EnvConfig.wrappers`: a wrapper class by name, with keyword arguments.

    ``name`` is one of gymnasium's single-env wrappers (``gymnasium.wrappers.<name>``, e.g.
    ``"TimeAwareObservation"``, ``"FrameStackObservation"``, ``"ClipAction"``) or colonyrl's own
    (``"RemoveVelocity"``: envs/wrappers.py); :class:`EnvConfig` checks it and the keywords against
    the wrapper's signature. ``kwargs`` are JSON values; lists reach the wrapper as tuples.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        check_json(f"{type(self).__name__}.kwargs", self.kwargs)

    def wrap(self, env: gymnasium.Env) -> gymnasium.Env:
        cls = wrapper_class(self.name)
        if cls is None:
            raise ConfigError("WrapperConfig.name", self.name, unknown_wrapper_message(self.name))
        return cls(env, **_as_arguments(self.kwargs))

    @staticmethod
    def parse_list(text: str) -> tuple[WrapperConfig, ...]:
        """Wrappers from JSON (the command line's ``--env.wrappers``): a list whose entries are a
        name, or ``{"name": ..., "kwargs": {...}}``."""
        entries = json.loads(text)
        if not isinstance(entries, list):
            raise ConfigError("EnvConfig.wrappers", text, 'a JSON list of names or {"name": ..., "kwargs": {...}}')
        out = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or set(entry) - {"name", "kwargs"}:
                raise ConfigError(f"EnvConfig.wrappers[{i}]", entry, 'a name or {"name": ..., "kwargs": {...}}')
            out.append(WrapperConfig(name=entry["name"], kwargs=entry.get("kwargs") or {}))
        return tuple(out)

    @staticmethod
    def list_json(wrappers: tuple[WrapperConfig, ...]) -> str:
        """The inverse of :meth:`parse_list`."""
        return json.dumps([{"name": w.name, "kwargs": w.kwargs} if w.kwargs else w.name for w in wrappers])


def check_wrappers(where: str, wrappers: tuple[WrapperConfig, ...]) -> None:
    """Raise :class:`ConfigError` naming the first entry of ``wrappers`` (``where[i]``) whose name is
    not a known wrapper or whose keywords its signature does not take."""
    for i, wrapper in enumerate(wrappers):
        cls = wrapper_class(wrapper.name)
        if cls is None:
            raise ConfigError(f"{where}[{i}].name", wrapper.name, unknown_wrapper_message(wrapper.name))
        bad = check_wrapper_kwargs(cls, wrapper.kwargs)
        if bad is not None:
            key, allowed = bad
            raise ConfigError(f"{where}[{i}].kwargs" + (f".{key}" if key else ""),
                              wrapper.kwargs.get(key, wrapper.kwargs) if key else wrapper.kwargs, allowed)
