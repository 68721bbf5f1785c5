"""Presets per (algorithm, env): the schemes defined by the launch scripts, by name.

Each launch script in ``launch/scripts/`` defines its scheme in code as ``SCHEME``; the CLI offers
the same objects as presets, so there is one definition of each.
"""

from __future__ import annotations

import importlib

from colonyrl.launch.config import TrainConfig
from colonyrl.scheme.config import ConfigError

__all__ = ["PRESETS", "DEFAULT_PRESET", "preset", "describe"]

#: preset name -> launch script module that defines it
PRESETS: dict[str, str] = {
    "ppo-cartpole": "colonyrl.launch.scripts.cartpole_inprocess",
    "ppo-cartpole-ray": "colonyrl.launch.scripts.cartpole_ray",
    "ppo-pendulum": "colonyrl.launch.scripts.pendulum",
}
DEFAULT_PRESET = "ppo-cartpole"


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError("preset", name, "one of " + ", ".join(repr(p) for p in PRESETS))
    return importlib.import_module(PRESETS[name]).SCHEME


def describe(name: str) -> str:
    doc = importlib.import_module(PRESETS[name]).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
