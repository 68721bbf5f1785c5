"""A vectorised sum tree (and min tree) over leaf priorities, for prioritized experience replay.

Schaul et al. 2016, "Prioritized Experience Replay", https://arxiv.org/abs/1511.05952 (appendix
B.2.1, proportional variant): sampling ``P(i) = p_i / sum_k p_k`` in O(log N) by descending a
binary tree whose nodes hold the sums of their children. The min tree gives ``min_i p_i`` for the
importance-sampling normalisation ``max_j w_j`` (as OpenAI baselines' ``MinSegmentTree`` and
SB3-contrib's ``SumTree`` pair do).

Layout: one flat array per tree with ``2 * L`` entries, ``L`` = capacity rounded up to a power of
two; node 1 is the root, node ``i`` has children ``2i`` and ``2i + 1``, leaf ``j`` is node
``L + j``. Updates recompute each touched parent from its two children (never ``+= delta``), so
the sums do not drift however many updates run. Every operation is a numpy loop over the
``log2 L`` levels, vectorised over the indices it is given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]


class SumTree:
    """Priorities of ``capacity`` leaves (float64, initially 0: never sampled)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.num_leaves = 1 << (self.capacity - 1).bit_length()  # power of two >= capacity
        self._sum = np.zeros(2 * self.num_leaves, np.float64)
        self._min = np.full(2 * self.num_leaves, np.inf)  # inf: an unset leaf is never the minimum

    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """Smallest priority of the leaves set so far (``inf`` if none)."""
        return float(self._min[1])

    @property
    def priorities(self) -> np.ndarray:
        """The ``capacity`` leaf priorities (a read-only view)."""
        view = self._sum[self.num_leaves:self.num_leaves + self.capacity]
        view.flags.writeable = False
        return view

    def __getitem__(self, indices: np.ndarray | int) -> np.ndarray:
        return self._sum[self.num_leaves + self._check(indices)]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set ``priorities[k]`` at leaf ``indices[k]`` (>= 0, finite); with repeated indices the
        last one wins (numpy fancy assignment)."""
        indices = self._check(indices).reshape(-1)
        priorities = np.asarray(priorities, np.float64).reshape(-1)
        if priorities.shape != indices.shape:
            raise ValueError(f"{indices.size} indices but {priorities.size} priorities")
        if not np.all(np.isfinite(priorities) & (priorities >= 0)):
            raise ValueError("priorities must be finite and >= 0")
        if indices.size == 0:
            return
        nodes = indices + self.num_leaves
        self._sum[nodes] = priorities
        # a zero priority is "never sampled": keep it out of the minimum
        self._min[nodes] = np.where(priorities > 0, priorities, np.inf)
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            left, right = 2 * nodes, 2 * nodes + 1
            self._sum[nodes] = self._sum[left] + self._sum[right]
            self._min[nodes] = np.minimum(self._min[left], self._min[right])
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each value v in ``[0, total)``, the leaf i with ``sum_{j<i} p_j <= v < sum_{j<=i} p_j``
        (int64). Values at or past ``total`` (rounding) give the last leaf with a priority; a leaf
        with priority 0 is never returned while the total is positive."""
        if self.total <= 0.0:
            raise ValueError("cannot sample from a sum tree whose priorities are all 0")
        values = np.asarray(prefix_sums, np.float64).copy()
        nodes = np.ones(values.shape, np.int64)
        while nodes.size and nodes.flat[0] < self.num_leaves:  # every node is at the same depth
            left = 2 * nodes
            left_sum = self._sum[left]
            # go right past the left subtree's mass, unless the right subtree is empty (rounding)
            right = (values >= left_sum) & (self._sum[left + 1] > 0.0)
            values = np.where(right, values - left_sum, values)
            nodes = np.where(right, left + 1, left)
        return nodes - self.num_leaves

    def _check(self, indices: np.ndarray | int) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(f"leaf indices must be in [0, {self.capacity}), got {indices.min()}..{indices.max()}")
        return indices
