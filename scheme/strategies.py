"""Coordination modes as strategy objects, chosen once in ``scheme.connect`` (DESIGN: Coordination).

Each knob of ``SchemeConfig`` (``collection``, ``gradients``, ``update``) picks one object here;
no other file branches on a mode (PyTorchRL's ``u_worker.py`` if/elif chains are the
counter-example). The async and decentralized strategies (issue 3) implement the same protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from colonyrl.scheme.packets import GradientPacket, Rollout, Weights

if TYPE_CHECKING:
    from colonyrl.scheme.worker_set import CWorkerSet, GWorkerSet

__all__ = ["CollectionStrategy", "SyncCollection", "GradientStrategy", "SyncGradients",
           "UpdateStrategy", "CentralUpdate", "average_gradients"]


class CollectionStrategy(Protocol):
    def collect(self, cworkers: CWorkerSet, weights: Weights) -> list[Rollout]: ...


class SyncCollection:
    """Every CWorker collects one full rollout with the GWorker's current weights; wait for all."""

    def collect(self, cworkers: CWorkerSet, weights: Weights) -> list[Rollout]:
        return cworkers.collect(weights)


class GradientStrategy(Protocol):
    def gather(self, gworkers: GWorkerSet, version: int, weights: Weights | None) -> list[GradientPacket]: ...


class SyncGradients:
    """Every GWorker computes one minibatch gradient with the same weights version; wait for all."""

    def gather(self, gworkers: GWorkerSet, version: int, weights: Weights | None) -> list[GradientPacket]:
        return gworkers.step(version, weights)


class UpdateStrategy(Protocol):
    def apply(self, algo: Any, packets: Sequence[GradientPacket]) -> dict[str, float]: ...


def average_gradients(packets: Sequence[GradientPacket]) -> list[Any] | None:
    """Sample-weighted mean of the packets' gradients (None if no packet carries gradients).

    Each worker's loss is a mean over its minibatch, so weighting by minibatch size makes the
    average equal the gradient of the union minibatch (tested in tests/scheme/test_learner.py).
    """
    live = [p for p in packets if p.grads is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0].grads
    total = float(sum(p.num_samples for p in live))
    weights = [p.num_samples / total for p in live]
    out = []
    for per_param in zip(*(p.grads for p in live), strict=True):
        if isinstance(per_param[0], torch.Tensor):
            out.append(sum(w * g for w, g in zip(weights, per_param, strict=True)))
        else:
            acc = np.multiply(per_param[0], weights[0], dtype=np.float32)
            for w, g in zip(weights[1:], per_param[1:], strict=True):
                acc += w * g
            out.append(acc)
    return out


class CentralUpdate:
    """The Learner averages the gradients and steps its optimizer; new weights go back down."""

    def apply(self, algo: Any, packets: Sequence[GradientPacket]) -> dict[str, float]:
        grads = average_gradients(packets)
        if grads is None:
            return {}
        return algo.apply_gradients(grads)
