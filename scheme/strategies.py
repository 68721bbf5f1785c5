"""Coordination modes as strategy objects, chosen once in ``scheme.connect`` (DESIGN: Coordination).

Each knob of ``SchemeConfig`` (``collection``, ``gradients``, ``update``) picks one object here;
no other file branches on a mode (PyTorchRL's ``u_worker.py`` if/elif chains are the
counter-example). The async and decentralized strategies (issue 3) implement the same protocols.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from colonyrl.scheme.devices import to_cpu
from colonyrl.scheme.packets import GradientPacket, Rollout, UpdateResult, Weights
from colonyrl.scheme.runtime import WorkerDiedError, WorkerTimeoutError
from colonyrl.storage.rollout import Moments

if TYPE_CHECKING:
    from colonyrl.scheme.worker_set import CWorkerSet, GWorkerSet

__all__ = ["InFlight", "CollectionStrategy", "SyncCollection", "AsyncCollection", "GradientStrategy", "SyncGradients",
           "AsyncGradients",
           "UpdateStrategy", "CentralUpdate", "DecentralizedUpdate", "average_gradients", "all_finite"]


class InFlight:
    """One pending call per busy worker of a worker set, over its ``submit`` / ``wait`` / ``result``:
    a future -> worker-index map and ``wait`` on all of them, as Ray's
    ``ActorPool.get_next_unordered`` (never sleep-polling). Both async strategies use it."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what, self.timeout_s = what, timeout_s
        self.handles: dict[Any, int] = {}

    def busy(self) -> set[int]:
        return set(self.handles.values())

    def submit(self, workers: Any, i: int, *args: Any) -> None:
        self.handles[workers.submit(i, *args)] = i

    def ready(self, workers: Any) -> list[tuple[Any, int]]:
        """(handle, worker index) of every call that finished; raises if none did within the timeout."""
        done = workers.wait(list(self.handles), self.timeout_s)
        if not done:
            raise WorkerTimeoutError([workers.names[i] for i in self.handles.values()], self.what, self.timeout_s)
        return [(handle, self.handles.pop(handle)) for handle in done]

    def drain(self, workers: Any) -> None:
        """Wait (bounded) for every call still running, so no worker is cut off mid-step."""
        pending = list(self.handles)
        while pending:  # ``wait`` returns once any is ready: wait until none is left
            done = workers.wait(pending, self.timeout_s)
            if not done:
                break
            pending = [h for h in pending if h not in done]
        self.handles.clear()


class CollectionStrategy(Protocol):
    def collect(self, cworkers: CWorkerSet, weights: Weights) -> list[Rollout]: ...
    def stats(self) -> dict[str, float]: ...
    def close(self, cworkers: CWorkerSet) -> None: ...


class SyncCollection:
    """Every CWorker collects one rollout with the GWorker's current weights; wait for them.

    Preemption (PyTorchRL's ``fraction_workers``/``fraction_samples``): once ``fraction_workers``
    of the CWorkers delivered, the others are told to stop as soon as they have
    ``fraction_samples`` of their steps, and their partial rollouts are used.
    """

    def __init__(self, fraction_workers: float = 1.0, fraction_samples: float = 1.0) -> None:
        self.fraction_workers, self.fraction_samples = fraction_workers, fraction_samples

    def collect(self, cworkers: CWorkerSet, weights: Weights) -> list[Rollout]:
        quorum = max(1, math.ceil(self.fraction_workers * len(cworkers.names)))
        return cworkers.collect(weights, quorum, self.fraction_samples)

    def stats(self) -> dict[str, float]:
        return {}

    def close(self, cworkers: CWorkerSet) -> None:
        pass


class AsyncCollection:
    """CWorkers collect continuously; the GWorker takes whatever rollouts are ready.

    A future->worker map over ``wait`` (Ray: ``ray.wait``; in-process: thread futures), as Ray's
    ``ActorPool.get_next_unordered`` does, never sleep-polling. A worker whose rollout was taken
    is handed the newest weights at once, so it collects while the GWorker computes gradients: the
    data is then one or more versions old (policy lag). Rollouts older than ``max_policy_lag``
    versions are dropped and counted (Espeholt et al. 2018 discuss the off-policyness this
    introduces; PPO's clipped ratio tolerates a small lag).
    """

    def __init__(self, max_policy_lag: int | None, timeout_s: float) -> None:
        self.max_policy_lag = max_policy_lag
        self.in_flight = InFlight("collect", timeout_s)
        self.dropped = 0
        self.dropped_env_steps = 0

    def collect(self, cworkers: CWorkerSet, weights: Weights) -> list[Rollout]:
        prepared = cworkers.prepare(weights)  # one object put for every worker
        busy = self.in_flight.busy()
        for i in range(len(cworkers.names)):
            if i not in busy:
                self.in_flight.submit(cworkers, i, prepared)
        taken: list[Rollout] = []
        while not taken:
            for handle, i in self.in_flight.ready(cworkers):
                try:
                    rollout = cworkers.result(handle, i)
                except WorkerDiedError:  # replaced by a new worker with the current components
                    cworkers.recreate(i)
                    self.in_flight.submit(cworkers, i, prepared)
                    continue
                self.in_flight.submit(cworkers, i, prepared)  # keep it collecting, newest weights
                if self.max_policy_lag is not None and weights.version - rollout.version > self.max_policy_lag:
                    self.dropped += 1
                    self.dropped_env_steps += rollout.env_steps
                    continue
                taken.append(rollout)
        return taken

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"dropped_rollouts": float(self.dropped), "dropped_env_steps": float(self.dropped_env_steps)}
        self.dropped = self.dropped_env_steps = 0
        return out

    def close(self, cworkers: CWorkerSet) -> None:
        """Wait for the rollouts still being collected so no worker is cut off mid-step."""
        self.in_flight.drain(cworkers)


class GradientStrategy(Protocol):
    def gather(self, gworkers: GWorkerSet, version: int, weights: Weights | None,
               collect: bool = True) -> list[GradientPacket]: ...
    def at_round_boundary(self, gworkers: GWorkerSet) -> bool: ...


class _Boundaries:
    """Which GWorkers have used up their round, as their last packets said (typed, no extra call)."""

    def __init__(self) -> None:
        self.done: dict[str, bool] = {}

    def record(self, packets: Sequence[GradientPacket]) -> None:
        for p in packets:
            self.done[p.worker] = p.round_done

    def all_done(self, names: Sequence[str]) -> bool:
        return all(self.done.get(n, True) for n in names)  # a GWorker not heard from has no round


class SyncGradients:
    """Every GWorker computes one minibatch gradient with the same weights version; wait for all.

    Rounds start on every GWorker together (``start_round``): the Learner merges their advantage
    moments, so each minibatch is standardized with the statistics of the union of all rounds and
    N GWorkers equal one GWorker on the union. A GWorker that used up its round first (a KL early
    stop, a smaller preempted round) idles until the others are done too.
    """

    def __init__(self) -> None:
        self.boundaries = _Boundaries()

    def gather(self, gworkers: GWorkerSet, version: int, weights: Weights | None,
               collect: bool = True) -> list[GradientPacket]:
        moments = None
        if collect and self.boundaries.all_done(gworkers.names):
            moments = Moments.merge(gworkers.start_round(version, weights))
        packets = gworkers.step(version, weights, False, moments)
        self.boundaries.record(packets)
        return packets

    def at_round_boundary(self, gworkers: GWorkerSet) -> bool:
        return self.boundaries.all_done(gworkers.names)


class AsyncGradients:
    """The Learner applies each GWorker's gradients as they arrive and sends new weights back to
    that GWorker only (asynchronous SGD with a parameter server, as in DistBelief, Dean et al.
    2012). The others keep computing on the weights they have: the Learner measures that
    staleness (its version minus the version the gradients were computed with). Each GWorker
    starts its rounds on its own, standardizing advantages with its own round's statistics."""

    def __init__(self, timeout_s: float) -> None:
        self.in_flight = InFlight("step", timeout_s)
        self.boundaries = _Boundaries()

    def gather(self, gworkers: GWorkerSet, version: int, weights: Weights | None,
               collect: bool = True) -> list[GradientPacket]:
        """One packet; with ``collect`` False, only GWorkers still inside a round are stepped, and
        nothing (``[]``) comes back once every round is finished and nothing is in flight."""
        while True:
            busy = self.in_flight.busy()
            for i, name in enumerate(gworkers.names):
                # an idle GWorker gets the newest weights with its next step
                if i not in busy and (collect or not self.boundaries.done.get(name, True)):
                    self.in_flight.submit(gworkers, i, version, weights, collect)
            if not self.in_flight.handles:
                return []
            ready = self.in_flight.ready(gworkers)
            handle, i = ready[0]  # one packet per Learner step: each is applied on its own
            for other, j in ready[1:]:  # the others stay pending, read at the next step
                self.in_flight.handles[other] = j
            try:
                packet = gworkers.result(handle, i)
            except WorkerDiedError:  # node lost: re-created (no round), resubmitted at the top of the loop
                gworkers.heal([i])
                self.boundaries.done[gworkers.names[i]] = True
                continue
            self.boundaries.record([packet])
            return [packet]

    def at_round_boundary(self, gworkers: GWorkerSet) -> bool:
        return not self.in_flight.handles and self.boundaries.all_done(gworkers.names)


class UpdateStrategy(Protocol):
    def apply(self, algo: Any, packets: Sequence[GradientPacket]) -> UpdateResult: ...
    def pull_weights(self, algo: Any, gworkers: GWorkerSet) -> None: ...
    def pull_state(self, algo: Any, gworkers: GWorkerSet) -> None: ...
    def push_state(self, algo: Any, gworkers: GWorkerSet, version: int) -> None: ...


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


def all_finite(grads: Sequence[Any]) -> bool:
    """Whether every gradient entry is finite (a NaN/inf update would poison the weights for good).

    One norm per tensor in a single foreach call: NaN or inf anywhere makes that norm non-finite.
    (A norm that overflows float32 from finite entries counts as non-finite too: such an update
    would be as harmful.) Measured: 1.3 ms -> 0.1 ms per SAC update, 7 tensors per network.
    """
    tensors = [g for g in grads if isinstance(g, torch.Tensor)]
    arrays = [g for g in grads if not isinstance(g, torch.Tensor)]  # from the wire: read-only numpy
    if tensors and not bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        return False
    return all(bool(np.isfinite(a).all()) for a in arrays)


class CentralUpdate:
    """The Learner averages the gradients and steps its optimizer; new weights go back down.

    A non-finite average is not applied (``UpdateResult.nonfinite``: the Learner counts it).
    """

    def apply(self, algo: Any, packets: Sequence[GradientPacket]) -> UpdateResult:
        grads = average_gradients(packets)
        if grads is None:
            return UpdateResult.nothing()
        if not all_finite(grads):
            return UpdateResult(False, nonfinite=True)
        return UpdateResult(True, metrics=algo.apply_gradients(grads))

    def pull_weights(self, algo: Any, gworkers: GWorkerSet) -> None:
        """The Learner's algorithm is the master copy: nothing to pull."""

    def pull_state(self, algo: Any, gworkers: GWorkerSet) -> None:
        """The Learner's optimizer is the one in use: nothing to pull."""

    def push_state(self, algo: Any, gworkers: GWorkerSet, version: int) -> None:
        """Nothing to push: the Learner sends its weights with every step anyway."""


class DecentralizedUpdate:
    """GWorkers all-reduce their gradients and each applies the average (``scheme/collective.py``);
    their weights stay identical. The Learner only counts the new version, and pulls the weights
    from a GWorker when it needs them (evaluation, saving)."""

    def apply(self, algo: Any, packets: Sequence[GradientPacket]) -> UpdateResult:
        """What the GWorkers did (every rank did the same with the same average)."""
        results = [p.update for p in packets if p.update is not None]
        if any(r.nonfinite for r in results):
            return UpdateResult(False, nonfinite=True)
        applied = [r for r in results if r.applied]
        return applied[0] if applied else UpdateResult.nothing()

    def pull_weights(self, algo: Any, gworkers: GWorkerSet) -> None:
        algo.set_weights(gworkers.get_weights()[0].arrays)

    def pull_state(self, algo: Any, gworkers: GWorkerSet) -> None:
        """Weights *and* optimizer state from a GWorker (the Learner's optimizer is never stepped
        here): what a checkpoint must hold."""
        algo.load_state_dict(gworkers.algo_states()[0]["algo"])

    def push_state(self, algo: Any, gworkers: GWorkerSet, version: int) -> None:
        """After a resume: every GWorker starts from the restored weights and optimizer state."""
        gworkers.set_algo_states({"version": version, "algo": to_cpu(algo.state_dict())})  # CPU on the wire
