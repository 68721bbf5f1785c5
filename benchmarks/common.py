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

__all__ = ["EVAL_EPISODES", "EVAL_EVERY", "SOLVE_RETURN", "eval_seed", "evaluate_policy_fn", "Noise", "ForeignCPU",
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

    ``policy(obs_batch: np.ndarray [episodes, *obs_shape]) -> actions [episodes, *action_shape]``
    (``[episodes]`` for Discrete). The episodes run side by side in one ``SyncVectorEnv`` (built fresh
    for every call); each sub-env counts its first episode only, and the loop ends when every sub-env
    has finished one.
    """
    import gymnasium as gym
    import numpy as np

    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)])
    try:
        obs, _ = venv.reset(seed=seed)  # sub-env i: seed + i
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            actions = np.asarray(policy(obs)).reshape(episodes, *venv.single_action_space.shape)
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


class ForeignCPU:
    """CPU time of every process *outside* this process tree, sampled from /proc in a thread.

    The machine is shared: the load average cannot tell our own busy workers from someone else's
    job. This counts CPU-seconds of processes that are not descendants of ``root_pid`` (once seen
    as ours, a pid stays ours, so Ray processes re-parented on exit are not blamed on others).
    Time of processes that start and end between two samples is missed (sampling every 0.5 s).
    With ``interval_s=None`` there is no sampling thread: call :meth:`sample` at the ends of each
    span instead (for a span in which no process of ours starts, e.g. a timed window inside a
    worker, whose GIL the sampling thread would otherwise share).
    """

    def __init__(self, root_pid: int | None = None, interval_s: float | None = 0.5) -> None:
        import threading

        self.root = root_pid or os.getpid()
        self.interval = interval_s
        self.tck = os.sysconf("SC_CLK_TCK")
        self.ours: set[int] = {self.root}
        self.prev: dict[int, float] = {}
        self.history: list[tuple[float, float, float]] = []  # (time, foreign cpu-s, our cpu-s), cumulative
        self._foreign = self._own = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread: threading.Thread | None = None
        if interval_s is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _read(self) -> dict[int, tuple[int, float]]:
        out = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / self.tck)  # ppid, utime+stime
        return out

    def _sample(self, first: bool = False) -> None:
        procs = self._read()
        changed = True
        while changed:  # descendants of root (a few passes cover any depth seen so far)
            changed = False
            for pid, (ppid, _) in procs.items():
                if pid not in self.ours and ppid in self.ours:
                    self.ours.add(pid)
                    changed = True
        foreign = own = 0.0
        for pid, (_, cpu) in procs.items():
            delta = cpu - self.prev.get(pid, 0.0 if not first else cpu)
            if delta < 0:  # pid reused
                delta = cpu
            if pid in self.ours:
                own += delta
            else:
                foreign += delta
        self.prev = {pid: cpu for pid, (_, cpu) in procs.items()}
        with self._lock:
            self._foreign += foreign
            self._own += own
            self.history.append((time.time(), self._foreign, self._own))

    def _run(self) -> None:
        while not self._stop.wait(self.interval or 0.5):
            try:
                self._sample()
            except Exception:  # never let the sampler kill a benchmark
                pass

    def sample(self) -> tuple[float, float, float]:
        """Sample now and return the reading (for ``interval_s=None``)."""
        self._sample()
        return self.now()

    def now(self) -> tuple[float, float, float]:
        with self._lock:
            return self.history[-1]

    def between(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> dict[str, float]:
        span = max(b[0] - a[0], 1e-9)
        return {"foreign_cpu_s": b[1] - a[1], "foreign_cores": (b[1] - a[1]) / span,
                "own_cpu_s": b[2] - a[2], "own_cores": (b[2] - a[2]) / span, "span_s": span}

    def recent_foreign_cores(self, window_s: float) -> float:
        with self._lock:
            hist = list(self.history)
        end = hist[-1]
        start = next((h for h in hist if h[0] >= end[0] - window_s), hist[0])
        return (end[1] - start[1]) / max(end[0] - start[0], 1e-9)

    def wait_quiet(self, max_cores: float, window_s: float, max_wait_s: float) -> float:
        """Wait (at most ``max_wait_s``) until others used < ``max_cores`` over the last ``window_s``.
        Returns the seconds waited."""
        start = time.time()
        time.sleep(min(window_s, max_wait_s))  # a full window of fresh samples first
        while time.time() - start < max_wait_s and self.recent_foreign_cores(window_s) >= max_cores:
            time.sleep(self.interval)
        return time.time() - start

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
