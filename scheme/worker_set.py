"""Worker sets: the same interface whether the workers live in this process or are Ray actors.

A GWorker owns a ``CWorkerSet``; the Learner owns a ``GWorkerSet``. A set of one worker that is
not forced remote lives in the caller's process (Sample Factory's serial mode; PyTorchRL's local
worker); larger sets are Ray actors. Only the remote sets import Ray, and only when built.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import GradientPacket, Rollout, Weights
from colonyrl.scheme.runtime import WorkerTimeoutError

__all__ = ["CWorkerSpec", "CWorkerSet", "LocalCWorkerSet", "RemoteCWorkerSet", "make_cworker_set",
           "GWorkerSet", "LocalGWorkerSet", "RemoteGWorkerSet"]


@dataclasses.dataclass(frozen=True)
class CWorkerSpec:
    """How a GWorker builds its CWorkerSet (decided once, in ``scheme.connect``)."""

    gworker_index: int
    num_workers: int
    remote: bool
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()
    compress: Any = "auto"
    timeout_s: float = 300.0

    def names(self) -> list[str]:
        return [f"g{self.gworker_index}.c{i}" for i in range(self.num_workers)]

    def global_index(self, i: int) -> int:
        return self.gworker_index * self.num_workers + i


class CWorkerSet(Protocol):
    """Collection workers of one GWorker.

    ``collect`` is one synchronous round. ``prepare``/``submit``/``wait``/``result`` are the
    future-based primitives the async strategy builds on (model: Ray's ``ActorPool``): a handle
    is a Ray ObjectRef for remote workers and a thread future in-process.
    """

    names: list[str]

    def collect(self, weights: Weights, quorum: int | None = None, min_fraction: float = 1.0) -> list[Rollout]: ...
    def prepare(self, weights: Weights) -> Any: ...
    def submit(self, index: int, prepared: Any) -> Any: ...
    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]: ...
    def result(self, handle: Any, index: int) -> Rollout: ...
    def call(self, method: str, *args: Any) -> list[Any]: ...
    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]: ...
    def recreate(self, index: int) -> None: ...
    def stats(self) -> dict[str, float]: ...
    def close(self) -> None: ...


class LocalCWorkerSet:
    """CWorkers in the GWorker's own process: plain calls, no copies, no Ray.

    Async collection runs each worker's ``collect`` in a thread of its own, so collection overlaps
    the gradient computation (torch releases the GIL inside its kernels).
    """

    def __init__(self, spec: CWorkerSpec, components: Components) -> None:
        self.spec, self.names, self.components = spec, spec.names(), components
        self.workers = [CWorker(components, spec.global_index(i), name) for i, name in enumerate(self.names)]
        # One thread per worker, made on the first async submit: every call to a worker then goes
        # through its thread, after the rollout in flight (as Ray orders an actor's calls).
        self._threads: list[cf.ThreadPoolExecutor] | None = None

    def collect(self, weights: Weights, quorum: int | None = None, min_fraction: float = 1.0) -> list[Rollout]:
        # Workers in this process run one after the other: there is no straggler to preempt.
        return [w.collect(weights) for w in self.workers]

    def prepare(self, weights: Weights) -> Weights:
        return weights

    def submit(self, index: int, prepared: Weights) -> cf.Future[Rollout]:
        if self._threads is None:
            self._threads = [cf.ThreadPoolExecutor(1, thread_name_prefix=name) for name in self.names]
        return self._threads[index].submit(self.workers[index].collect, prepared)

    def wait(self, handles: Sequence[cf.Future[Rollout]], timeout_s: float) -> list[cf.Future[Rollout]]:
        done, _ = cf.wait(handles, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: cf.Future[Rollout], index: int) -> Rollout:
        return handle.result()

    def call(self, method: str, *args: Any) -> list[Any]:
        if self._threads is None:
            return [getattr(w, method)(*args) for w in self.workers]
        futures = [t.submit(getattr(w, method), *args) for t, w in zip(self._threads, self.workers, strict=True)]
        done, pending = cf.wait(futures, timeout=self.spec.timeout_s)
        if pending:
            raise WorkerTimeoutError([n for n, f in zip(self.names, futures, strict=True) if f in pending], method,
                                     self.spec.timeout_s)
        return [f.result() for f in futures]

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return [getattr(w, method)(a) for w, a in zip(self.workers, args, strict=True)]

    def stats(self) -> dict[str, float]:
        return {}

    def recreate(self, i: int) -> None:
        """An in-process worker shares this process: if it died, so did we. Errors propagate."""
        raise RuntimeError(f"{self.names[i]} failed in-process; nothing to recreate")

    def close(self) -> None:
        for t in self._threads or ():  # let in-flight rollouts finish (milliseconds), then stop
            t.shutdown(wait=True, cancel_futures=True)
        for w in self.workers:
            w.close()


class RemoteCWorkerSet:
    """CWorkers as Ray actors; weights go down as one object ref shared by all of them.

    Self-healing (platform.md §2.5): a worker whose process died is recreated with the GWorker's
    current components (runtime changes included) and gets the current weights with its next
    request; the rollout it had in flight is lost and counted. The set owns its actors
    (``max_restarts=0``), so it always knows a worker is new.
    """

    def __init__(self, spec: CWorkerSpec, components: Components) -> None:
        from colonyrl.scheme import remote

        self._remote = remote
        self.spec, self.names, self.components = spec, spec.names(), components
        self._cls = remote.as_remote(CWorker, spec.num_cpus, spec.num_gpus, dict(spec.resources), control_group=True)
        self._receiver = remote.node_id()
        self.actors = [self._spawn(i) for i in range(spec.num_workers)]
        self.restarts = 0
        self.lost_env_steps = 0
        self.preemptions = 0
        self._round = 0

    def _spawn(self, i: int) -> Any:
        return self._cls.remote(self.components, self.spec.global_index(i), self.names[i], self.spec.compress,
                                self._receiver)

    def recreate(self, i: int) -> None:
        """Replace worker ``i`` (dead or stuck) by a new one built from the current components."""
        self._remote.kill(self.actors[i])
        self.actors[i] = self._spawn(i)
        self.restarts += 1
        self.lost_env_steps += self.components.env.num_envs * self.components.storage.num_steps

    def collect(self, weights: Weights, quorum: int | None = None, min_fraction: float = 1.0) -> list[Rollout]:
        """One round. With a ``quorum`` below the number of workers, once that many delivered the
        others are told to stop (each after ``min_fraction`` of its steps) and their partial
        rollouts are used too (straggler preemption)."""
        prepared = self.prepare(weights)
        while True:
            self._round += 1
            handles = {self.actors[i].collect.remote(prepared, self._round, min_fraction): i
                       for i in range(len(self.actors))}
            ready = self._wait_with_preemption(list(handles), quorum or len(handles), handles)
            rollouts = []
            for h in ready:
                try:
                    rollouts.append(self.result(h, handles[h]))
                except self._remote.WorkerDiedError:
                    self.recreate(handles[h])
            if rollouts:  # the survivors' data is used; a recreated worker joins the next round
                return rollouts

    def _wait_with_preemption(self, refs: list[Any], quorum: int, handles: dict[Any, int]) -> list[Any]:
        timeout = self.spec.timeout_s
        ready, not_ready = self._remote.wait_some(refs, quorum, timeout)
        if len(ready) >= quorum and not_ready:
            for ref in not_ready:  # the stragglers: stop now, keep what they have
                self.actors[handles[ref]].request_stop.options(concurrency_group="control").remote(self._round)
            self.preemptions += len(not_ready)
            ready, not_ready = self._remote.wait_some(refs, len(refs), timeout)
        if not_ready:
            raise WorkerTimeoutError([self.names[handles[h]] for h in not_ready], "collect", timeout)
        return ready

    def prepare(self, weights: Weights) -> Any:
        return self._remote.put(weights)

    def submit(self, index: int, prepared: Any) -> Any:
        return self.actors[index].collect.remote(prepared)

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        return self._remote.wait_any(handles, timeout_s)

    def result(self, handle: Any, index: int) -> Rollout:
        return self._remote.get_named(handle, self.names[index], "collect")

    def call(self, method: str, *args: Any) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [args] * len(self.actors), self.spec.timeout_s)

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [(x,) for x in args], self.spec.timeout_s)

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"restarts": float(self.restarts), "lost_env_steps": float(self.lost_env_steps),
               "preemptions": float(self.preemptions)}
        self.restarts = self.lost_env_steps = self.preemptions = 0
        return out

    def close(self) -> None:
        for a in self.actors:
            self._remote.kill(a)


def make_cworker_set(spec: CWorkerSpec, components: Components) -> CWorkerSet:
    return RemoteCWorkerSet(spec, components) if spec.remote else LocalCWorkerSet(spec, components)


class GWorkerSet(Protocol):
    """Gradient workers of the Learner: ``step`` is one synchronous step of all of them;
    ``submit``/``wait``/``result`` are the future primitives of the async gradient strategy."""

    names: list[str]

    def step(self, version: int, weights: Weights | None) -> list[GradientPacket]: ...
    def submit(self, index: int, version: int, weights: Weights | None) -> Any: ...
    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]: ...
    def result(self, handle: Any, index: int) -> GradientPacket: ...
    def call(self, method: str, *args: Any) -> list[Any]: ...
    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]: ...
    def close(self) -> None: ...


class LocalGWorkerSet:
    """One GWorker sharing the Learner's algorithm object: no weight copies at all in-process."""

    def __init__(self, gworker: Any) -> None:
        self.gworker = gworker
        self.names = [gworker.name]

    def step(self, version: int, weights: Weights | None) -> list[GradientPacket]:
        return [self.gworker.step(version, None)]

    def submit(self, index: int, version: int, weights: Weights | None) -> cf.Future[GradientPacket]:
        done: cf.Future[GradientPacket] = cf.Future()  # in-process the step runs now, in this thread
        done.set_result(self.gworker.step(version, None))
        return done

    def wait(self, handles: Sequence[cf.Future[GradientPacket]], timeout_s: float) -> list[cf.Future[GradientPacket]]:
        return list(handles)

    def result(self, handle: cf.Future[GradientPacket], index: int) -> GradientPacket:
        return handle.result()

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(self.gworker, method)(*args)]

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        (arg,) = args
        return [getattr(self.gworker, method)(arg)]

    def close(self) -> None:
        self.gworker.close()


class RemoteGWorkerSet:
    """GWorkers as Ray actors, each with its own algorithm replica and CWorkerSet."""

    def __init__(self, actors: list[Any], names: list[str], timeout_s: float) -> None:
        from colonyrl.scheme import remote

        self._remote = remote
        self.actors, self.names, self.timeout_s = actors, names, timeout_s
        self._weights_ref: Any = None
        self._weights_version = -1

    def _weights(self, weights: Weights | None) -> Any:
        if weights is not None and weights.version != self._weights_version:
            self._weights_ref = self._remote.put(weights)  # put once per version, refs to all
            self._weights_version = weights.version
        return self._weights_ref

    def step(self, version: int, weights: Weights | None) -> list[GradientPacket]:
        ref = self._weights(weights)
        futures = {a.step.remote(version, ref): n for a, n in zip(self.actors, self.names, strict=True)}
        return self._remote.wait_named(futures, "step", self.timeout_s)

    def submit(self, index: int, version: int, weights: Weights | None) -> Any:
        return self.actors[index].step.remote(version, self._weights(weights))

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        return self._remote.wait_any(handles, timeout_s)

    def result(self, handle: Any, index: int) -> GradientPacket:
        return self._remote.get_named(handle, self.names[index], "step")

    def call(self, method: str, *args: Any) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [args] * len(self.actors), self.timeout_s)

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [(x,) for x in args], self.timeout_s)

    def close(self) -> None:
        try:
            self.call("close")
        except Exception:  # closing is best effort; the actors are killed next
            pass
        for a in self.actors:
            self._remote.kill(a)
