"""Worker sets: the same interface whether the workers live in this process or are Ray actors.

A GWorker owns a ``CWorkerSet``; the Learner owns a ``GWorkerSet``. A set of one worker that is
not forced remote lives in the caller's process (Sample Factory's serial mode; PyTorchRL's local
worker); larger sets are Ray actors. Only the remote sets import Ray, and only when built.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import GradientPacket, Rollout, Weights
from colonyrl.scheme.runtime import WorkerDiedError, WorkerTimeoutError
from colonyrl.storage.rollout import Moments

__all__ = ["threads_for", "CWorkerSpec", "CWorkerSet", "LocalCWorkerSet", "RemoteCWorkerSet", "make_cworker_set",
           "GWorkerSet", "LocalGWorkerSet", "RemoteGWorkerSet"]


#: Weights up to this size go to CWorkers inside each call instead of through the object store
#: (Ray inlines call arguments below its 100 KB ``max_direct_call_object_size``).
INLINE_WEIGHTS_BYTES = 64 * 1024


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
    def recreate(self, index: int, in_flight: bool = True) -> Any: ...
    def stats(self) -> dict[str, float]: ...
    def close(self) -> None: ...


class LocalCWorkerSet:
    """CWorkers in the GWorker's own process: plain calls, no copies, no Ray.

    Async collection runs each worker's ``collect`` in a thread of its own, so collection overlaps
    the gradient computation (torch releases the GIL inside its kernels).
    """

    def __init__(self, spec: CWorkerSpec, components: Components) -> None:
        self.spec, self.names, self.components = spec, spec.names(), components
        # torch_threads=None: they compute in the GWorker's process, with its thread setting.
        self.workers = [CWorker(components, spec.global_index(i), name, torch_threads=None)
                        for i, name in enumerate(self.names)]
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

    def recreate(self, i: int, in_flight: bool = True) -> Any:
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
                                self._receiver, threads_for(self.spec.num_cpus))

    def recreate(self, i: int, in_flight: bool = True) -> Any:
        """Replace worker ``i`` (dead or stuck) by a new one built from the current components;
        ``in_flight``: it died collecting, so a rollout's worth of env steps is lost."""
        self._remote.kill(self.actors[i])
        self.actors[i] = self._spawn(i)
        self.restarts += 1
        if in_flight:
            self.lost_env_steps += self.components.env.num_envs * self.components.storage.num_steps
        return self.actors[i]

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
                except WorkerDiedError:
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
        """What each worker's next call carries: small weights by value, large ones put once.

        Ray copies arguments under 100 KB into the call itself, so small weights need no object
        store round trip; measured on the CartPole actor-critic (36 KB, benchmarks/README.md,
        async overlap): a put (~0.75-1.3 ms) plus a fetch per worker against ~0.3 ms more per call.
        """
        return weights if weights.nbytes <= INLINE_WEIGHTS_BYTES else self._remote.put(weights)

    def submit(self, index: int, prepared: Any) -> Any:
        return self.actors[index].collect.remote(prepared)

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        return self._remote.wait_any(handles, timeout_s)

    def result(self, handle: Any, index: int) -> Rollout:
        return self._remote.get_named(handle, self.names[index], "collect")

    def call(self, method: str, *args: Any) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [args] * len(self.actors), self.spec.timeout_s,
                                     self._replace_idle)

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [(x,) for x in args], self.spec.timeout_s,
                                     self._replace_idle)

    def _replace_idle(self, i: int) -> Any:
        return self.recreate(i, in_flight=False)

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"restarts": float(self.restarts), "lost_env_steps": float(self.lost_env_steps),
               "preemptions": float(self.preemptions)}
        self.restarts = self.lost_env_steps = self.preemptions = 0
        return out

    def close(self) -> None:
        for a in self.actors:
            self._remote.kill(a)


def threads_for(num_cpus: float) -> int:
    """Torch threads of a worker that asked Ray for ``num_cpus`` (what Ray sets OMP_NUM_THREADS to:
    ``max(floor(num_cpus), 1)``, ray/_private/utils.py ``set_omp_num_threads_if_unset``)."""
    return max(int(num_cpus), 1)


def make_cworker_set(spec: CWorkerSpec, components: Components) -> CWorkerSet:
    return RemoteCWorkerSet(spec, components) if spec.remote else LocalCWorkerSet(spec, components)


class GWorkerSet(Protocol):
    """Gradient workers of the Learner: ``step`` is one synchronous step of all of them;
    ``submit``/``wait``/``result`` are the future primitives of the async gradient strategy."""

    names: list[str]

    def start_round(self, version: int, weights: Weights | None) -> list[Moments]: ...
    def step(self, version: int, weights: Weights | None, collect: bool = True,
             round_moments: Moments | None = None) -> list[GradientPacket]: ...
    def submit(self, index: int, version: int, weights: Weights | None, collect: bool = True) -> Any: ...
    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]: ...
    def result(self, handle: Any, index: int) -> GradientPacket: ...
    def call(self, method: str, *args: Any) -> list[Any]: ...
    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]: ...
    def heal(self, dead: Sequence[int]) -> None: ...
    def pop_replaced(self) -> list[str]: ...
    def stats(self) -> dict[str, float]: ...
    def close(self) -> None: ...


class LocalGWorkerSet:
    """One GWorker sharing the Learner's algorithm object: no weight copies at all in-process."""

    def __init__(self, gworker: Any) -> None:
        self.gworker = gworker
        self.names = [gworker.name]

    def start_round(self, version: int, weights: Weights | None) -> list[Moments]:
        return [self.gworker.start_round(version, None)]

    def step(self, version: int, weights: Weights | None, collect: bool = True,
             round_moments: Moments | None = None) -> list[GradientPacket]:
        return [self.gworker.step(version, None, collect, round_moments)]

    def submit(self, index: int, version: int, weights: Weights | None, collect: bool = True) -> cf.Future[GradientPacket]:
        done: cf.Future[GradientPacket] = cf.Future()  # in-process the step runs now, in this thread
        done.set_result(self.gworker.step(version, None, collect))
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

    def heal(self, dead: Sequence[int]) -> None:
        """The GWorker shares the Learner's process: if it died, so did the Learner."""
        raise RuntimeError("the in-process GWorker failed; nothing to re-create")

    def pop_replaced(self) -> list[str]:
        return []

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self.gworker.close()


class RemoteGWorkerSet:
    """GWorkers as Ray actors, each with its own algorithm replica and CWorkerSet.

    Self-healing (issue 4, node loss): a GWorker whose process died (its node was lost) is
    re-created from the current components (runtime changes included) wherever Ray finds room.
    Its CWorkers were owned by it and died with it (Ray's ownership fate-sharing), so the new
    GWorker builds new ones; they are counted as CWorker restarts. Central update: the new
    GWorker gets the Learner's weights with its next step. Decentralized: the survivors and the
    new GWorker form a new all-reduce group and the new one copies a survivor's weights and
    optimizer state, so all replicas stay identical.
    """

    def __init__(self, spawn: Callable[[int, Components], Any], num_workers: int, num_col_workers: int,
                 components: Components, timeout_s: float, allreduce: bool = False) -> None:
        from colonyrl.scheme import remote

        self._remote, self._spawn = remote, spawn
        self.components = components  # kept current by the Learner: a re-created GWorker gets these
        self.names = [f"g{g}" for g in range(num_workers)]
        self.num_col_workers, self.timeout_s, self.allreduce = num_col_workers, timeout_s, allreduce
        self.actors = [spawn(g, components) for g in range(num_workers)]
        self._weights_ref: Any = None
        self._weights_version = -1
        self.restarts = 0
        self.cworker_restarts = 0
        self.replaced: list[str] = []
        self.call("ping")  # fail fast, by name, if a worker cannot start
        if allreduce:
            self.form_allreduce()

    def _weights(self, weights: Weights | None) -> Any:
        if weights is not None and weights.version != self._weights_version:
            self._weights_ref = self._remote.put(weights)  # put once per version, refs to all
            self._weights_version = weights.version
        return self._weights_ref

    def start_round(self, version: int, weights: Weights | None) -> list[Moments]:
        """Every GWorker collects and prepares a round; a dead one is replaced and asked again."""
        ref = self._weights(weights)
        return self._remote.call_all(self.actors, self.names, "start_round", [(version, ref)] * len(self.actors),
                                     self.timeout_s, self._replace_and_wait)

    def step(self, version: int, weights: Weights | None, collect: bool = True,
             round_moments: Moments | None = None) -> list[GradientPacket]:
        """One step of every GWorker. A dead GWorker is replaced and the survivors' packets are
        used; decentralized, the survivors' all-reduce failed with it, so the step is redone."""
        ref = self._weights(weights)
        while True:
            futures = {a.step.remote(version, ref, collect, round_moments): n
                       for a, n in zip(self.actors, self.names, strict=True)}
            out = self._remote.outcomes(futures, "step", self.timeout_s, keep_errors=self.allreduce)
            dead = [i for i, x in enumerate(out) if isinstance(x, WorkerDiedError)]
            errors = [x for x in out if isinstance(x, BaseException) and not isinstance(x, WorkerDiedError)]
            if errors and not dead:
                raise errors[0]
            if dead:
                self.heal(dead)
            packets = [x for x in out if isinstance(x, GradientPacket)]
            if packets and not (dead and self.allreduce):
                return packets

    def heal(self, dead: Sequence[int]) -> None:
        """Replace the GWorkers ``dead`` by new ones built from the current components."""
        for i in dead:
            self._replace(i)
        # Wait until they are placed and built: bounded, and named if no node has room.
        self._remote.wait_named({self.actors[i].ping.remote(): self.names[i] for i in dead}, "start",
                                self.timeout_s)
        if self.allreduce:
            source = next(i for i in range(len(self.actors)) if i not in dead)
            state = self._remote.wait_named({self.actors[source].algo_state.remote(): self.names[source]},
                                            "algo_state", self.timeout_s)[0]
            self._remote.wait_named({self.actors[i].set_algo_state.remote(state): self.names[i] for i in dead},
                                    "set_algo_state", self.timeout_s)
            self.form_allreduce()

    def _replace(self, i: int) -> Any:
        self._remote.kill(self.actors[i])
        self.actors[i] = self._spawn(i, self.components)
        self.replaced.append(self.names[i])
        self.restarts += 1
        self.cworker_restarts += self.num_col_workers
        return self.actors[i]

    def form_allreduce(self) -> None:
        """(Re-)form one gloo group of every GWorker; rank 0 hosts the rendezvous."""
        self.call("leave_allreduce")
        address = self.call("free_address")[0]
        self._remote.wait_named({a.init_allreduce.remote(address, rank, len(self.actors), self.timeout_s): n
                                 for rank, (a, n) in enumerate(zip(self.actors, self.names, strict=True))},
                                "init_allreduce", self.timeout_s)

    def submit(self, index: int, version: int, weights: Weights | None, collect: bool = True) -> Any:
        return self.actors[index].step.remote(version, self._weights(weights), collect)

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        return self._remote.wait_any(handles, timeout_s)

    def result(self, handle: Any, index: int) -> GradientPacket:
        return self._remote.get_named(handle, self.names[index], "step")

    def call(self, method: str, *args: Any) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [args] * len(self.actors), self.timeout_s,
                                     self._replace_and_wait)

    def call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return self._remote.call_all(self.actors, self.names, method, [(x,) for x in args], self.timeout_s,
                                     self._replace_and_wait)

    def _replace_and_wait(self, i: int) -> Any:
        self.heal([i])
        return self.actors[i]

    def pop_replaced(self) -> list[str]:
        """Names of the GWorkers re-created since the previous call."""
        out, self.replaced = self.replaced, []
        return out

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"gworker_restarts": float(self.restarts), "restarts": float(self.cworker_restarts)}
        self.restarts = self.cworker_restarts = 0
        return out

    def close(self) -> None:
        try:
            self._remote.call_all(self.actors, self.names, "close", [()] * len(self.actors), self.timeout_s)
        except Exception:  # closing is best effort; the actors are killed next
            pass
        for a in self.actors:
            self._remote.kill(a)
