"""envs/snapshot.py: exact resume of sync and async vector envs from a ``weights_only`` checkpoint."""

from __future__ import annotations

import functools
import io

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

from colonyrl.envs import EnvConfig, episode_stats
from colonyrl.envs.snapshot import restore, snapshot

# max_episode_steps=7: every sub-env is truncated at step 7 at the latest (random CartPole
# episodes rarely end sooner), so a snapshot after 7 steps has the next-step autoreset pending.
CFG = EnvConfig(num_envs=2, max_episode_steps=7)


def _actions(seed: int, steps: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(steps, CFG.num_envs))


def _play(env, actions) -> list[tuple[np.ndarray, ...]]:
    out = []
    for a in actions:
        obs, rew, term, trunc, info = env.step(a)
        returns, lengths = episode_stats(info)
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy(), returns, lengths))
    return out


def _through_checkpoint(saved):
    """What a resumed run gets back: the snapshot after torch.save + torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save({"env": saved}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)["env"]


@pytest.mark.parametrize("vectorization", ["sync", "async"])
@pytest.mark.parametrize(
    ("warmup", "target_warmup"),
    [(5, 0), (7, 0), (5, 7)],
    ids=["mid-episode", "autoreset-pending", "into-env-with-autoreset-pending"],
)
def test_resume_is_bit_exact(vectorization, warmup, target_warmup):
    cfg = CFG.replace(vectorization=vectorization)
    ref, _ = cfg.make(seed=0)
    target, _ = cfg.make(seed=1)  # other seeds: everything that matches must come from the snapshot
    try:
        _play(ref, _actions(0, warmup))
        _play(target, _actions(1, target_warmup))
        saved = _through_checkpoint(snapshot(ref))
        after = _actions(2, 12)  # crosses the time limit and the autoreset after it
        expected = _play(ref, after)
        restore(target, saved)
        got = _play(target, after)
        for step, (e, g) in enumerate(zip(expected, got, strict=True)):
            for name, a, b in zip(("obs", "reward", "terminated", "truncated", "ep_return", "ep_length"),
                                  e, g, strict=True):
                np.testing.assert_array_equal(b, a, err_msg=f"{name} at step {step} after resume")
    finally:
        ref.close()
        target.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_snapshot_survives_weights_only_load_and_holds_sub_env_state(vectorization):
    env, _ = CFG.replace(vectorization=vectorization).make()
    try:
        _play(env, _actions(0, 3))
        loaded = _through_checkpoint(snapshot(env))
    finally:
        env.close()
    carts = [entry["state"] for entry in loaded if entry["type"] == "CartPoleEnv"]
    assert len(carts) == CFG.num_envs
    assert all(isinstance(c["state"], torch.Tensor) and "_np_random" in c for c in carts)
    limits = [entry["state"] for entry in loaded if entry["type"] == "TimeLimit"]
    assert [t["_elapsed_steps"] for t in limits] == [3] * CFG.num_envs


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_restore_reports_coverage(vectorization):
    env, _ = CFG.replace(vectorization=vectorization).make()
    try:
        _play(env, _actions(0, 8))  # past the first episode ends (numpy counters in the statistics)
        report = restore(env, snapshot(env))
    finally:
        env.close()
    assert report.exact
    assert all(not layer.missed for layer in report.layers)
    carts = [layer for layer in report.layers if layer.type == "CartPoleEnv"]
    assert len(carts) == CFG.num_envs
    assert {"state", "steps_beyond_terminated", "_np_random"} <= set(carts[0].restored)


class _Simulator:
    """Stands for state kept outside plain attributes (MuJoCo's MjData, an emulator)."""


class _OpaqueEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self) -> None:
        self.sim = _Simulator()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_state_outside_plain_attributes_is_reported_not_exact():
    env = SyncVectorEnv([_OpaqueEnv])
    try:
        env.reset(seed=0)
        saved = snapshot(env)
        report = restore(env, saved)
    finally:
        env.close()
    assert not report.exact
    assert [layer.missed for layer in report.layers if layer.type == "_OpaqueEnv"] == [("sim",)]


def test_async_sub_envs_not_built_by_colonyrl_are_reported_not_exact():
    env = AsyncVectorEnv([functools.partial(gymnasium.make, "CartPole-v1")] * 2, context="spawn")
    try:
        env.reset(seed=0)
        saved = snapshot(env)
        report = restore(env, saved)
    finally:
        env.close()
    assert not report.exact
    assert sum(1 for layer in report.layers if layer.missed) == 2  # one per sub-env


def test_restore_into_a_different_env_raises():
    sync, _ = CFG.make()
    other, _ = CFG.replace(id="Pendulum-v1").make()
    try:
        with pytest.raises(ValueError, match="does not match"):
            restore(other, snapshot(sync))
    finally:
        sync.close()
        other.close()
