"""The measuring pieces of benchmarks/collection_throughput.py and async_overlap.py, in-process
(no Ray, a few seconds): windows count real env steps, async windows drain, replay collects nothing."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import async_overlap  # noqa: E402
import collection_throughput  # noqa: E402
import common  # noqa: E402

from colonyrl.launch.scripts.cartpole_inprocess import SCHEME  # noqa: E402
from colonyrl.scheme.packets import Weights  # noqa: E402
from colonyrl.scheme.scheme import Scheme  # noqa: E402
from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec  # noqa: E402


def small_components(num_envs: int = 2, num_steps: int = 8):
    comps = SCHEME.components()
    return dataclasses.replace(comps, env=comps.env.replace(num_envs=num_envs),
                               storage=comps.storage.replace(num_steps=num_steps))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_measure_counts_whole_rollouts_and_drains(mode: str) -> None:
    comps = small_components()
    weights = collection_throughput.initial_weights(comps)
    cworkers = CWorkerSet(CWorkerSpec(0, 2, False), comps)
    try:
        out = collection_throughput.measure(cworkers, weights, mode, warmup_s=0.05, window_s=0.2)
        assert out["env_steps"] > 0 and out["env_steps"] % 16 == 0  # whole rollouts of 2 envs x 8 steps
        assert out["seconds"] >= 0.2 and out["fps"] == pytest.approx(out["env_steps"] / out["seconds"])
        assert out["worker_fps"] > 0 and 0 < out["worker_busy_share"] <= 1.5
        # Nothing left in flight: a plain round runs at once on the same workers.
        assert len(cworkers.collect(Weights(10**9, weights))) == 2
    finally:
        cworkers.close()


def test_replay_window_trains_without_stepping_envs() -> None:
    comps = small_components(num_envs=4, num_steps=16)  # 64 env steps a round
    foreign = common.ForeignCPU(interval_s=None)
    with Scheme(SCHEME.scheme, comps) as scheme:
        gworker = scheme.learner.gworkers.workers[0]
        replay = async_overlap.ReplayCollection(gworker.collection, keep=3)
        gworker.collection = replay
        cworker = gworker.cworkers.workers[0]
        seen: list[object] = []

        def start_replay() -> None:
            replay.replay()
            seen.append(cworker.obs)

        out = async_overlap.train_window(scheme.learner, 256, 320, foreign, at_start=start_replay)
        assert replay.replaying and len(replay.recorded) == 3
        assert cworker.obs is seen[0]  # no env step during the replayed window
        assert out["env_steps"] == 320 and out["rounds"] == 5 and out["updates"] > 0
        assert out["warmup_env_steps"] == 256
    foreign.close()
