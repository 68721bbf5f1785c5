"""Normalization shared across workers (envs/normalization.py): exact merges, SB3 VecNormalize's
arithmetic, the statistics' way through CWorkers, checkpoints and the exported policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from colonyrl.config import ConfigError
from colonyrl.envs import EnvConfig, NormalizeConfig, RunningMeanStd, Statistics
from colonyrl.envs.normalization import Normalizer, ObsNormalizer
from colonyrl.launch.checkpoint import load_checkpoint
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.evaluate import NormalizedPolicy, load_model, save_model
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.packets import Weights
from colonyrl.scheme.scheme import Scheme
from colonyrl.storage.rollout import RolloutConfig


def _assert_rms(rms: RunningMeanStd, data: np.ndarray) -> None:
    assert rms.count == len(data)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-10, atol=1e-10)


def test_merges_in_any_grouping_equal_the_pooled_data() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, scale, size=(n, 3)) for loc, scale, n in ((0, 1, 7), (5, 3, 100), (-2, 0.1, 1), (1, 10, 33))]
    pooled = np.concatenate(parts)
    streamed = []  # each "worker" counts its data a few rows at a time, as a CWorker step by step
    for part in parts:
        rms = RunningMeanStd((3,))
        for rows in np.array_split(part, 4):
            rms.update(rows)
        streamed.append(rms)
    one_by_one = RunningMeanStd((3,))
    for rms in streamed:
        one_by_one.merge(rms)
    _assert_rms(one_by_one, pooled)
    pairs = Statistics.combine(Statistics.combine(Statistics(streamed[0], None), Statistics(streamed[1], None)),
                               Statistics.combine(Statistics(streamed[2], None), Statistics(streamed[3], None)))
    _assert_rms(pairs.obs, pooled)
    assert streamed[0].count == 7  # combine never changes its inputs
    assert Statistics.combine(None, None) is None
    empty = RunningMeanStd((3,))
    empty.merge(RunningMeanStd((3,)))
    assert empty.count == 0


def test_sb3_vecnormalize_arithmetic() -> None:
    config = NormalizeConfig(obs=True, reward=True, gamma=0.5)
    norm = Normalizer(config, (2,), num_envs=2)
    norm.set_statistics(Statistics(RunningMeanStd((2,), 10, [1.0, -1.0], [4.0, 0.0]), RunningMeanStd((), 10, 0.0, 4.0)))
    out = norm.observation(np.array([[3.0, 1e6], [1.0, -1.0]], np.float32))
    # (obs - mean) / sqrt(var + 1e-8), clipped to +-10, in the observation's dtype
    np.testing.assert_allclose(out, [[1.0, 10.0], [0.0, 0.0]], rtol=1e-6)
    assert out.dtype == np.float32
    valid, done = np.array([True, False]), np.array([True, False])
    reward = norm.reward(np.array([2.0, 0.0]), done, valid)
    np.testing.assert_allclose(reward, [1.0, 0.0], rtol=1e-6)  # scaled by the return's std, not centred
    np.testing.assert_array_equal(norm.returns, [0.0, 0.0])  # reset at the episode end
    norm.reward(np.array([1.0, 1.0]), np.array([False, False]), np.array([True, True]))
    norm.reward(np.array([1.0, 1.0]), np.array([False, False]), np.array([True, True]))
    np.testing.assert_array_equal(norm.returns, [1.5, 1.5])  # R = gamma R + r
    delta = norm.pop_delta()
    assert delta.obs.count == 2 and delta.ret.count == 5  # the invalid (autoreset) step is not counted
    assert norm.delta.obs.count == 0


def test_merged_statistics_of_four_cworkers_equal_the_pooled_data() -> None:
    """Four real CWorkers collect; their deltas, merged as a GWorker and the Learner do, are the
    statistics of every observation and discounted return the four saw. With empty statistics,
    epsilon 1e-20 and a wide clip, what they store is exactly what they saw, so the pooled data
    is read back from the rollouts."""
    normalize = NormalizeConfig(obs=True, reward=True, clip_obs=1e9, clip_reward=1e9, epsilon=1e-20)
    cfg = TrainConfig(env=EnvConfig(num_envs=3, normalize=normalize), storage=RolloutConfig(num_steps=40))
    components = cfg.components()
    workers = [CWorker(components, i, f"g0.c{i}") for i in range(4)]
    try:
        rollouts = [w.collect() for w in workers]
    finally:
        for w in workers:
            w.close()
    merged = Statistics.combine(Statistics.combine(*(r.normalizer for r in rollouts[:2])),  # two GWorkers
                                Statistics.combine(*(r.normalizer for r in rollouts[2:])))
    obs, returns = [], []
    for r in rollouts:
        valid = r.data["valid"]
        obs.append(r.data["obs"][:-1][valid])  # the autoreset steps' observations are not counted
        ret = np.zeros(valid.shape[1])
        for t in range(valid.shape[0]):
            v = valid[t]
            ret = np.where(v, 0.99 * ret + r.data["rewards"][t], ret)
            returns.append(ret[v])
            ret[r.data["terminated"][t] | r.data["truncated"][t]] = 0.0
    assert any(r.data["terminated"].any() for r in rollouts)  # episodes ended: resets were counted
    _assert_rms(merged.obs, np.concatenate(obs).astype(np.float64))
    _assert_rms(merged.ret, np.concatenate(returns))


def test_cworkers_normalize_with_the_statistics_the_weights_bring() -> None:
    cfg = TrainConfig(env=EnvConfig(num_envs=2, normalize=NormalizeConfig(obs=True)), storage=RolloutConfig(num_steps=4))
    worker = CWorker(cfg.components(), 0, "c0")
    try:
        stats = Statistics(RunningMeanStd((4,), 100, [1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 4.0, 4.0]), None)
        raw = worker.obs.copy()
        rollout = worker.collect(Weights(-1, None, stats))
        np.testing.assert_allclose(rollout.data["obs"][0], (raw - stats.obs.mean) / 2.0, rtol=1e-6)
        assert worker.inspect()["normalizer"] is stats
        state = worker.get_state()
        worker.normalizer.set_statistics(Statistics(RunningMeanStd((4,)), None))
        worker.set_state(state)
        np.testing.assert_array_equal(worker.normalizer.statistics.obs.mean, stats.obs.mean)
    finally:
        worker.close()


def test_the_learner_merges_the_deltas_and_sends_the_totals_down_with_the_weights() -> None:
    base = preset("ppo-cartpole")  # 4 envs x 16 steps, one update a round: a step is a round
    cfg = base.replace(env=base.env.replace(num_envs=4, normalize=NormalizeConfig(obs=True, reward=True)),
                       storage=base.storage.replace(num_steps=16), algo=base.algo.replace(num_epochs=1, minibatch_size=64))
    with Scheme(cfg.scheme, cfg.components()) as scheme:
        learner = scheme.learner
        assert learner.normalizer is None  # nothing seen yet: CWorkers use empty statistics
        learner.step()
        first = learner.normalizer
        assert 0 < first.obs.count <= 64 and 0 < first.ret.count <= 64  # autoreset steps are not counted
        learner.step()  # round 2 is collected with round 1's totals
        (cworker,) = learner.gworkers.inspect()[0]["cworkers"]
        used = cworker["normalizer"]
        assert used.obs.count == first.obs.count and np.array_equal(used.obs.mean, first.obs.mean)
        assert learner.normalizer.obs.count > first.obs.count
        state = learner.state_dict(workers=False)
        assert state["normalizer"]["obs"]["count"] == learner.normalizer.obs.count


def test_normalizing_non_float_observations_is_a_config_error_before_any_worker() -> None:
    cfg = TrainConfig(env=EnvConfig(id="FrozenLake-v1", normalize=NormalizeConfig(obs=True)))  # Discrete obs
    with pytest.raises(ConfigError) as e:
        cfg.components().spaces()
    assert e.value.field == "EnvConfig.normalize.obs"


def _small(tmp_path: Path, name: str, **run) -> TrainConfig:
    base = preset("ppo-cartpole")
    return base.replace(
        env=base.env.replace(num_envs=4, max_episode_steps=100, normalize=NormalizeConfig(obs=True, reward=True)),
        storage=base.storage.replace(num_steps=16), algo=base.algo.replace(num_epochs=2, minibatch_size=32),
        run=RunConfig(**{"eval_episodes": 1, "track": False, "progress": False, "checkpoint_every": 64,
                         "output_dir": str(tmp_path / name / "runs"), "checkpoint_dir": str(tmp_path / name / "ckpt"),
                         **run}))


def _newest(folder: Path) -> dict:
    return load_checkpoint(max(folder.glob("*/ckpt-*.pt"), key=lambda p: p.name))


def test_resume_restores_the_statistics_and_continues_exactly(tmp_path: Path) -> None:
    straight = train(_small(tmp_path, "straight", total_env_steps=128))
    first = train(_small(tmp_path, "split", total_env_steps=64))
    saved = _newest(tmp_path / "split" / "ckpt")["learner"]
    assert saved["normalizer"]["obs"]["count"] > 0 and saved["normalizer"]["ret"]["count"] > 0
    resumed = train(_small(tmp_path, "split", total_env_steps=128,
                           resume=str(max((tmp_path / "split" / "ckpt").glob("*/ckpt-*.pt"), key=lambda p: p.name))))
    assert first.counters["env_steps"] == 64 and resumed.counters == straight.counters
    a, b = _newest(tmp_path / "straight" / "ckpt")["learner"], _newest(tmp_path / "split" / "ckpt")["learner"]
    for kind in ("obs", "ret"):
        assert a["normalizer"][kind]["count"] == b["normalizer"][kind]["count"] > saved["normalizer"][kind]["count"]
        assert torch.equal(a["normalizer"][kind]["mean"], b["normalizer"][kind]["mean"])
        assert torch.equal(a["normalizer"][kind]["var"], b["normalizer"][kind]["var"])
    for key, value in a["algo"]["actor"].items():  # so the policy saw the same normalized data
        assert torch.equal(value, b["algo"]["actor"][key]), key
    # the saved model acts on raw observations through the frozen statistics
    policy, _, _ = load_model(resumed.model_dir)
    assert isinstance(policy, NormalizedPolicy) and policy.normalizer.rms.count == b["normalizer"]["obs"]["count"]


@pytest.mark.parametrize("name", ["ppo-cartpole", "ppo-pendulum"])
def test_the_exported_policy_with_its_normalizer_acts_as_the_framework_on_raw_observations(name: str,
                                                                                          tmp_path: Path) -> None:
    cfg = preset(name)
    cfg = cfg.replace(env=cfg.env.replace(normalize=NormalizeConfig(obs=True)))
    components = cfg.components()
    spaces = components.spaces()
    torch.manual_seed(0)
    algo = components.build_algorithm(spaces)
    rng = np.random.default_rng(1)
    shape = spaces.observation.shape
    seen = rng.normal(3.0, 5.0, size=(500, *shape))
    normalizer = ObsNormalizer(RunningMeanStd.of(seen), 10.0, 1e-8)
    save_model(tmp_path, algo, cfg, {"env_steps": 0}, normalizer)
    exported = torch.export.load(str(tmp_path / "policy.pt2")).module()
    raw = rng.normal(3.0, 5.0, size=(64, *shape)).astype(np.float32)
    raw[0] = 1e3  # clipped at +10 by both
    framework = NormalizedPolicy(algo.policy, normalizer).act(raw, deterministic=True).env_action
    with torch.no_grad():
        plain = exported(torch.from_numpy(raw)).numpy()
    if name == "ppo-cartpole":  # argmax actions: equal
        np.testing.assert_array_equal(plain, framework)
    else:  # the same float32 network on the same normalized input (the export may fuse its ops)
        np.testing.assert_allclose(plain, framework, rtol=1e-5, atol=1e-6)
    loaded, _, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.act(raw, deterministic=True).env_action, framework)
    # without the normalizer the actions differ: it is really in the exported program
    assert not np.array_equal(algo.policy.act(raw, deterministic=True).env_action, framework)
