"""Shared by the off-policy algorithm tests: a replay memory filled with random transitions, and
seeded updates on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.storage.replay import ReplayConfig, ReplayMemory


def fill_random(obs_space: gym.spaces.Box, action_space: gym.spaces.Box, extras: Any, n: int = 64,
                seed: int = 0, terminated: float = 0.2, memory_size: int = 128) -> ReplayMemory:
    """A memory of ``n`` uniform random transitions (observations in [-1, 1], actions in the Box,
    normal rewards, a ``terminated`` fraction of terminal ones), all from ``seed``."""
    memory = ReplayConfig(memory_size=memory_size).build(obs_space, action_space, 1, extras)
    rng = np.random.default_rng(seed)
    shape = (n, *obs_space.shape)
    memory.add_transitions({"obs": rng.uniform(-1, 1, shape).astype(np.float32),
                            "actions": rng.uniform(action_space.low, action_space.high,
                                                   (n, *action_space.shape)).astype(np.float32),
                            "rewards": rng.normal(size=n).astype(np.float32),
                            "next_obs": rng.uniform(-1, 1, shape).astype(np.float32),
                            "terminated": rng.random(n) < terminated, "truncated": np.zeros(n, bool)}, "random")
    return memory


@pytest.fixture
def random_memory() -> Callable[..., ReplayMemory]:
    return fill_random


def seeded_updates(algo: Any, memory: ReplayMemory, batches: int = 4, batch_size: int = 16) -> list[Any]:
    """The ``GradientResult`` of each of ``batches`` compute -> apply updates on ``memory``, the
    sampling and the noise (reparameterization, target smoothing) seeded alike every time."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(7)
    results = []
    for _ in range(batches):
        result = algo.compute_gradients(memory.sample(batch_size, generator))
        algo.apply_gradients(result.grads)
        results.append(result)
    return results


@pytest.fixture
def updates() -> Callable[..., list[Any]]:
    return seeded_updates
