"""agents/off_policy.py's ConcurrentLosses: results in order, errors raised, no task left running."""

from __future__ import annotations

import copy
import pickle
import threading
import time

import pytest

from colonyrl.agents.off_policy import ConcurrentLosses


@pytest.mark.parametrize("threads", [1, 2])
def test_results_come_back_in_the_order_of_the_tasks(threads):
    ran_on = {}

    def task(name):
        def run():
            ran_on[name] = threading.current_thread().name
            return name
        return run

    assert ConcurrentLosses(threads).run(task("a"), task("b")) == ["a", "b"]
    assert ran_on["a"] == threading.main_thread().name
    assert ran_on["b"].startswith("colonyrl-loss") == (threads == 2)


def test_a_task_error_is_raised_and_the_callers_error_waits_for_the_other_task():
    runner = ConcurrentLosses(2)

    def boom():
        raise ValueError("from the pool")

    with pytest.raises(ValueError, match="from the pool"):
        runner.run(lambda: 1, boom)
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)

    def caller_fails():
        raise RuntimeError("from the caller")

    with pytest.raises(RuntimeError, match="from the caller"):
        runner.run(caller_fails, slow)
    assert finished == [True]  # run() did not return while the pool's task was still running


def test_copies_and_pickles_carry_the_thread_count_not_the_pool():
    runner = ConcurrentLosses(2)
    runner.run(lambda: 0, lambda: 1)
    assert runner._pool is not None
    for clone in (copy.deepcopy(runner), pickle.loads(pickle.dumps(runner))):
        assert clone.threads == 2 and clone._pool is None
        assert clone.run(lambda: "x", lambda: "y") == ["x", "y"]
