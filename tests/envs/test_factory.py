"""EnvConfig / vector-env factory, on real gymnasium envs."""

from __future__ import annotations

import pickle
import time

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from colonyrl.config import ConfigError
from colonyrl.envs import EnvConfig, EnvHandle, StepDelay, env_seeds, episode_stats, reset_seeded


def _unwrapped_vec(env):
    """The Sync/AsyncVectorEnv under the RecordEpisodeStatistics wrapper."""
    return env.env


def test_cartpole_spaces_and_wrappers():
    env, obs = EnvConfig(num_envs=3).make()
    try:
        assert isinstance(_unwrapped_vec(env), SyncVectorEnv)
        assert isinstance(env, gymnasium.wrappers.vector.RecordEpisodeStatistics)
        assert env.num_envs == 3
        assert env.single_observation_space.shape == (4,)
        assert env.single_action_space == gymnasium.spaces.Discrete(2)
        assert obs.shape == (3, 4) and obs.dtype == np.float32
    finally:
        env.close()


def test_pendulum_box_spaces_and_kwargs():
    cfg = EnvConfig(id="Pendulum-v1", num_envs=2, kwargs={"g": 5.0})
    env, obs = cfg.make()
    try:
        assert obs.shape == (2, 3)
        assert isinstance(env.single_action_space, gymnasium.spaces.Box)
        assert env.single_action_space.shape == (1,)
        assert env.action_space.shape == (2, 1)
        # kwargs reached gymnasium.make, through the TimeLimit/OrderEnforcing/... wrappers
        assert _unwrapped_vec(env).envs[0].unwrapped.g == 5.0
        obs, rew, term, trunc, _ = env.step(env.action_space.sample())
        assert rew.shape == (2,) and term.shape == trunc.shape == (2,)
    finally:
        env.close()


def test_num_envs_override():
    env, obs = EnvConfig(num_envs=8).make(num_envs=2)
    env.close()
    assert env.num_envs == 2 and obs.shape == (2, 4)


def test_env_seeds_distinct_and_reproducible():
    a = env_seeds(0, 0, 8)
    assert a == env_seeds(0, 0, 8)
    assert len(set(a)) == 8
    b = env_seeds(0, 1, 8)
    c = env_seeds(1, 0, 8)
    assert not set(a) & set(b) and not set(a) & set(c) and not set(b) & set(c)
    assert all(isinstance(s, int) and s >= 0 for s in a + b + c)
    assert env_seeds(0, 0, 3) == a[:3]  # more sub-envs do not reseed the first ones


def test_first_obs_reproducible_per_seed_and_worker():
    cfg = EnvConfig(num_envs=4)
    handles = [cfg.make(seed=7, worker_index=0), cfg.make(seed=7, worker_index=0),
               cfg.make(seed=7, worker_index=1), cfg.make(seed=8, worker_index=0)]
    try:
        o1, o2, o3, o4 = (h.obs for h in handles)
        np.testing.assert_array_equal(o1, o2)
        assert len({tuple(row) for row in o1}) == 4  # sub-envs differ
        assert not np.isin(o1, o3).any()  # another worker: different starts
        assert not np.isin(o1, o4).any()  # another seed: different starts
        # the action spaces are seeded too: the same random actions
        e1, e2, e3 = (h.env for h in handles[:3])
        acts1 = [e1.action_space.sample() for _ in range(5)]
        np.testing.assert_array_equal(acts1, [e2.action_space.sample() for _ in range(5)])
        assert not np.array_equal(acts1, [e3.action_space.sample() for _ in range(5)])
        # and the trajectories under the same actions
        for a in acts1:
            s1, s2 = e1.step(a), e2.step(a)
            np.testing.assert_array_equal(s1[0], s2[0])
    finally:
        for h in handles:
            h.env.close()


def test_reset_seeded_restarts_identically():
    env, obs = EnvConfig(num_envs=2).make(seed=3, worker_index=5)
    try:
        for _ in range(4):
            env.step(env.action_space.sample())
        np.testing.assert_array_equal(reset_seeded(env, 3, 5), obs)
    finally:
        env.close()


def test_next_step_autoreset_and_episode_stats():
    env, _ = EnvConfig(num_envs=2, max_episode_steps=5).make(seed=0)
    try:
        assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
        zeros = np.zeros(2, dtype=np.int64)
        for _ in range(4):
            *_, info = env.step(zeros)
            r, ln = episode_stats(info)
            assert r.shape == ln.shape == (0,) and r.dtype == np.float64 and ln.dtype == np.int64
        # step 5: time limit (CartPole pushed left for 5 steps does not fall)
        _, rew, term, trunc, info = env.step(zeros)
        assert trunc.all() and not term.any()
        r, ln = episode_stats(info)
        np.testing.assert_array_equal(r, [5.0, 5.0])
        np.testing.assert_array_equal(ln, [5, 5])
        assert r.dtype == np.float64 and ln.dtype == np.int64
        # step 6: the autoreset step -- reward 0, no flags, no stats
        _, rew, term, trunc, info = env.step(zeros)
        np.testing.assert_array_equal(rew, [0.0, 0.0])
        assert not term.any() and not trunc.any()
        assert episode_stats(info)[0].size == 0
    finally:
        env.close()


def test_episode_stats_only_masked_entries():
    info = {"episode": {"r": np.array([0.0, 12.5, 0.0]), "l": np.array([0, 7, 0]), "t": np.zeros(3)},
            "_episode": np.array([False, True, False])}
    r, ln = episode_stats(info)
    np.testing.assert_array_equal(r, [12.5])
    np.testing.assert_array_equal(ln, [7])
    assert episode_stats({})[0].size == 0


def test_step_delay_slows_steps():
    # Pendulum never terminates within 10 steps: every vector step is a real sub-env step
    # (an autoreset step calls reset, not step, so it does not sleep).
    env, _ = EnvConfig(id="Pendulum-v1", num_envs=1, step_delay_s=0.005).make()
    try:
        assert isinstance(_unwrapped_vec(env).envs[0], StepDelay)
        a = np.zeros((1, 1), dtype=np.float32)
        t = time.perf_counter()
        for _ in range(10):
            env.step(a)
        assert time.perf_counter() - t >= 0.05
    finally:
        env.close()


def test_invalid_id_names_field_and_suggests():
    with pytest.raises(ConfigError) as err:
        EnvConfig(id="CartPole-v9")
    assert err.value.field == "EnvConfig.id"
    assert "'CartPole-v1'" in str(err.value)
    with pytest.raises(ConfigError, match="EnvConfig.id"):
        EnvConfig(id="no_such_module_xyz:Foo-v0")


def test_field_bounds():
    with pytest.raises(ConfigError, match="EnvConfig.num_envs"):
        EnvConfig(num_envs=0)
    with pytest.raises(ConfigError, match="EnvConfig.vectorization"):
        EnvConfig(vectorization="threads")
    with pytest.raises(ConfigError, match="EnvConfig.step_delay_s"):
        EnvConfig(step_delay_s=-1.0)
    with pytest.raises(ConfigError, match="EnvConfig.kwargs"):  # any JSON value; a set is none
        EnvConfig(kwargs={"g": {1, 2}})


def test_module_prefixed_id():
    env, obs = EnvConfig(id="gymnasium.envs.classic_control:CartPole-v1", num_envs=1).make()
    env.close()
    assert obs.shape == (1, 4)


def test_async_vectorization():
    cfg = EnvConfig(num_envs=2, vectorization="async", max_episode_steps=3)
    env, obs = cfg.make(seed=4, worker_index=1)
    try:
        assert isinstance(_unwrapped_vec(env), AsyncVectorEnv)
        sync_env, sync_obs = cfg.replace(vectorization="sync").make(seed=4, worker_index=1)
        sync_env.close()
        np.testing.assert_array_equal(obs, sync_obs)  # same seeds, same starts
        ended = 0
        for _ in range(3):
            *_, info = env.step(np.zeros(2, dtype=np.int64))
            ended += episode_stats(info)[0].size
        assert ended == 2
    finally:
        env.close()


def test_pickle_round_trip():
    cfg = EnvConfig(id="Pendulum-v1", num_envs=2, vectorization="async", max_episode_steps=50,
                    kwargs={"g": 9.0}, step_delay_s=0.001)
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg
    assert pickle.loads(pickle.dumps(cfg.env_fns()[0]))().unwrapped.g == 9.0


def test_make_returns_namedtuple():
    handle = EnvConfig(num_envs=1).make()
    handle.env.close()
    assert isinstance(handle, EnvHandle) and handle._fields == ("env", "obs")
