"""Ray plumbing (scheme/remote.py): hot-path actor calls leave no task events in Ray's GCS.

Ray records a task event for every actor call and keeps up to ``task_events_max_num_task_in_gcs``
(100,000 by default) of them in the GCS; at hundreds of calls a second that is a GCS growing for
minutes (benchmarks/soak.py). The state API (``ray.util.state.list_tasks``) answers through the
dashboard, which the test session's Ray instance does not run, so the events are read where
``ray.timeline()`` reads them: the GCS (``ray/_private/state.py``, ``_get_all_task_events``).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from colonyrl.scheme import remote

pytestmark = pytest.mark.ray

CALLS = 20


class TaskEventsProbe:
    """A plain class with the worker classes' hot-path method names and a control method."""

    def collect(self, weights: object = None, round_id: int = -1, min_fraction: float = 1.0) -> int:
        return round_id

    def step(self, version: int, weights: object = None) -> int:
        return version

    def start_round(self, version: int, weights: object = None) -> int:
        return version

    def request_stop(self, round_id: int) -> str:
        return "probe"

    def set_weights(self, weights: object) -> None:
        return None

    def ping(self) -> str:
        return "pong"


def _task_events(actor_id: bytes) -> Counter[str]:
    """Task events in the GCS of this actor's calls, by method name (``TaskEventsProbe.ping``)."""
    import ray

    events = ray._private.state.state._get_all_task_events()
    return Counter(e.task_info.name for e in events if e.task_info.actor_id == actor_id)


def test_hot_path_calls_record_no_task_events(ray_local) -> None:
    ray = ray_local
    actor = remote.as_remote(TaskEventsProbe, num_cpus=0, control_group=True).remote()
    actor_id = actor._actor_id.binary()
    try:
        # The hot-path calls first, as the worker sets make them (remote.RayActors) ...
        ray.get([actor.collect.remote(None, i, 1.0) for i in range(CALLS)])
        ray.get([actor.step.remote(i, None) for i in range(CALLS)])
        ray.get([actor.start_round.remote(i, None) for i in range(CALLS)])
        ray.get([actor.request_stop.options(concurrency_group="control").remote(i) for i in range(CALLS)])
        for _ in range(CALLS):
            remote.call_all([actor], ["probe"], "set_weights", [(None,)], timeout_s=30.0)
        # ... then a control method's: once its events are in the GCS, the earlier calls' would be too
        # (workers flush their buffered events every task_events_report_interval_ms, 1 s by default).
        ray.get([actor.ping.remote() for _ in range(CALLS)])
        deadline = time.monotonic() + 30.0
        counts = _task_events(actor_id)
        while counts["TaskEventsProbe.ping"] < CALLS and time.monotonic() < deadline:
            time.sleep(0.5)
            counts = _task_events(actor_id)
        assert counts["TaskEventsProbe.ping"] == CALLS, counts  # the check sees recorded calls
        hot = {m: counts[f"TaskEventsProbe.{m}"] for m in ("collect", "step", "start_round", "request_stop",
                                                            "set_weights")}
        assert hot == dict.fromkeys(hot, 0), counts
        with pytest.raises(TypeError):  # the marked methods keep their signatures: checked at the call
            actor.step.remote(1, None, "no such argument")
    finally:
        ray.kill(actor)


def test_hot_path_names_are_the_worker_classes_methods() -> None:
    """The names in HOT_PATH_METHODS are what the worker sets call on every round or step, and
    marking them leaves the plain worker classes untouched."""
    from colonyrl.scheme.c_worker import CWorker
    from colonyrl.scheme.g_worker import GWorker

    assert {"collect", "request_stop", "set_weights", "start_round", "step",
            "update_parameter"} <= remote.HOT_PATH_METHODS
    # their own or their control mixin's (scheme/control.py: update_parameter)
    assert all(callable(getattr(CWorker, name, None)) or callable(getattr(GWorker, name, None))
               for name in remote.HOT_PATH_METHODS)
    marked = remote._without_hot_path_task_events(CWorker)
    assert marked is not CWorker and issubclass(marked, CWorker) and marked.__name__ == "CWorker"
    assert marked.collect.__ray_enable_task_events__ is False
    assert not hasattr(CWorker.collect, "__ray_enable_task_events__")
    assert not hasattr(marked.ping, "__ray_enable_task_events__")
    import inspect

    def params(f) -> list[str]:  # Ray's tracing hook adds a keyword-only _ray_trace_ctx once used
        return [p for p in inspect.signature(f).parameters if p != "_ray_trace_ctx"]

    assert params(marked.collect) == params(CWorker.collect)
