"""What the Learner reports: a window's running sums and means (:class:`Metrics`), and which packet
info keys are durations, per-worker figures or event counts (how ``Learner.pop_metrics`` logs them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from colonyrl.scheme.packets import EpisodeStats

__all__ = ["Metrics", "TIME_KEYS", "FIGURE_PREFIXES", "COUNT_KEYS"]

# Packet info keys that are durations: summed over a logging window and reported as time shares.
TIME_KEYS = {"collect_time_s": "collection", "prepare_time_s": "prepare", "grad_time_s": "gradients"}
# Packet info keys ``<prefix><worker>`` that are per-worker figures (``worker_figures``, launch/topology.py).
FIGURE_PREFIXES = ("collect_fps/", "policy_lag/", "rollout_bytes_raw/", "rollout_bytes_wire/", "restarts/")
# Packet info keys that are counts of events since the worker's previous packet: running totals.
COUNT_KEYS = ("dropped_rollouts", "dropped_env_steps", "restarts", "gworker_restarts", "lost_env_steps", "preemptions",
           "nonfinite_updates")


class Metrics:
    """Means (and sums for durations and bytes) of everything reported since the last ``pop``."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.returns: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += v
            self.counts[k] += 1

    def add_episodes(self, episodes: EpisodeStats) -> None:
        if episodes.returns.size:
            self.returns.append(episodes.returns)
            self.lengths.append(episodes.lengths)

    def pop(self) -> tuple[dict[str, float], dict[str, float], np.ndarray, np.ndarray]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        sums = dict(self.sums)
        returns = np.concatenate(self.returns) if self.returns else np.zeros(0)
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0)
        self.__init__()  # type: ignore[misc]
        return means, sums, returns, lengths
