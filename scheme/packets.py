"""Typed packets that travel between the layers (model: SB3's ``RolloutBufferSamples`` NamedTuple).

Every packet carries the policy version it belongs to, so the Learner can measure policy lag
(learner version - collecting version) and gradient staleness (learner version - version the
gradients were computed on). Payloads are numpy (zero-copy through Ray's object store); torch
tensors are made at the edge with ``torch.from_numpy``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from colonyrl.envs.normalization import Statistics

__all__ = ["Weights", "Rollout", "GradientPacket", "UpdateResult", "EpisodeStats"]

#: A rollout's data layout is storage's: storage/layout.py (from the spaces and the policy's extras).


class EpisodeStats(NamedTuple):
    """Returns and lengths of the episodes that finished inside one rollout."""

    returns: np.ndarray  # float64 [E]
    lengths: np.ndarray  # int64 [E]

    @staticmethod
    def empty() -> EpisodeStats:
        return EpisodeStats(np.zeros(0, np.float64), np.zeros(0, np.int64))

    @staticmethod
    def concat(stats: list[EpisodeStats]) -> EpisodeStats:
        if not stats:
            return EpisodeStats.empty()
        return EpisodeStats(np.concatenate([s.returns for s in stats]), np.concatenate([s.lengths for s in stats]))


class Weights(NamedTuple):
    """Versioned actor weights, broadcast down the hierarchy (one ``ray.put``, refs to all)."""

    version: int
    #: None: no weights, only the statistics below (in one process the GWorker shares the
    #: Learner's algorithm; decentralized GWorkers keep their own weights).
    arrays: dict[str, np.ndarray] | None
    #: The merged normalization statistics (envs/normalization.py; None: normalization off, or no
    #: data yet): the Learner's totals, which CWorkers normalize with until the next ones.
    normalizer: Statistics | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self.arrays is None else sum(a.nbytes for a in self.arrays.values())

    @staticmethod
    def attach(weights: Weights | None, version: int, normalizer: Statistics | None) -> Weights | None:
        """``weights`` with ``normalizer`` (a statistics-only packet of ``version`` when there are
        no weights to send); ``weights`` itself when normalization is off or nothing changed (the
        GWorkerSet puts each new Weights object once)."""
        if normalizer is None:
            return weights
        if weights is not None and weights.normalizer is normalizer and (
                weights.arrays is not None or weights.version == version):
            return weights
        if weights is None or weights.arrays is None:
            return Weights(version, None, normalizer)
        return weights._replace(normalizer=normalizer)


class Rollout(NamedTuple):
    """What a CWorker sends its GWorker after one collection round."""

    version: int  # policy version that collected it
    worker: str  # e.g. "g0.c1"
    data: Any  # dict[str, np.ndarray] (storage/layout.py) or a wire.Packed envelope
    env_steps: int  # env steps taken, autoreset steps included
    episodes: EpisodeStats
    info: dict[str, float]  # collect_time_s, fps, raw_bytes, wire_bytes, ...
    #: What this CWorker saw since its previous rollout, as normalization statistics (a delta;
    #: None: normalization off). Typed here, not in ``info``: the Learner merges them exactly.
    normalizer: Statistics | None = None


class GradientPacket(NamedTuple):
    """What a GWorker sends the Learner after one minibatch."""

    weights_version: int  # version of the weights the gradients were computed with
    data_version: float  # policy version that collected the data (mean over the merged rollouts)
    worker: str  # e.g. "g1"
    grads: list[Any] | None  # one array per parameter, in algo.parameters() order; None = no update
    num_samples: int  # samples in the minibatch (weights for averaging)
    env_steps: int  # env steps collected for this packet since the worker's previous packet
    episodes: EpisodeStats
    info: dict[str, float]  # loss terms and timings
    #: True when this GWorker has used up its round (the next step would start a new one): the
    #: Learner finishes rounds, checkpoints and evaluates at these boundaries.
    round_done: bool = True
    #: Decentralized: what this GWorker did with the all-reduced average (every rank does the same).
    update: UpdateResult | None = None
    #: The merged deltas of the rollouts this GWorker took since its previous packet (None: none,
    #: or normalization off); the Learner adds them to its totals.
    normalizer: Statistics | None = None


class UpdateResult(NamedTuple):
    """What applying one step's gradients did (typed: no control signals in metric dicts)."""

    applied: bool  # the weights changed: a new policy version
    nonfinite: bool = False  # the average was NaN/inf: skipped, weights untouched
    metrics: dict[str, float] = {}  # e.g. grad norms (never mutated: a fresh dict per result)

    @staticmethod
    def nothing() -> UpdateResult:
        """No packet carried gradients (idle GWorkers, or a memory short of learning_starts)."""
        return UpdateResult(False)
