"""colonyrl.storage: on-policy rollout storage and advantage estimation.

* :func:`generalized_advantage_estimate` (``storage/gae.py``): pure GAE over ``[T, N]`` numpy arrays,
  gymnasium 1.x next-step autoreset semantics (truncation bootstraps, autoreset steps masked).
* :class:`RolloutConfig` / :class:`RolloutStorage` / :class:`Minibatch` (``storage/rollout.py``):
  CWorker side ``insert -> finish -> get_data``; GWorker side ``add_data -> before_gradients ->
  generate_batches -> clear``; ``update_parameter`` for ``gamma`` and ``gae_lambda``.
"""

from __future__ import annotations

from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.rollout import Minibatch, RolloutConfig, RolloutStorage

__all__ = ["generalized_advantage_estimate", "RolloutConfig", "RolloutStorage", "Minibatch"]
