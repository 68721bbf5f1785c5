"""Normalization shared across workers (envs/normalization.py): exact merges, SB3 VecNormalize's
arithmetic, the statistics' way through CWorkers, checkpoints and the exported policy."""

from __future__ import annotations

import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.config import ConfigError
from colonyrl.envs import EnvConfig, NormalizeConfig, RunningMeanStd, Statistics
from colonyrl.envs.normalization import Normalizer, ObsNormalizer, obs_shapes
from colonyrl.launch.checkpoint import load_checkpoint
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.evaluate import NormalizedPolicy, load_model, save_model
from colonyrl.launch.mlflow_model import save_mlflow_model
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.packets import Weights
from colonyrl.scheme.scheme import Scheme
from colonyrl.storage.rollout import RolloutConfig, RolloutStorage


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


def test_counted_steps_are_merged_in_bounded_batches_into_the_pooled_statistics() -> None:
    """Steps wait unmerged at most FOLD_EVERY at a time; whenever the delta is read it holds every
    counted observation and return, as the pooled data's mean and variance."""
    norm = Normalizer(NormalizeConfig(obs=True, reward=True, gamma=0.9), (3,), num_envs=4)
    norm.FOLD_EVERY = 7
    rng = np.random.default_rng(0)
    obs_seen, returns_seen, returns = [], [], np.zeros(4)
    for step in range(40):
        obs, count = rng.normal(5.0, 3.0, (4, 3)).astype(np.float32), rng.random(4) < 0.8
        norm.observation(obs, count=count)
        obs_seen.append(obs[count].astype(np.float64))
        reward, done = rng.normal(size=4), rng.random(4) < 0.1
        norm.reward(reward, done, count)
        returns = np.where(count, returns * 0.9 + reward, returns)
        returns_seen.append(returns[count])
        returns[done] = 0.0
        assert len(norm._seen_obs) < 7 and len(norm._seen_returns) < 7
        if step in (3, 20):  # a read in between (a checkpoint) folds what waits
            _assert_rms(norm.delta.obs, np.concatenate(obs_seen))
    delta = norm.pop_delta()
    _assert_rms(delta.obs, np.concatenate(obs_seen))
    _assert_rms(delta.ret, np.concatenate(returns_seen))
    assert norm.delta.obs.count == 0 and norm.delta.ret.count == 0


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


def _small(tmp_path: Path, name: str, double_buffered: bool = False, **run) -> TrainConfig:
    base = preset("ppo-cartpole")
    return base.replace(
        env=base.env.replace(num_envs=4, max_episode_steps=100, normalize=NormalizeConfig(obs=True, reward=True),
                             double_buffered=double_buffered),
        storage=base.storage.replace(num_steps=16), algo=base.algo.replace(num_epochs=2, minibatch_size=32),
        run=RunConfig(**{"eval_episodes": 1, "track": False, "progress": False, "checkpoint_every": 64,
                         "output_dir": str(tmp_path / name / "runs"), "checkpoint_dir": str(tmp_path / name / "ckpt"),
                         **run}))


def _newest(folder: Path) -> dict:
    return load_checkpoint(max(folder.glob("*/ckpt-*.pt"), key=lambda p: p.name))


@pytest.mark.parametrize("double_buffered", [False, True], ids=["plain", "double-buffered"])
def test_resume_restores_the_statistics_and_continues_exactly(tmp_path: Path, double_buffered: bool) -> None:
    straight = train(_small(tmp_path, "straight", double_buffered, total_env_steps=128))
    first = train(_small(tmp_path, "split", double_buffered, total_env_steps=64))
    saved = _newest(tmp_path / "split" / "ckpt")["learner"]
    assert saved["normalizer"]["obs"]["count"] > 0 and saved["normalizer"]["ret"]["count"] > 0
    resumed = train(_small(tmp_path, "split", double_buffered, total_env_steps=128,
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


# -- Dict observations: per-key statistics (SB3 VecNormalize's norm_obs_keys) ----------------------------------------

class NormDictEnv(gym.Env):
    """A Dict observation: "pos" ~ N(5, 3) floats, "goal" exactly 3.0 or 7.0 (floats), "img" uint8
    (2, 4, 4), flattened by the encoder; reward 1 when the action names the goal; 6 steps an episode."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({
            "pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), "goal": gym.spaces.Box(0.0, 10.0, (1,), np.float32),
            "img": gym.spaces.Box(0, 255, (2, 4, 4), np.uint8)})
        self.action_space = gym.spaces.Discrete(2)
        self._t, self._goal = 0, 0

    def _obs(self) -> dict[str, np.ndarray]:
        rng = self.np_random
        return {"pos": rng.normal(5.0, 3.0, 3).astype(np.float32), "goal": np.array([3.0 + 4.0 * self._goal], np.float32),
                "img": rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._goal = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._goal)
        self._t, self._goal = self._t + 1, int(self.np_random.integers(2))
        return self._obs(), reward, False, self._t >= 6, {}


NORM_DICT_ID = "colonyrl-test/NormDict-v0"
if NORM_DICT_ID not in gym.registry:
    gym.register(NORM_DICT_ID, entry_point=NormDictEnv)
FLOAT_KEYS = {"pos", "goal"}


def _dict_cfg(tmp_path: Path | None = None, obs_keys: tuple[str, ...] | None = None, **run) -> TrainConfig:
    base = preset("ppo-cartpole")
    out = str(tmp_path) if tmp_path is not None else "runs"
    return base.replace(
        env=EnvConfig(id=NORM_DICT_ID, num_envs=2, normalize=NormalizeConfig(obs=True, reward=True, obs_keys=obs_keys)),
        storage=RolloutConfig(num_steps=8), algo=base.algo.replace(num_epochs=1, minibatch_size=16),
        run=RunConfig(**{"eval_episodes": 1, "track": False, "progress": False, "output_dir": out + "/runs",
                         "checkpoint_dir": out + "/ckpt", **run}))


def test_dict_statistics_merge_per_key_and_round_trip_through_checkpoints() -> None:
    rng = np.random.default_rng(2)
    parts = [{"a": rng.normal(i, i + 1, (n, 2)), "b": rng.normal(-i, 2.0, (n,))} for i, n in enumerate((5, 40, 1, 17))]
    deltas = []
    for part in parts:
        stats = Statistics({"a": RunningMeanStd((2,)), "b": RunningMeanStd(())}, RunningMeanStd(()))
        for rows in np.array_split(np.arange(len(part["a"])), 3):  # step by step, as a CWorker counts
            for key, rms in stats.obs.items():
                rms.update(part[key][rows])
        deltas.append(stats)
    merged = Statistics.combine(Statistics.combine(*deltas[:2]), Statistics.combine(*deltas[2:]))
    for key in ("a", "b"):
        _assert_rms(merged.obs[key], np.concatenate([p[key] for p in parts]))
    assert deltas[0].obs["a"].count == 5 and merged.count == 63  # inputs unchanged; count of one key
    state = torch.load(_saved(merged.state_dict()), weights_only=True)  # a checkpoint's way
    assert "obs" not in state and set(state["obs_keys"]) == {"a", "b"}
    restored = Statistics.from_state(state)
    for key in ("a", "b"):
        assert restored.obs[key].count == merged.obs[key].count
        np.testing.assert_array_equal(restored.obs[key].mean, merged.obs[key].mean)
        np.testing.assert_array_equal(restored.obs[key].var, merged.obs[key].var)
    # a Box checkpoint written before Dict observations ({"obs": ..., "ret": ...}) still loads
    old = Statistics.from_state({"obs": RunningMeanStd((2,), 3, [1.0, 2.0], [0.5, 0.5]).state_dict(), "ret": None})
    assert isinstance(old.obs, RunningMeanStd) and old.obs.count == 3 and old.ret is None
    with pytest.raises(ValueError):  # layouts never mix
        Statistics.combine(merged, Statistics(RunningMeanStd((2,)), None))


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_merged_per_key_statistics_of_four_cworkers_equal_the_pooled_data() -> None:
    """Four CWorkers on a Dict env: each float key has its own statistics, merged exactly; the
    uint8 key is stored as the env gave it. Empty statistics, epsilon 1e-20 and a wide clip
    store the raw values, so the pooled data is read back from the rollouts."""
    normalize = NormalizeConfig(obs=True, clip_obs=1e9, epsilon=1e-20)
    cfg = _dict_cfg().replace(env=EnvConfig(id=NORM_DICT_ID, num_envs=3, normalize=normalize),
                              storage=RolloutConfig(num_steps=10))
    workers = [CWorker(cfg.components(), i, f"g0.c{i}") for i in range(4)]
    try:
        rollouts = [w.collect() for w in workers]
    finally:
        for w in workers:
            w.close()
    merged = Statistics.combine(Statistics.combine(*(r.normalizer for r in rollouts[:2])),
                                Statistics.combine(*(r.normalizer for r in rollouts[2:])))
    assert set(merged.obs) == FLOAT_KEYS and merged.ret is None  # by default every float Box key
    assert any(r.data["truncated"].any() for r in rollouts)  # resets were counted
    for key in FLOAT_KEYS:
        pooled = np.concatenate([r.data["obs"][key][:-1][r.data["valid"]] for r in rollouts]).astype(np.float64)
        _assert_rms(merged.obs[key], pooled)
    assert merged.obs["goal"].count == sum(r.data["valid"].sum() for r in rollouts)
    for r in rollouts:
        img = r.data["obs"]["img"]
        assert img.dtype == np.uint8 and img.max() > 200  # raw frames, never normalized


def test_obs_keys_are_checked_against_the_space_before_any_worker() -> None:
    with pytest.raises(ConfigError) as e:
        NormalizeConfig(obs_keys=("pos",))  # obs normalization off
    assert e.value.field == "NormalizeConfig.obs_keys"
    with pytest.raises(ConfigError) as e:
        NormalizeConfig(obs=True, obs_keys=("pos", "pos"))
    assert e.value.field == "NormalizeConfig.obs_keys" and "distinct" in e.value.allowed
    cases = [(NORM_DICT_ID, ("nope",), "EnvConfig.normalize.obs_keys", "'nope' is not a key"),
             (NORM_DICT_ID, ("pos", "img"), "EnvConfig.normalize.obs_keys", "uint8"),
             ("CartPole-v1", ("pos",), "EnvConfig.normalize.obs_keys", "not a Dict")]
    for env_id, keys, field, why in cases:
        cfg = TrainConfig(env=EnvConfig(id=env_id, normalize=NormalizeConfig(obs=True, obs_keys=keys)))
        with pytest.raises(ConfigError) as e:
            cfg.components().spaces()
        assert e.value.field == field and why in e.value.allowed, e.value
        if env_id == NORM_DICT_ID:  # the keys it may name
            assert "['goal', 'pos']" in e.value.allowed
    images = gym.spaces.Dict({"img": gym.spaces.Box(0, 255, (2, 4, 4), np.uint8)})
    with pytest.raises(ConfigError) as e:
        obs_shapes(images, NormalizeConfig(obs=True))
    assert e.value.field == "EnvConfig.normalize.obs"
    space = NormDictEnv().observation_space
    assert obs_shapes(space, NormalizeConfig(obs=True)) == {"pos": (3,), "goal": (1,)}
    assert obs_shapes(space, NormalizeConfig(obs=True, obs_keys=("goal",))) == {"goal": (1,)}
    assert obs_shapes(space, NormalizeConfig(reward=True)) is None


def test_her_goal_keys_stay_raw_its_rewards_are_recomputed_from_them() -> None:
    cfg = preset("dqn-her-bitflip")  # colonyrl/BitFlip-v0: observation, achieved_goal, desired_goal
    with pytest.raises(ConfigError) as e:
        cfg.replace(env=cfg.env.replace(normalize=NormalizeConfig(obs=True))).components().spaces()
    assert e.value.field == "EnvConfig.normalize.obs_keys" and "['achieved_goal', 'desired_goal']" in e.value.allowed
    ok = cfg.replace(env=cfg.env.replace(normalize=NormalizeConfig(obs=True, obs_keys=("observation",))))
    worker = CWorker(ok.components(), 0, "c0")
    try:
        assert set(worker.collect().normalizer.obs) == {"observation"}
    finally:
        worker.close()


def _spy_obs(monkeypatch) -> list[dict[str, np.ndarray]]:
    """The observations (and valid masks) every GWorker-side rollout storage is handed."""
    seen: list[dict[str, np.ndarray]] = []
    add = RolloutStorage.add_data

    def spy(self, data, source=""):
        add(self, data, source)
        seen.append({k: np.array(v) for k, v in self._rollouts[-1].items() if k.startswith("obs/") or k == "valid"})

    monkeypatch.setattr(RolloutStorage, "add_data", spy)
    return seen


def test_ppo_trains_on_a_dict_env_with_per_key_statistics_and_resumes_them_exactly(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    seen = _spy_obs(monkeypatch)
    straight = train(_dict_cfg(tmp_path / "a", obs_keys=("pos",), total_env_steps=32, checkpoint_every=16))
    assert straight.counters["env_steps"] == 32 and len(seen) == 2  # two rounds of 2 envs x 8 steps
    first, second = (load_checkpoint(p)["learner"]["normalizer"]
                     for p in sorted((tmp_path / "a" / "ckpt").glob("*/ckpt-*.pt")))
    assert set(first["obs_keys"]) == {"pos"}  # only the named key
    counts = [first["obs_keys"]["pos"]["count"], second["obs_keys"]["pos"]["count"]]
    # every round adds what the CWorkers counted: its valid observations (not the autoreset steps')
    assert counts == [seen[0]["valid"].sum(), seen[0]["valid"].sum() + seen[1]["valid"].sum()]
    pos = [s["obs/pos"][:-1][s["valid"]] for s in seen]
    assert abs(pos[0].mean() - 5.0) < 1.5 and abs(pos[1].mean()) < 1.0  # round 2 normalized by round 1's totals
    for s in seen:  # the keys not named are stored as the env gave them
        assert set(np.unique(s["obs/goal"])) <= {3.0, 7.0}
        assert s["obs/img"].dtype == np.uint8 and s["obs/img"].max() > 200
    policy, _, _ = load_model(straight.model_dir)  # the saved model acts on raw Dict observations
    assert isinstance(policy, NormalizedPolicy) and policy.normalizer.rms["pos"].count == counts[1]
    # resumed from round 1's checkpoint, round 2 gives the same statistics as the straight run
    ckpt = min((tmp_path / "a" / "ckpt").glob("*/ckpt-*.pt"), key=lambda p: p.name)
    train(_dict_cfg(tmp_path / "b", obs_keys=("pos",), total_env_steps=32, checkpoint_every=16, resume=str(ckpt)))
    resumed = _newest(tmp_path / "b" / "ckpt")["learner"]["normalizer"]
    for name in ("count", "mean", "var"):
        a, b = second["obs_keys"]["pos"][name], resumed["obs_keys"]["pos"][name]
        assert (a == b) if name == "count" else torch.equal(a, b), name


def test_the_exported_policy_normalizes_raw_dict_observations_per_key(tmp_path: Path) -> None:
    cfg = _dict_cfg(tmp_path)
    components = cfg.components()
    spaces = components.spaces()
    torch.manual_seed(0)
    algo = components.build_algorithm(spaces)
    rng = np.random.default_rng(3)
    stats = {"pos": RunningMeanStd.of(rng.normal(5.0, 3.0, (300, 3))), "goal": RunningMeanStd.of(rng.normal(5.0, 2.0, (300, 1)))}
    normalizer = ObsNormalizer(stats, 10.0, 1e-8)
    save_model(tmp_path, algo, cfg, {"env_steps": 0}, normalizer)
    raw = {"pos": rng.normal(5.0, 3.0, (64, 3)).astype(np.float32),
           "goal": rng.choice([3.0, 7.0], (64, 1)).astype(np.float32),
           "img": rng.integers(0, 256, (64, 2, 4, 4), dtype=np.uint8)}
    raw["pos"][0] = 1e3  # clipped at +10 by both
    seen = normalizer(raw)
    assert seen["img"] is raw["img"] and seen["pos"].dtype == np.float32 and seen["pos"].max() == 10.0
    framework = NormalizedPolicy(algo.policy, normalizer).act(raw, deterministic=True).env_action
    exported = torch.export.load(str(tmp_path / "policy.pt2")).module()
    with torch.no_grad():
        plain = exported({k: torch.from_numpy(v) for k, v in raw.items()}).numpy()
    np.testing.assert_array_equal(plain, framework)
    loaded, _, _ = load_model(tmp_path)
    assert set(loaded.normalizer.rms) == FLOAT_KEYS
    np.testing.assert_array_equal(loaded.act(raw, deterministic=True).env_action, framework)
    # without the normalizer the actions differ: it is really in the exported program
    assert not np.array_equal(algo.policy.act(raw, deterministic=True).env_action, framework)
    # the MLflow model over policy.pt2 (a tracked run's model artifact) takes the raw dict too
    import mlflow

    served = mlflow.pyfunc.load_model(str(save_mlflow_model(tmp_path)))
    np.testing.assert_array_equal(served.predict(raw), framework)
