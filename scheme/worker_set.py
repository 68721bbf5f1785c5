"""Worker sets: typed calls to a group of workers, whether they live in this process or are Ray actors.

A GWorker owns a ``CWorkerSet``; the Learner owns a ``GWorkerSet``. Each set is one class over a
:class:`WorkerGroup`, which is all that differs between local and remote: :class:`InProcess` (a
set of one worker that is not forced remote lives in the caller's process: Sample Factory's serial
mode, PyTorchRL's local worker) or :class:`colonyrl.scheme.remote.RayActors`. Only the Ray group
imports Ray, and only when built. A worker that died in-process took this process with it; on Ray
the set replaces it (fault tolerance below) and counts what was lost.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import GradientPacket, Rollout, Weights
from colonyrl.scheme.runtime import WorkerDiedError, WorkerTimeoutError
from colonyrl.storage.rollout import Moments

if TYPE_CHECKING:
    from colonyrl.storage.replay import MemoryPart

__all__ = ["threads_for", "CWorkerSpec", "WorkerGroup", "InProcess", "CWorkerSet", "GWorkerSet"]


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


class WorkerGroup(Protocol):
    """Where a set's workers run, and how a call reaches them (the sets name no method but here).

    ``call`` asks every worker, each with its own arguments, and returns the answers in order,
    bounded by the group's timeout and naming who did not answer; with ``replace``, a worker found
    dead is replaced (``replace(i)``) and asked again, once. ``outcomes`` is ``call`` that hands
    back a dead worker's :class:`WorkerDiedError` (and, ``keep_errors``, a live one's exception)
    in its place. ``submit``/``wait_any``/``result`` are the future primitives of the async
    strategies (model: Ray's ``ActorPool``: a handle is an ObjectRef, or a future in-process).
    """

    names: list[str]
    workers: list[Any]  # the worker objects in-process, their actor handles on Ray

    def call(self, method: str, args: Sequence[tuple[Any, ...]],
             replace: Callable[[int], None] | None = None) -> list[Any]: ...
    def call_some(self, indices: Sequence[int], method: str, args: Sequence[tuple[Any, ...]],
                  stage: str) -> list[Any]: ...
    def outcomes(self, method: str, args: Sequence[tuple[Any, ...]], keep_errors: bool) -> list[Any]: ...
    def submit(self, i: int, method: str, *args: Any, background: bool = False) -> Any: ...
    def wait_any(self, handles: Sequence[Any], timeout_s: float) -> list[Any]: ...
    def wait_some(self, handles: Sequence[Any], num_returns: int,
                  timeout_s: float) -> tuple[list[Any], list[Any]]: ...
    def result(self, handle: Any, i: int, stage: str) -> Any: ...
    def signal(self, i: int, method: str, *args: Any) -> None: ...
    def put(self, obj: Any) -> Any: ...
    def respawn(self, i: int) -> None: ...
    def close(self, ask_first: bool) -> None: ...


class InProcess:
    """Workers in the caller's process: plain calls, no copies, no Ray.

    Calls run in the caller's thread, one worker after the other, until the first ``background``
    submit (async collection). From then on every call to a worker goes through a thread of its
    own, after the call in flight (as Ray orders an actor's calls), so collection overlaps the
    gradient computation (torch releases the GIL inside its kernels).
    """

    def __init__(self, workers: list[Any], names: list[str], timeout_s: float) -> None:
        self.workers, self.names, self.timeout_s = workers, names, timeout_s
        self._threads: list[cf.ThreadPoolExecutor] | None = None

    def call(self, method: str, args: Sequence[tuple[Any, ...]],
             replace: Callable[[int], None] | None = None) -> list[Any]:
        if self._threads is None:
            return [getattr(w, method)(*a) for w, a in zip(self.workers, args, strict=True)]
        futures = [t.submit(getattr(w, method), *a) for t, w, a in zip(self._threads, self.workers, args, strict=True)]
        _, pending = cf.wait(futures, timeout=self.timeout_s)
        if pending:
            raise WorkerTimeoutError([n for n, f in zip(self.names, futures, strict=True) if f in pending], method,
                                     self.timeout_s)
        return [f.result() for f in futures]

    def call_some(self, indices: Sequence[int], method: str, args: Sequence[tuple[Any, ...]],
                  stage: str) -> list[Any]:
        return [getattr(self.workers[i], method)(*a) for i, a in zip(indices, args, strict=True)]

    def outcomes(self, method: str, args: Sequence[tuple[Any, ...]], keep_errors: bool) -> list[Any]:
        return self.call(method, args)  # an error here is this process's own: it propagates

    def submit(self, i: int, method: str, *args: Any, background: bool = False) -> cf.Future[Any]:
        if background and self._threads is None:
            self._threads = [cf.ThreadPoolExecutor(1, thread_name_prefix=name) for name in self.names]
        if self._threads is not None:
            return self._threads[i].submit(getattr(self.workers[i], method), *args)
        done: cf.Future[Any] = cf.Future()  # runs now, in this thread
        done.set_result(getattr(self.workers[i], method)(*args))
        return done

    def wait_any(self, handles: Sequence[cf.Future[Any]], timeout_s: float) -> list[cf.Future[Any]]:
        done, _ = cf.wait(handles, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def wait_some(self, handles: Sequence[cf.Future[Any]], num_returns: int,
                  timeout_s: float) -> tuple[list[cf.Future[Any]], list[cf.Future[Any]]]:
        deadline = time.monotonic() + timeout_s
        done: set[cf.Future[Any]] = set()
        pending = set(handles)
        while len(done) < num_returns and pending and (left := deadline - time.monotonic()) > 0:
            new, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
            done |= new
        return [h for h in handles if h in done], [h for h in handles if h not in done]

    def result(self, handle: cf.Future[Any], i: int, stage: str) -> Any:
        return handle.result()

    def signal(self, i: int, method: str, *args: Any) -> None:
        getattr(self.workers[i], method)(*args)

    def put(self, obj: Any) -> Any:
        return obj

    def respawn(self, i: int) -> None:
        """A worker in this process that died took the process with it: errors propagate instead."""
        raise RuntimeError(f"{self.names[i]} failed in-process; nothing to re-create")

    def close(self, ask_first: bool) -> None:
        """Let calls in flight finish (milliseconds), then close every worker (their envs live here)."""
        for t in self._threads or ():
            t.shutdown(wait=True, cancel_futures=True)
        for w in self.workers:
            w.close()


#: What one worker answers to a runtime change: its name (a CWorker), or the names of the workers
#: that applied it (a GWorker: itself and those of its CWorkers that use it).
Ack = TypeVar("Ack", str, list[str])


class _WorkerSet(Generic[Ack]):
    """What both sets share: the group, the private dispatcher, and the calls every worker kind has."""

    names: list[str]
    group: WorkerGroup

    @property
    def workers(self) -> list[Any]:
        """The workers (in-process) or their Ray actor handles."""
        return self.group.workers

    def _heal_one(self, i: int) -> None:
        raise NotImplementedError

    def _call(self, method: str, *args: Any) -> list[Any]:
        return self.group.call(method, [args] * len(self.names), self._heal_one)

    def _call_each(self, method: str, args: Sequence[Any]) -> list[Any]:
        return self.group.call(method, [(a,) for a in args], self._heal_one)

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        """Every handle that is ready, waiting up to ``timeout_s`` for at least one (never sleep-polls)."""
        return self.group.wait_any(handles, timeout_s)

    def ping(self) -> list[str]:
        return self._call("ping")

    def pids(self) -> list[int]:
        return self._call("pid")

    def nodes(self) -> list[str]:
        """The Ray node of each worker."""
        return self._call("node")

    def inspect(self) -> list[dict[str, Any]]:
        """What each worker runs with now (tests query every worker with it)."""
        return self._call("inspect")

    def get_states(self) -> list[dict[str, Any]]:
        """Each worker's state for a checkpoint (taken between rounds)."""
        return self._call("get_state")

    def set_states(self, states: Sequence[dict[str, Any]]) -> list[str]:
        """Restore each worker from its own saved state, in ``names`` order."""
        return self._call_each("set_state", states)

    # -- runtime changes, acknowledged by every worker that applied them -----------------------------
    def update_parameter(self, kind: str, name: str, value: object) -> list[Ack]:
        return self._call("update_parameter", kind, name, value)

    def replace_component(self, kind: str, config: object) -> list[Ack]:
        return self._call("replace_component", kind, config)


class CWorkerSet(_WorkerSet[str]):
    """Collection workers of one GWorker.

    ``collect`` is one synchronous round. ``prepare``/``submit``/``wait``/``result`` are the
    future primitives the async strategy builds on. In-process, a round's workers run one after
    the other, so there is no straggler to preempt.

    Self-healing on Ray (platform.md §2.5): a worker whose process died is recreated with the
    GWorker's current components (runtime changes included) and gets the current weights with its
    next request; the rollout it had in flight is lost and counted. The set owns its actors
    (``max_restarts=0``), so it always knows a worker is new.
    """

    def __init__(self, spec: CWorkerSpec, components: Components) -> None:
        self.spec, self.names, self.components = spec, spec.names(), components
        self.restarts = self.lost_env_steps = self.preemptions = 0
        self.restarted: list[str] = []  # names of the workers re-created since the last stats()
        self._round = 0
        if spec.remote:
            from colonyrl.scheme import remote

            cls = remote.as_remote(CWorker, spec.num_cpus, spec.num_gpus, dict(spec.resources), control_group=True)
            receiver, threads = remote.node_id(), threads_for(spec.num_cpus)

            def spawn(i: int) -> Any:  # built from the current components: runtime changes included
                return cls.remote(self.components, spec.global_index(i), self.names[i], spec.compress, receiver,
                                  threads)

            self.group = remote.RayActors(spawn, self.names, spec.timeout_s)
        else:
            # torch_threads=None: they compute in the GWorker's process, with its thread setting.
            self.group = InProcess([CWorker(components, spec.global_index(i), name, torch_threads=None)
                                    for i, name in enumerate(self.names)], self.names, spec.timeout_s)

    def recreate(self, i: int, in_flight: bool = True) -> Any:
        """Replace worker ``i`` (dead or stuck) by a new one built from the current components;
        ``in_flight``: it died collecting, so a rollout's worth of env steps is lost."""
        self.group.respawn(i)
        self.restarts += 1
        self.restarted.append(self.names[i])
        if in_flight:
            self.lost_env_steps += self.components.env.num_envs * self.components.storage.num_steps
        return self.group.workers[i]

    def _heal_one(self, i: int) -> None:  # found dead while idle: nothing was in flight
        self.recreate(i, in_flight=False)

    def collect(self, weights: Weights, quorum: int | None = None, min_fraction: float = 1.0) -> list[Rollout]:
        """One round. With a ``quorum`` below the number of workers, once that many delivered the
        others are told to stop (each after ``min_fraction`` of its steps) and their partial
        rollouts are used too (straggler preemption)."""
        prepared = self.prepare(weights)
        while True:
            self._round += 1
            handles = {self.group.submit(i, "collect", prepared, self._round, min_fraction): i
                       for i in range(len(self.names))}
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
        ready, not_ready = self.group.wait_some(refs, quorum, timeout)
        if len(ready) >= quorum and not_ready:
            for ref in not_ready:  # the stragglers: stop now, keep what they have
                self.group.signal(handles[ref], "request_stop", self._round)
            self.preemptions += len(not_ready)
            ready, not_ready = self.group.wait_some(refs, len(refs), timeout)
        if not_ready:
            raise WorkerTimeoutError([self.names[handles[h]] for h in not_ready], "collect", timeout)
        return ready

    def prepare(self, weights: Weights) -> Any:
        """What each worker's next call carries: small weights by value, large ones put once.

        Ray copies arguments under 100 KB into the call itself, so small weights need no object
        store round trip; measured on the CartPole actor-critic (36 KB, benchmarks/README.md,
        async overlap): a put (~0.75-1.3 ms) plus a fetch per worker against ~0.3 ms more per call.
        """
        return weights if weights.nbytes <= INLINE_WEIGHTS_BYTES else self.group.put(weights)

    def submit(self, index: int, prepared: Any) -> Any:
        return self.group.submit(index, "collect", prepared, background=True)

    def result(self, handle: Any, index: int) -> Rollout:
        return self.group.result(handle, index, "collect")

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"restarts": float(self.restarts), "lost_env_steps": float(self.lost_env_steps),
               "preemptions": float(self.preemptions),
               **{f"restarts/{name}": float(self.restarted.count(name)) for name in set(self.restarted)}}
        self.restarts = self.lost_env_steps = self.preemptions = 0
        self.restarted = []
        return out

    def close(self) -> None:
        self.group.close(ask_first=False)  # on Ray the actors are killed: nothing of theirs is needed


def threads_for(num_cpus: float) -> int:
    """Torch threads of a worker that asked Ray for ``num_cpus`` (what Ray sets OMP_NUM_THREADS to:
    ``max(floor(num_cpus), 1)``, ray/_private/utils.py ``set_omp_num_threads_if_unset``)."""
    return max(int(num_cpus), 1)


class GWorkerSet(_WorkerSet[list[str]]):
    """Gradient workers of the Learner: ``step`` is one synchronous step of all of them;
    ``submit``/``wait``/``result`` are the future primitives of the async gradient strategy.

    In-process, the one GWorker shares the Learner's algorithm object: no weight copies at all.

    Self-healing on Ray (issue 4, node loss): a GWorker whose process died (its node was lost) is
    re-created from the current components (runtime changes included) wherever Ray finds room.
    Its CWorkers were owned by it and died with it (Ray's ownership fate-sharing), so the new
    GWorker builds new ones; they are counted as CWorker restarts. Central update: the new
    GWorker gets the Learner's weights with its next step. Decentralized: the survivors and the
    new GWorker form a new all-reduce group and the new one copies a survivor's weights and
    optimizer state, so all replicas stay identical.
    """

    def __init__(self, spawn: Callable[[int, Components], Any], num_workers: int, remote: bool,
                 components: Components, num_col_workers: int, timeout_s: float, allreduce: bool = False) -> None:
        self.components = components  # kept current by the Learner: a re-created GWorker gets these
        self.names = [f"g{g}" for g in range(num_workers)]
        self.num_col_workers, self.timeout_s, self.allreduce = num_col_workers, timeout_s, allreduce
        if remote:
            from colonyrl.scheme import remote as ray_workers

            self.group = ray_workers.RayActors(lambda g: spawn(g, self.components), self.names, timeout_s)
        else:
            self.group = InProcess([spawn(g, components) for g in range(num_workers)], self.names, timeout_s)
        self._weights_ref: Any = None
        self._weights_sent: Weights | None = None
        self.restarts = 0
        self.cworker_restarts = 0
        self.replaced: list[str] = []
        self.ping()  # fail fast, by name, if a worker cannot start
        if allreduce:
            self.form_allreduce()

    def _weights(self, weights: Weights | None) -> Any:
        # Put once per Weights object (a new version, or new statistics with it), refs to all.
        if weights is not None and weights is not self._weights_sent:
            self._weights_ref = self.group.put(weights)
            self._weights_sent = weights
        return self._weights_ref

    def start_round(self, version: int, weights: Weights | None) -> list[Moments]:
        """Every GWorker collects and prepares a round; a dead one is replaced and asked again."""
        return self._call("start_round", version, self._weights(weights))

    def step(self, version: int, weights: Weights | None, collect: bool = True,
             round_moments: Moments | None = None) -> list[GradientPacket]:
        """One step of every GWorker. A dead GWorker is replaced and the survivors' packets are
        used; decentralized, the survivors' all-reduce failed with it, so the step is redone."""
        ref = self._weights(weights)
        while True:
            out = self.group.outcomes("step", [(version, ref, collect, round_moments)] * len(self.names),
                                      keep_errors=self.allreduce)
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
            self.group.respawn(i)  # in-process: raises (the Learner's process is the GWorker's)
            self.replaced.append(self.names[i])
            self.restarts += 1
            self.cworker_restarts += self.num_col_workers
        # Wait until they are placed and built: bounded, and named if no node has room.
        self.group.call_some(dead, "ping", [()] * len(dead), "start")
        if self.allreduce:
            source = next(i for i in range(len(self.names)) if i not in dead)
            (state,) = self.group.call_some([source], "algo_state", [()], "algo_state")
            self.group.call_some(dead, "set_algo_state", [(state,)] * len(dead), "set_algo_state")
            self.form_allreduce()

    def _heal_one(self, i: int) -> None:
        self.heal([i])

    def form_allreduce(self) -> None:
        """(Re-)form one gloo group of every GWorker; rank 0 hosts the rendezvous."""
        self._call("leave_allreduce")
        address = self._call("free_address")[0]
        n = len(self.names)
        self.group.call_some(range(n), "init_allreduce", [(address, rank, n, self.timeout_s) for rank in range(n)],
                             "init_allreduce")

    def submit(self, index: int, version: int, weights: Weights | None, collect: bool = True) -> Any:
        # in-process the step runs now, in this thread: the Learner's thread is the GWorker's
        return self.group.submit(index, "step", version, self._weights(weights), collect)

    def result(self, handle: Any, index: int) -> GradientPacket:
        return self.group.result(handle, index, "step")

    def pop_replaced(self) -> list[str]:
        """Names of the GWorkers re-created since the previous call."""
        out, self.replaced = self.replaced, []
        return out

    # -- typed calls to every GWorker --------------------------------------------------------------
    def get_weights(self) -> list[Weights]:
        return self._call("get_weights")

    def algo_states(self) -> list[dict[str, Any]]:
        """Each GWorker's weights and optimizer state (decentralized: the replicas in use)."""
        return self._call("algo_state")

    def set_algo_states(self, state: dict[str, Any]) -> list[str]:
        """Every GWorker starts from ``state`` (weights, optimizer, version)."""
        return self._call("set_algo_state", state)

    def at_round_boundary(self) -> list[bool]:
        return self._call("at_round_boundary")

    def cworker_nodes(self) -> list[list[str]]:
        return self._call("cworker_nodes")

    def seed_storage(self, parts: Sequence[MemoryPart]) -> list[str]:
        """Part i of redistributed replay memories to GWorker i (a resume onto other worker counts)."""
        return self._call_each("seed_storage", parts)

    def stats(self) -> dict[str, float]:
        """Counts since the previous call (the Learner keeps the running totals)."""
        out = {"gworker_restarts": float(self.restarts), "restarts": float(self.cworker_restarts)}
        self.restarts = self.cworker_restarts = 0
        return out

    def close(self) -> None:
        self.group.close(ask_first=True)  # on Ray each GWorker closes its CWorkers and all-reduce first
