"""GAE on the next-step autoreset layout equals SB3's RolloutBuffer with SB3's time-limit bootstrap.

SB3 (``stable_baselines3/common/on_policy_algorithm.py::collect_rollouts``) adds
``gamma * V(terminal_obs)`` to the reward of a step whose info says ``TimeLimit.truncated`` and then
treats every episode end as terminal in ``RolloutBuffer.compute_returns_and_advantage``. colonyrl
keeps termination and truncation apart and reads V(final obs) from the autoreset step that follows
(``valid=False``, dropped before training). On random episodes the advantages and returns of the
real transitions must be the same. Skipped where SB3 (the ``bench`` extra) is not installed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.buffers import RolloutBuffer  # noqa: E402

from colonyrl.storage.gae import generalized_advantage_estimate  # noqa: E402


def _sb3(r, v, done, trunc, v_final, v_last, gamma, lam):
    """SB3's collect_rollouts bookkeeping for one env, then its GAE."""
    steps = len(r)
    buf = RolloutBuffer(steps, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), device="cpu",
                        gae_lambda=lam, gamma=gamma, n_envs=1)
    episode_start = True
    for t in range(steps):
        reward = r[t] + (gamma * v_final[t] if trunc[t] else 0.0)  # "Handle timeout by bootstrapping"
        buf.add(np.zeros((1, 1), np.float32), np.zeros((1, 1)), np.array([reward], np.float32),
                np.array([episode_start]), torch.tensor([[v[t]]]), torch.tensor([0.0]))
        episode_start = bool(done[t])
    last = v_final[-1] if done[-1] else v_last  # SB3: V(new_obs); masked by dones[-1] anyway
    buf.compute_returns_and_advantage(torch.tensor([last]), np.array([done[-1]]))
    return buf.advantages[:, 0], buf.returns[:, 0]


def _colonyrl(r, v, term, trunc, v_final, v_last, gamma, lam):
    """The CWorker's layout: after each episode end an invalid autoreset row, whose V is V(final obs)."""
    rows = []  # (reward, value, terminated, truncated, valid)
    for t in range(len(r)):
        rows.append((r[t], v[t], term[t], trunc[t], True))
        if (term[t] or trunc[t]) and t < len(r) - 1:
            rows.append((0.0, v_final[t], False, False, False))
    done_last = term[-1] or trunc[-1]
    values = [row[1] for row in rows] + [v_final[-1] if done_last else v_last]
    col = [np.asarray(c)[:, None] for c in zip(*rows, strict=True)]
    adv, ret = generalized_advantage_estimate(
        col[0].astype(np.float32), np.asarray(values, np.float32)[:, None], col[2].astype(bool),
        col[3].astype(bool), col[4].astype(bool), gamma, lam)
    valid = col[4][:, 0].astype(bool)
    return adv[valid, 0], ret[valid, 0]


@pytest.mark.parametrize("seed", range(5))
def test_gae_with_truncation_matches_sb3_rollout_buffer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        steps = int(rng.integers(1, 48))
        gamma, lam = float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.0, 1.0))
        scale = 100.0  # large rewards and values, as on Pendulum or LunarLander
        r, v, v_final = (rng.normal(size=steps).astype(np.float32) * scale for _ in range(3))
        v_last = np.float32(rng.normal() * scale)
        done = rng.random(steps) < 0.25
        trunc = done & (rng.random(steps) < 0.5)
        term = done & ~trunc
        sb3_adv, sb3_ret = _sb3(r, v, done, trunc, v_final, v_last, gamma, lam)
        adv, ret = _colonyrl(r, v, term, trunc, v_final, v_last, gamma, lam)
        np.testing.assert_allclose(adv, sb3_adv, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(ret, sb3_ret, rtol=1e-5, atol=1e-3)
