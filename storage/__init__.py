"""colonyrl.storage: what CWorkers fill and GWorkers learn from.

* ``storage/layout.py``: the rollout layout every CWorker sends (from the spaces and the policy's
  declared extras) and the CWorker-side :class:`RolloutBuffer`.
* :func:`generalized_advantage_estimate` (``storage/gae.py``): pure GAE over ``[T, N]`` numpy arrays,
  gymnasium 1.x next-step autoreset semantics (truncation bootstraps, autoreset steps masked).
* :func:`vtrace` (``storage/vtrace.py``): pure V-trace targets and pg advantages over ``[T, N]``
  torch tensors (Espeholt et al. 2018), the same episode-end semantics; computed by IMPALA/APPO with
  their current networks.
* :class:`RolloutConfig` / :class:`RolloutStorage` / :class:`Minibatch` / :class:`SequenceBatch`
  (``storage/rollout.py``): on-policy; GWorker side ``start_round -> add_data -> before_gradients ->
  batches(EpochPlan)`` (flat, shuffled) or ``batches(SequencePlan)`` (time-major, whole env columns).
* :class:`ReplayConfig` / :class:`ReplayMemory` / :class:`ReplayBatch` (``storage/replay.py``):
  off-policy replay (uniform or prioritized with a sum tree, n-step returns, sample preprocessor,
  offline datasets, CRC checks); GWorker side ``add_data -> before_gradients -> batches(ReplayPlan)
  -> after_gradients`` (priorities).
"""

from __future__ import annotations

from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.layout import RolloutBuffer
from colonyrl.storage.replay import (
    ReplayBatch,
    ReplayConfig,
    ReplayCorruptionError,
    ReplayMemory,
    load_dataset,
    write_dataset,
)
from colonyrl.storage.rollout import Minibatch, RolloutConfig, RolloutStorage, SequenceBatch
from colonyrl.storage.vtrace import VTraceReturns, vtrace

__all__ = ["generalized_advantage_estimate", "vtrace", "VTraceReturns", "RolloutBuffer", "RolloutConfig",
           "RolloutStorage", "Minibatch", "SequenceBatch",
           "ReplayConfig", "ReplayMemory", "ReplayBatch", "ReplayCorruptionError", "load_dataset", "write_dataset"]
