"""SumTree: power-of-two layout, totals, prefix-sum search against a cumulative sum, min tracking."""

from __future__ import annotations

import numpy as np
import pytest

from colonyrl.storage.sum_tree import SumTree


@pytest.mark.parametrize(("capacity", "leaves"), [(1, 1), (2, 2), (5, 8), (8, 8), (1000, 1024)])
def test_leaves_are_a_power_of_two(capacity, leaves):
    tree = SumTree(capacity)
    assert tree.num_leaves == leaves and tree.total == 0.0 and tree.min == np.inf
    assert tree.priorities.shape == (capacity,)


@pytest.mark.parametrize("capacity", [1, 3, 8, 13, 100])
def test_find_matches_searchsorted_on_the_cumulative_sum(capacity):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    priorities = rng.random(capacity) * (rng.random(capacity) > 0.3)  # some zeros
    priorities[0] = max(priorities[0], 0.5)  # at least one leaf can be found
    tree.update(np.arange(capacity), priorities)
    assert tree.total == pytest.approx(priorities.sum())
    assert tree.min == pytest.approx(priorities[priorities > 0].min())
    values = rng.random(2000) * tree.total
    expected = np.searchsorted(np.cumsum(priorities), values, side="right")
    np.testing.assert_array_equal(tree.find(values), expected)
    assert (priorities[tree.find(values)] > 0).all()


def test_boundaries_and_values_at_the_total():
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 0.0, 2.0, 0.0]))
    # [0, 1) -> leaf 0, [1, 3) -> leaf 2; leaves with priority 0 are never returned
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.999, 1.0, 2.5, 3.0, 3.5])), [0, 0, 2, 2, 2, 2])


def test_partial_updates_keep_every_sum_exact():
    rng = np.random.default_rng(0)
    tree, mirror = SumTree(37), np.zeros(37)
    for _ in range(200):
        indices = rng.integers(0, 37, rng.integers(1, 10))
        values = rng.random(len(indices))
        tree.update(indices, values)
        mirror[indices] = values  # repeated indices: the last one wins, as numpy assignment
        np.testing.assert_array_equal(tree.priorities, mirror)
        np.testing.assert_array_equal(tree[indices], mirror[indices])
        assert tree.total == pytest.approx(mirror.sum(), rel=1e-12)
        assert tree.min == mirror[mirror > 0].min()


def test_update_with_repeated_indices_keeps_the_last():
    tree = SumTree(4)
    tree.update(np.array([1, 1, 1]), np.array([5.0, 6.0, 7.0]))
    assert tree.total == 7.0 and tree[1] == 7.0


def test_invalid_updates_and_searches_raise():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="all 0"):
        tree.find(np.array([0.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError, match="finite"):
        tree.update(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="priorities"):
        tree.update(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(ValueError):
        SumTree(0)
    with pytest.raises(ValueError):
        tree.priorities[0] = 1.0  # a read-only view
