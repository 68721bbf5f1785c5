"""colonyrl.scheme: the hierarchy of workers and the data path between them.

The data path, hop by hop (file :: function), the same for every algorithm:

1. ``envs/factory.py :: EnvConfig.make``          gymnasium vector env (next-step autoreset)
2. ``scheme/c_worker.py :: CWorker.collect``      ``Policy.act`` -> env.step -> ``storage.insert``
                                                   (storage/layout.py: the layout from the extras)
3. ``scheme/wire.py :: pack``                     lz4 on raw array bytes (only across nodes)
4. ``scheme/g_worker.py :: GWorker.step``         unpack -> ``storage.add_data`` -> the update plan's
                                                   batches (storage/rollout.py GAE + minibatches, or
                                                   storage/replay.py samples) -> ``compute_gradients``
5. ``scheme/learner.py :: Learner.step``          gather gradients -> ``UpdateStrategy.apply``
                                                   (``Algorithm.apply_gradients``: every optimizer,
                                                   target nets) -> broadcast weights v+1
6. ``scheme/scheme.py :: connect``                builds and connects all of the above (one screen)

Between hops 2-4 and 4-5 the calls go through the mode objects of ``scheme/strategies.py`` (sync or
async collection and gradients, the async ones over one ``InFlight`` pool; central or decentralized
update) and ``scheme/worker_set.py`` (``CWorkerSet.collect``, ``GWorkerSet.step``: typed calls over
one worker group, ``InProcess`` or ``remote.RayActors``).

Off the data path, so that its six files read in at most 1,500 lines (tests/scheme/test_layering.py
counts them): the workers' runtime changes, checkpoint state and introspection (``scheme/control.py``),
the Learner's runtime changes (``scheme/changes.py``) and metrics window (``scheme/metrics.py``), the
scheme's config (``scheme/scheme_config.py``), the declarative wrappers (``envs/wrappers.py``).

Nothing here imports Ray at import time; Ray is imported only when a scheme has remote workers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "colonyrl.config",
    "ConfigError": "colonyrl.config",
    "Weights": "colonyrl.scheme.packets",
    "Rollout": "colonyrl.scheme.packets",
    "GradientPacket": "colonyrl.scheme.packets",
    "SchemeConfig": "colonyrl.scheme.scheme",
    "Scheme": "colonyrl.scheme.scheme",
    "Learner": "colonyrl.scheme.learner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy, nothing here imports Ray until a worker needs it
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
