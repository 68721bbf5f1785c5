"""envs/split.py: a double-buffered env (EnvConfig.double_buffered) is the unsplit env in two halves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from colonyrl.config import ConfigError
from colonyrl.envs import EnvConfig
from colonyrl.envs.normalization import NormalizeConfig
from colonyrl.envs.snapshot import restore, snapshot
from colonyrl.envs.split import SplitVectorEnv, merge_infos

# 5 sub-envs: halves of 2 and 3; a 20-step limit makes episodes end (and autoreset) in 300 steps
CARTPOLE = EnvConfig(num_envs=5, max_episode_steps=20)


def _pair(cfg: EnvConfig, seed: int = 3, worker_index: int = 1):
    plain, obs_plain = cfg.make(seed=seed, worker_index=worker_index)
    split, obs_split = cfg.replace(double_buffered=True).make(seed=seed, worker_index=worker_index)
    assert isinstance(split, SplitVectorEnv) and split.sizes == (cfg.num_envs // 2, cfg.num_envs - cfg.num_envs // 2)
    np.testing.assert_array_equal(obs_plain, obs_split)  # each sub-env its unsplit seed
    return plain, split


def _same_steps(plain, split, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ended = 0
    for _ in range(steps):
        actions = rng.integers(0, plain.single_action_space.n, plain.num_envs)
        a, b = plain.step(actions), split.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):  # obs, reward, terminated, truncated
            np.testing.assert_array_equal(x, y)
        assert a[4].keys() == b[4].keys()
        for key in a[4]:
            if isinstance(a[4][key], dict):  # RecordEpisodeStatistics' "episode": r, l, t
                np.testing.assert_array_equal(a[4][key]["r"], b[4][key]["r"])
                np.testing.assert_array_equal(a[4][key]["l"], b[4][key]["l"])
            else:
                np.testing.assert_array_equal(a[4][key], b[4][key])
        ended += int(np.sum(a[2] | a[3]))
    assert ended > 0  # the comparison went through episode ends and autoresets


def test_split_cartpole_steps_as_the_unsplit_env_through_autoresets() -> None:
    plain, split = _pair(CARTPOLE)
    try:
        _same_steps(plain, split, 300)
    finally:
        plain.close()
        split.close()


def test_split_ale_pong_steps_as_the_unsplit_env() -> None:
    pytest.importorskip("ale_py", reason="needs the atari extra")
    plain, split = _pair(EnvConfig(id="ALE/Pong-v5", num_envs=4, vectorization="ale", max_episode_steps=60))
    try:
        _same_steps(plain, split, 150)
    finally:
        plain.close()
        split.close()


def test_halves_step_one_by_one_and_misuse_is_an_error() -> None:
    split, _ = CARTPOLE.replace(double_buffered=True).make()
    try:
        split.step_async(1, np.zeros(3, np.int64))
        with pytest.raises(RuntimeError, match="half 1 is stepping already"):
            split.step_async(1, np.zeros(3, np.int64))
        with pytest.raises(RuntimeError, match="half 0 was not sent actions"):
            split.step_wait(0)
        with pytest.raises(RuntimeError, match="while a half is stepping"):
            split.reset()
        obs, reward, *_ = split.step_wait(1)
        assert obs.shape == (3, 4) and reward.shape == (3,)
    finally:
        split.close()


def test_merge_infos_fills_what_one_half_lacks_as_gymnasium_does() -> None:
    a = {"episode": {"r": np.array([1.0, 2.0]), "l": np.array([3, 4])}, "_episode": np.array([True, False])}
    b = {"lives": np.array([5, 5, 4], np.int32), "_lives": np.array([True, True, True])}
    out = merge_infos(a, b, (2, 3))
    np.testing.assert_array_equal(out["episode"]["r"], [1.0, 2.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["_episode"], [True, False, False, False, False])
    np.testing.assert_array_equal(out["lives"], [0, 0, 5, 5, 4])
    assert out["lives"].dtype == np.int32 and out["_lives"].dtype == bool


def test_a_split_env_resumes_exactly_from_a_weights_only_checkpoint() -> None:
    cfg = CARTPOLE.replace(double_buffered=True)
    env, _ = cfg.make(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(13):
        env.step(rng.integers(0, 2, 5))
    buf = io.BytesIO()
    torch.save({"env": snapshot(env)}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)["env"]
    resumed, _ = cfg.make(seed=99)  # other seeds: everything comes from the snapshot
    report = restore(resumed, saved)
    try:
        assert report.exact and len(report.layers) > 4
        _same_steps(env, resumed, 60, seed=2)
        with pytest.raises(ValueError, match="double_buffered differs"):
            restore(CARTPOLE.make()[0], saved)
    finally:
        env.close()
        resumed.close()


def test_double_buffering_one_sub_env_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="EnvConfig.num_envs"):
        EnvConfig(double_buffered=True, num_envs=1)
    EnvConfig(double_buffered=True, normalize=NormalizeConfig(obs=True, reward=True))  # by halves: tests/scheme


def test_an_evaluation_env_of_one_episode_is_built_unsplit() -> None:
    """``make(num_envs=1)`` (``--eval-episodes 1``) of a double-buffered config: one plain sub-env,
    not a ConfigError; two or more are split as in training."""
    config = EnvConfig(double_buffered=True, num_envs=4)
    one, _ = config.make(num_envs=1)
    two, _ = config.make(num_envs=2)
    try:
        assert not isinstance(one, SplitVectorEnv) and one.num_envs == 1
        assert isinstance(two, SplitVectorEnv) and two.sizes == (1, 1)
    finally:
        one.close()
        two.close()


def test_a_partial_reset_mask_reaches_each_half_as_its_rows() -> None:
    plain, split = _pair(CARTPOLE)
    try:
        for env in (plain, split):
            env.step(np.ones(5, np.int64))
        mask = np.array([False, True, False, False, True])
        a, _ = plain.reset(seed=11, options={"reset_mask": mask})
        b, _ = split.reset(seed=11, options={"reset_mask": mask})
        np.testing.assert_array_equal(a, b)
    finally:
        plain.close()
        split.close()
