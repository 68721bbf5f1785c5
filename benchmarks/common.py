"""Shared pieces of the benchmarks: one evaluator for every system, noise readings, statistics.

Everything heavy (numpy, gymnasium) is imported inside the functions that need it, so the parent
process of a benchmark, which only starts workers and prints tables, stays light.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EVAL_EPISODES", "EVAL_EVERY", "SOLVE_RETURN", "eval_seed", "evaluate_policy_fn", "Noise",
           "cpu_times", "median_range", "fmt_median_range"]

#: Deterministic episodes per evaluation, one per sub-env, run side by side.
EVAL_EPISODES = 10
#: Evaluate whenever the env-step counter crosses a multiple of this.
EVAL_EVERY = 10_000
#: Solved when the mean evaluation return is at least this.
SOLVE_RETURN = 475.0


def eval_seed(train_seed: int) -> int:
    """Reset seed of the evaluation envs (sub-env i gets ``eval_seed + i``): the same for every system,
    the same at every evaluation of a run, apart from any training env's seed."""
    return 1_000_000 + 1_000 * train_seed


def evaluate_policy_fn(policy: Callable[[Any], Any], seed: int, episodes: int = EVAL_EPISODES,
                       env_id: str = "CartPole-v1") -> tuple[float, list[float]]:
    """Mean return of ``episodes`` episodes of a deterministic policy on fresh envs.

    ``policy(obs_batch: np.ndarray [episodes, *obs_shape]) -> actions [episodes]``. The episodes run
    side by side in one ``SyncVectorEnv`` (built fresh for every call); each sub-env counts its first
    episode only, and the loop ends when every sub-env has finished one.
    """
    import gymnasium as gym
    import numpy as np

    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)])
    try:
        obs, _ = venv.reset(seed=seed)  # sub-env i: seed + i
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            actions = np.asarray(policy(obs)).reshape(episodes)
            obs, reward, terminated, truncated, _ = venv.step(actions)
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
    finally:
        venv.close()
    return float(returns.mean()), [float(r) for r in returns]


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat (None where it does not exist)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


class Noise:
    """Load average and machine-wide CPU-busy fraction over a span: how busy the machine was."""

    def __init__(self) -> None:
        self.start_wall = time.time()
        self.load_start = list(os.getloadavg())
        self._cpu = cpu_times()

    def reading(self) -> dict[str, Any]:
        end = cpu_times()
        busy = None
        if self._cpu is not None and end is not None and end[1] > self._cpu[1]:
            busy = (end[0] - self._cpu[0]) / (end[1] - self._cpu[1])
        return {"loadavg_start": self.load_start, "loadavg_end": list(os.getloadavg()),
                "cpu_busy_fraction": busy, "span_s": time.time() - self.start_wall,
                "cpu_count": os.cpu_count()}


def median_range(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt_median_range(values: Sequence[float | None], digits: int = 1) -> str:
    """``median (min-max)``, or ``median`` alone for one value, ``-`` for none."""
    mr = median_range(values)
    if mr is None:
        return "-"
    med, lo, hi = mr
    f = (lambda x: f"{x:.{digits}f}") if digits > 0 else (lambda x: f"{x:.0f}")
    if len([v for v in values if v is not None]) == 1:
        return f(med)
    return f"{f(med)} ({f(lo)}-{f(hi)})"
