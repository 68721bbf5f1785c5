"""Ray plumbing: the only module of colonyrl that imports Ray at the top.

Workers are plain classes; running one as a Ray actor is this wrapper (model: PyTorchRL's
``Worker.as_remote``). Waiting is always bounded (``ray.wait(..., timeout=)``) and names the
worker that did not answer (platform.md §2.5: never ``ray.get`` without a timeout in the Learner).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError, RayTaskError

from colonyrl.config import ConfigError
from colonyrl.scheme.runtime import WorkerDiedError, WorkerTimeoutError

__all__ = ["ensure_ray", "check_gpus", "as_remote", "RayActors", "wait_named", "WorkerDiedError", "node_id", "HOT_PATH_METHODS"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Actor methods on the hot path: every collection round (``collect``, ``request_stop``,
#: ``start_round``; ``update_parameter`` too while a linear ``Schedule`` moves a parameter, see
#: launch/train.py), every minibatch (``step``), every weights push (``set_weights``). Ray records a
#: task event for every actor call and its GCS keeps up to ``task_events_max_num_task_in_gcs``
#: (100,000 by default, Ray's ``ray_config_def.h``) of them: at hundreds of calls a second the GCS
#: grows by hundreds of MB over the first minutes of a run (``benchmarks/soak.py`` measures it).
#: Calls of these methods record none; the rare ones (ping, state, component replacements, close)
#: keep theirs, for ``ray list tasks`` and the dashboard when something fails (parameter changes are
#: recorded by the Learner itself: ``Learner.changes``, MLflow).
HOT_PATH_METHODS = frozenset({"collect", "request_stop", "set_weights", "start_round", "step",
                              "update_parameter"})


def ensure_ray(address: str | None, num_cpus_needed: float, object_store_mb: int | None = None) -> bool:
    """Connect to Ray once: an existing cluster at ``address``, or a new local instance.

    ``address=None`` starts a *new* local instance (``address="local"``): a bare ``ray.init()``
    would join whatever cluster ``ray start`` last recorded on this machine (platform.md §1.1).
    The local instance gets at least as many logical CPUs as the scheme asks for, so its actors
    never wait forever for a slot; every worker runs one torch thread, so nothing oversubscribes
    threads, and processes time-share the cores. Ray's token authentication is on by default and
    Ray has no loopback-only mode: its servers listen on all interfaces (README, "Security").
    Returns whether this call connected (the caller then shuts Ray down when it is done).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address is None:
        num_cpus = max(os.cpu_count() or 1, int(-(-num_cpus_needed // 1)))
        kwargs: dict[str, Any] = {}
        if object_store_mb is not None:
            kwargs["object_store_memory"] = object_store_mb * 1024**2
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 logging_level=logging.WARNING, **kwargs)
    else:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    available = ray.cluster_resources().get("CPU", 0.0)
    if available < num_cpus_needed:
        ray.shutdown()
        raise RuntimeError(
            f"the scheme needs {num_cpus_needed:g} CPUs (grad_worker_resources.num_cpus x num_grad_workers"
            f" + col_worker_resources.num_cpus x CWorkers) but the Ray cluster has {available:g}:"
            " lower the per-worker num_cpus or add nodes"
        )
    return True


def check_gpus(needed: float, field: str, value: str) -> None:
    """A ConfigError naming ``field`` before any worker starts when the Ray cluster has fewer GPUs
    than the scheme's workers ask for (their actors would wait for one until the worker timeout)."""
    available = ray.cluster_resources().get("GPU", 0.0)
    if needed > available:
        raise ConfigError(field, value, f"'cpu' or 'auto' on this Ray cluster: it has {available:g} GPUs and the "
                                        f"workers ask for {needed:g} (num_gpus x workers of each kind; a 'cuda' "
                                        "GWorker asks for 1 unless grad_worker_resources.num_gpus says otherwise)")


def shutdown() -> None:
    ray.shutdown()


def as_remote(cls: type[T], num_cpus: float, num_gpus: float = 0.0, resources: Mapping[str, float] | None = None,
              control_group: bool = False) -> Any:
    """``cls`` as a Ray actor class with these resources (no automatic restarts: the worker set
    recreates dead workers itself, so it always knows a worker is new and re-sends weights).

    ``control_group`` adds a one-thread concurrency group "control" whose calls run *while* a
    default-group call runs (a preemption signal reaching a collecting worker); the default group
    keeps one thread, so ordinary calls still run one at a time, in submission order.

    Calls of the class's :data:`HOT_PATH_METHODS` record no Ray task events.
    """
    groups = {"control": 1} if control_group else None
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, resources=dict(resources or {}) or None,
                      max_restarts=0, concurrency_groups=groups)(_without_hot_path_task_events(cls))


@functools.cache
def _without_hot_path_task_events(cls: type[T]) -> type[T]:
    """``cls``, with its :data:`HOT_PATH_METHODS` marked ``@ray.method(enable_task_events=False)``.

    The worker classes stay plain (no Ray import): the marks go on a subclass of the same name
    (so Ray's task names and process titles stay ``CWorker.collect``, ``ray::CWorker``) whose hot
    methods forward to the class's own. Ray reads the mark per method when it makes the actor
    class (``ray/actor.py``, ``_ActorClassMethodMetadata.create``), and a call's
    ``.options(concurrency_group=...)`` keeps it. Ray also has an actor-wide switch
    (``ray.remote(enable_task_events=False)``), which would hide the rare calls too.
    """
    methods = {}
    for name in sorted(HOT_PATH_METHODS):
        f = inspect.getattr_static(cls, name, None)
        if inspect.isfunction(f):  # an instance method (not a static or class method)
            methods[name] = ray.method(enable_task_events=False)(_forward(f))
    if not methods:
        return cls
    return type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                       "__doc__": cls.__doc__, **methods})


def _forward(f: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isfunction(f) or inspect.iscoroutinefunction(f) or inspect.isgeneratorfunction(f) \
            or inspect.isasyncgenfunction(f):  # Ray treats these apart; a plain forwarder would hide it
        raise TypeError(f"{f.__qualname__}: only plain methods can be marked as hot-path methods")

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return f(self, *args, **kwargs)

    method.__name__, method.__qualname__, method.__doc__ = f.__name__, f.__qualname__, f.__doc__
    # Not functools.wraps: Ray unwraps ``__wrapped__`` and would read the (unmarked) original. The
    # signature is the original's, so Ray still checks a call's arguments at ``.remote()``.
    method.__signature__ = inspect.signature(f)  # type: ignore[attr-defined]
    return method


def wait_named(futures: Mapping[Any, str], stage: str, timeout_s: float) -> list[Any]:
    """Results of every future, in the mapping's order; bounded by ``timeout_s``.

    Raises :class:`WorkerTimeoutError` naming the workers that did not answer, and
    :class:`WorkerDiedError` naming a worker whose process died.
    """
    out = outcomes(futures, stage, timeout_s)
    for x in out:
        if isinstance(x, WorkerDiedError):
            raise x
    return out


def outcomes(futures: Mapping[Any, str], stage: str, timeout_s: float, keep_errors: bool = False) -> list[Any]:
    """Like :func:`wait_named`, but a dead worker's entry is its :class:`WorkerDiedError` instead
    of raising, so a worker set can keep the survivors' results and replace the dead (node loss).
    ``keep_errors`` also returns (not raises) the error of a call that raised in a live worker."""
    refs = list(futures)
    ready, not_ready = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if not_ready:
        raise WorkerTimeoutError([futures[r] for r in not_ready], stage, timeout_s)
    out: list[Any] = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except RayActorError as e:
            err = WorkerDiedError(futures[ref], stage, e)
            err.__cause__ = e
            out.append(err)
        except RayTaskError as e:  # the call raised in a live worker
            if not keep_errors:
                raise
            out.append(e)
    return out


def call_all(actors: Sequence[Any], names: Sequence[str], method: str, args: Sequence[tuple[Any, ...]],
             timeout_s: float, replace: Callable[[int], Any] | None = None) -> list[Any]:
    """``actor.method(*args[i])`` on every actor at once; results in order, bounded and named.

    With ``replace``, a worker found dead is replaced (``replace(i)`` returns the new actor) and
    asked again, once; without it, its :class:`WorkerDiedError` is raised.
    """
    futures = {getattr(a, method).remote(*x): n for a, n, x in zip(actors, names, args, strict=True)}
    out = outcomes(futures, method, timeout_s)
    dead = [i for i, x in enumerate(out) if isinstance(x, WorkerDiedError)]
    if dead and replace is None:
        raise out[dead[0]]
    if dead:
        again = {getattr(replace(i), method).remote(*args[i]): names[i] for i in dead}  # type: ignore[misc]
        for i, x in zip(dead, wait_named(again, method, timeout_s), strict=True):
            out[i] = x
    return out


class RayActors:
    """A worker set's workers as Ray actors (``scheme/worker_set.py`` ``WorkerGroup``): a call is
    ``actor.method.remote(...)``, every wait is a bounded ``ray.wait`` that names who did not
    answer, and ``respawn`` replaces an actor by a new one from ``spawn`` (the actors have
    ``max_restarts=0``: the set always knows a worker is new, and re-sends it what it needs).
    """

    def __init__(self, spawn: Callable[[int], Any], names: list[str], timeout_s: float) -> None:
        self._spawn, self.names, self.timeout_s = spawn, names, timeout_s
        self.workers = [spawn(i) for i in range(len(names))]

    def call(self, method: str, args: Sequence[tuple[Any, ...]],
             replace: Callable[[int], None] | None = None) -> list[Any]:
        def replaced(i: int) -> Any:
            replace(i)  # type: ignore[misc]
            return self.workers[i]

        return call_all(self.workers, self.names, method, args, self.timeout_s, None if replace is None else replaced)

    def call_some(self, indices: Sequence[int], method: str, args: Sequence[tuple[Any, ...]],
                  stage: str) -> list[Any]:
        return wait_named({getattr(self.workers[i], method).remote(*a): self.names[i]
                           for i, a in zip(indices, args, strict=True)}, stage, self.timeout_s)

    def outcomes(self, method: str, args: Sequence[tuple[Any, ...]], keep_errors: bool) -> list[Any]:
        futures = {getattr(a, method).remote(*x): n for a, n, x in zip(self.workers, self.names, args, strict=True)}
        return outcomes(futures, method, self.timeout_s, keep_errors=keep_errors)

    def submit(self, i: int, method: str, *args: Any, background: bool = False) -> Any:
        return getattr(self.workers[i], method).remote(*args)  # an actor's call always runs apart

    def wait_any(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        """Every ref that is ready, waiting up to ``timeout_s`` for at least one (never sleep-polls)."""
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout_s)
        if not ready:
            return []
        ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)  # and all others done by now
        return ready

    def wait_some(self, handles: Sequence[Any], num_returns: int, timeout_s: float) -> tuple[list[Any], list[Any]]:
        """(ready, not ready) once ``num_returns`` of ``handles`` are ready, or after ``timeout_s``."""
        return ray.wait(list(handles), num_returns=num_returns, timeout=timeout_s)

    def result(self, handle: Any, i: int, stage: str) -> Any:
        try:
            return ray.get(handle)
        except RayActorError as e:
            raise WorkerDiedError(self.names[i], stage, e) from e

    def signal(self, i: int, method: str, *args: Any) -> None:
        """A call that runs *while* the worker's current call runs (``as_remote(control_group=True)``)."""
        getattr(self.workers[i], method).options(concurrency_group="control").remote(*args)

    def put(self, obj: Any) -> Any:
        return ray.put(obj)

    def respawn(self, i: int) -> None:
        kill(self.workers[i])
        self.workers[i] = self._spawn(i)

    def close(self, ask_first: bool) -> None:
        """Kill every actor; ``ask_first``: let each close itself first, best effort."""
        if ask_first:
            try:
                call_all(self.workers, self.names, "close", [()] * len(self.workers), self.timeout_s)
            except Exception:  # closing is best effort; the actors are killed next
                pass
        for a in self.workers:
            kill(a)


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def kill(actor: Any) -> None:
    try:
        ray.kill(actor)
    except Exception as e:  # already dead: nothing to do
        log.debug("kill: %s", e)
