"""colonyrl.envs: gymnasium env factories (vector envs with next-step autoreset, seeding, declarative
wrappers, normalization shared across workers) and the goal-reaching bit-flip env for HER
(``envs/goal.py``).

``from colonyrl.envs import EnvConfig`` imports gymnasium on first use, not when the package is
imported (the same lazy pattern as :mod:`colonyrl.scheme`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EnvConfig": "colonyrl.envs.factory",
    "WrapperConfig": "colonyrl.envs.wrappers",
    "NormalizeConfig": "colonyrl.envs.normalization",
    "RunningMeanStd": "colonyrl.envs.normalization",
    "Statistics": "colonyrl.envs.normalization",
    "EnvHandle": "colonyrl.envs.factory",
    "StepDelay": "colonyrl.envs.wrappers",
    "env_seeds": "colonyrl.envs.factory",
    "reset_seeded": "colonyrl.envs.factory",
    "episode_stats": "colonyrl.envs.factory",
    "BitFlipEnv": "colonyrl.envs.goal",
    "BIT_FLIP": "colonyrl.envs.goal",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
