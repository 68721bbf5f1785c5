"""ReplayMemory: real gymnasium final observations, ring wrap, PER frequencies and weights, credit
(learning_starts, fractional update-to-data), crc_debug, datasets, checkpoints, config validation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import GradientResult, ReplayPlan
from colonyrl.config import ConfigError
from colonyrl.storage.replay import (
    DATASET_KEYS,
    ReplayBatch,
    ReplayConfig,
    ReplayCorruptionError,
    ReplayMemory,
    load_dataset,
    write_dataset,
)
from colonyrl.storage.rollout import Moments

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)


def build(envs: int = 1, **changes) -> ReplayMemory:
    return ReplayConfig(**{"memory_size": 100, **changes}).build(OBS_SPACE, ACT_SPACE, envs)


def rollout(start: int, steps: int, envs: int = 1) -> dict[str, np.ndarray]:
    """All-valid rollout without episode ends; obs (and reward) of row t, env e is the id start + t*envs + e."""
    ids = start + np.arange((steps + 1) * envs, dtype=np.float32).reshape(steps + 1, envs)
    false = np.zeros((steps, envs), bool)
    return dict(obs=np.repeat(ids[..., None], 3, axis=2), actions=np.ones((steps, envs), np.int64),
                rewards=ids[:-1].copy(), terminated=false, truncated=false.copy(), valid=~false)


class Collector:
    """What a CWorker does with a memory: random obs and actions, random episode ends, valid = not prev_done."""

    def __init__(self, memory: ReplayMemory, envs: int, seed: int = 0) -> None:
        self.memory, self.rng = memory, np.random.default_rng(seed)
        self.obs = self.rng.normal(size=(envs, 3)).astype(np.float32)
        self.prev_done = np.zeros(envs, bool)

    def collect(self, steps: int) -> dict[str, np.ndarray]:
        for _ in range(steps):
            envs = len(self.obs)
            next_obs = self.rng.normal(size=(envs, 3)).astype(np.float32)
            end = self.rng.random(envs)
            terminated, truncated = (end < 0.1) & ~self.prev_done, (end > 0.9) & ~self.prev_done
            self.memory.insert(self.obs, self.rng.integers(0, 2, envs), self.rng.normal(size=envs),
                               terminated, truncated, ~self.prev_done, {})
            self.obs, self.prev_done = next_obs, terminated | truncated
        self.memory.finish(self.obs, {})
        return self.memory.get_data()


# ---------------------------------------------------------------------- real env: final observations
def test_cartpole_next_obs_is_the_real_final_observation_and_autoreset_steps_are_not_stored():
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", max_episode_steps=12)
    config = ReplayConfig(num_steps=16, memory_size=1000)
    cworker = config.build(env.single_observation_space, env.single_action_space, 2)
    gworker = config.build(env.single_observation_space, env.single_action_space, 2)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    prev_done = np.zeros(2, bool)
    steps = []  # everything env.step returned, for the expected transitions
    for _ in range(5):
        for _ in range(config.num_steps):
            actions = rng.integers(0, 2, 2)
            next_obs, rewards, terminated, truncated, _ = env.step(actions)
            cworker.insert(obs, actions, rewards, terminated, truncated, ~prev_done, {})
            steps.append((obs, actions, next_obs, terminated, truncated, ~prev_done))
            obs, prev_done = next_obs, terminated | truncated
        cworker.finish(obs, {})
        gworker.add_data(cworker.get_data(), "cworker-0")
    env.close()
    stored = gworker.transitions()  # insertion order: step by step, sub-env by sub-env
    expected = [(s, e) for s, (*_, valid) in enumerate(steps) for e in range(2) if valid[e]]
    assert len(gworker) == len(expected) < 2 * len(steps)  # the autoreset steps are not stored
    seen = {"terminated": 0, "truncated": 0}
    for row, (s, e) in enumerate(expected):
        obs_t, action, next_obs, terminated, truncated, _ = steps[s]
        np.testing.assert_array_equal(stored["obs"][row], obs_t[e])
        np.testing.assert_array_equal(stored["next_obs"][row], next_obs[e])  # what env.step returned
        assert stored["actions"][row] == action[e]
        assert (stored["terminated"][row], stored["truncated"][row]) == (terminated[e], truncated[e])
        if terminated[e]:  # out of CartPole's bounds: a real final observation, not a reset one
            x, _, theta, _ = stored["next_obs"][row]
            assert abs(x) > 2.4 or abs(theta) > 0.2095
            seen["terminated"] += 1
        elif truncated[e]:
            seen["truncated"] += 1
            if s + 1 < len(steps):  # the reset observation came with the following (autoreset) step
                assert not steps[s + 1][5][e]
                assert not np.array_equal(stored["next_obs"][row], steps[s + 1][2][e])
    assert seen["terminated"] > 0 and seen["truncated"] > 0
    # no stored transition runs from a final observation to a reset one
    finals = {next_obs[e].tobytes() for _, _, next_obs, term, trunc, _ in steps for e in range(2) if term[e] | trunc[e]}
    assert not any(o.tobytes() in finals for o in stored["obs"])


# ---------------------------------------------------------------------- ring buffer
def test_memory_wraps_around_and_overwrites_the_oldest():
    memory = build(memory_size=5)
    memory.add_data(rollout(0, 3), "w0")
    memory.add_data(rollout(3, 4), "w0")
    assert len(memory) == 5 and memory.num_samples == 5
    np.testing.assert_array_equal(memory.arrays["obs"][:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(memory.arrays["next_obs"][:, 0], [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(memory.transitions()["obs"][:, 0], [2, 3, 4, 5, 6])  # oldest first
    memory.add_data(rollout(10, 7), "w0")  # more than the capacity at once: the last ones stay
    np.testing.assert_array_equal(memory.transitions()["obs"][:, 0], [12, 13, 14, 15, 16])


def test_the_memory_is_allocated_by_the_first_add_only():
    memory = build()
    Collector(memory, 1).collect(1)
    assert memory.arrays == {} and len(memory) == 0  # the CWorker side never allocates it
    memory.add_data(rollout(0, 2), "w0")
    assert len(memory.arrays["obs"]) == 2


# ---------------------------------------------------------------------- uniform sampling
def test_uniform_batches_keep_dtypes_and_are_reproducible():
    obs_space = gym.spaces.Box(0, 255, (4, 4), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    memories = [ReplayConfig(memory_size=50, num_steps=5, gamma=0.9).build(obs_space, act_space, 2) for _ in "ab"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, actions = rng.integers(0, 256, (2, 4, 4), dtype=np.uint8), rng.random((2, 2))
        for memory in memories:
            memory.insert(obs, actions, np.ones(2), np.array([True, False]), np.zeros(2, bool),
                          np.ones(2, bool), {})
    for memory in memories:
        memory.finish(obs, {})
        memory.add_data(memory.get_data(), "w0")
    plan = ReplayPlan(batch_size=7, learning_starts=1, updates_per_step=1.0)
    first, second = (list(m.batches(plan, torch.Generator().manual_seed(4))) for m in memories)
    assert len(first) == 10
    batch = first[0]
    assert isinstance(batch, ReplayBatch)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (7, 4, 4) and batch.next_obs.shape == (7, 4, 4)
    assert batch.actions.dtype == torch.float32 and batch.actions.shape == (7, 2)
    for field in (batch.rewards, batch.terminated, batch.discounts, batch.weights):
        assert field.dtype == torch.float32 and field.shape == (7,)
    assert batch.indices.dtype == torch.int64 and 0 <= int(batch.indices.min()) <= int(batch.indices.max()) < 10
    assert torch.equal(batch.weights, torch.ones(7)) and torch.allclose(batch.discounts, torch.full((7,), 0.9))
    assert set(batch.terminated.tolist()) <= {0.0, 1.0}
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_sample_preprocessor_is_applied_to_every_batch(tmp_path, monkeypatch):
    (tmp_path / "replay_aug.py").write_text("def negate(batch):\n    return batch._replace(obs=-batch.obs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    memory = build(sample_preprocessor="replay_aug:negate")
    memory.add_data(rollout(1, 3), "w0")
    batch = memory.sample(5, torch.Generator().manual_seed(0))
    assert (batch.obs < 0).all() and (batch.next_obs > 0).all()


# ---------------------------------------------------------------------- update-to-data credit
def rounds(memory: ReplayMemory, plan: ReplayPlan, per_round: int, count: int) -> list[int]:
    out, start = [], 0
    for _ in range(count):
        memory.add_data(rollout(start, per_round), "w0")
        start += per_round
        assert memory.before_gradients()["transitions_added"] == per_round
        out.append(len(list(memory.batches(plan, torch.Generator().manual_seed(0)))))
    return out


def test_no_updates_before_learning_starts_and_no_burst_after():
    plan = ReplayPlan(batch_size=4, learning_starts=20, updates_per_step=0.5)
    # sizes 8, 16, 24, ...: credit only from the round that reaches 20, not the 16 before it
    assert rounds(build(), plan, per_round=8, count=5) == [0, 0, 4, 4, 4]


@pytest.mark.parametrize(("ratio", "per_round", "expected"),
                         [(0.1, 1, [0] * 9 + [1] + [0] * 9 + [1]), (0.25, 2, [0, 1, 0, 1]), (2.5, 1, [2, 3, 2, 3])])
def test_fractional_updates_per_step_carry_their_remainder(ratio, per_round, expected):
    plan = ReplayPlan(batch_size=2, learning_starts=0, updates_per_step=ratio)
    assert rounds(build(), plan, per_round, len(expected)) == expected


def test_credit_is_taken_when_batches_is_called():
    memory, plan = build(), ReplayPlan(batch_size=2, learning_starts=0, updates_per_step=1.0)
    memory.add_data(rollout(0, 3), "w0")
    memory.batches(plan)  # not iterated (a round stopped early): no backlog for the next round
    assert len(list(memory.batches(plan))) == 0
    memory.add_data(rollout(3, 2), "w0")
    assert len(list(memory.batches(plan))) == 2
    with pytest.raises(ValueError, match="never start"):
        memory.batches(ReplayPlan(batch_size=2, learning_starts=101, updates_per_step=1.0))


# ---------------------------------------------------------------------- prioritized replay
def prioritized(priorities: list[float], alpha: float = 0.7, beta: float = 0.5) -> ReplayMemory:
    memory = build(memory_size=8, prioritized=True, alpha=alpha, beta=beta, priority_epsilon=1e-6)
    memory.add_data(rollout(0, len(priorities)), "w0")
    memory.update_priorities(np.arange(len(priorities)), np.array(priorities))
    return memory


def test_new_transitions_get_the_max_priority_and_updates_use_alpha():
    memory = build(memory_size=8, prioritized=True, alpha=0.5)
    memory.add_data(rollout(0, 3), "w0")
    np.testing.assert_allclose(memory.priorities, 1.0)  # the initial max priority, 1
    memory.update_priorities(np.array([0, 1]), np.array([3.0, -8.0]))
    np.testing.assert_allclose(memory.priorities, [(3 + 1e-6) ** 0.5, (8 + 1e-6) ** 0.5, 1.0])
    memory.update_parameter("alpha", 1.0)  # applies to priorities set from now on
    memory.add_data(rollout(3, 1), "w0")
    assert memory.priorities[3] == pytest.approx(8 + 1e-6)
    with pytest.raises(IndexError):
        memory.update_priorities(np.array([4]), np.array([1.0]))


def test_sampling_frequencies_match_the_priorities():
    raw = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 8.0])
    memory, generator = prioritized(raw.tolist()), torch.Generator().manual_seed(0)
    probabilities = (raw + 1e-6) ** 0.7 / ((raw + 1e-6) ** 0.7).sum()
    counts = np.zeros(8)
    for _ in range(500):
        indices = memory.sample(64, generator).indices.numpy()
        assert (np.diff(indices) >= 0).all()  # stratified: one draw per segment, in order
        counts += np.bincount(indices, minlength=8)
    assert counts[6:].sum() == 0  # empty slots are never drawn
    expected = probabilities * counts.sum()
    chi2 = float(((counts[:6] - expected) ** 2 / expected).sum())
    dof = 5  # chi-square 1 - 3e-5 quantile (Wilson-Hilferty, z = 4): ~29 for 5 degrees of freedom
    assert chi2 < dof * (1 - 2 / (9 * dof) + 4 * math.sqrt(2 / (9 * dof))) ** 3


def test_importance_weights_are_the_paper_formula():
    raw = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 8.0])
    memory = prioritized(raw.tolist(), alpha=0.7, beta=0.5)
    p = (raw + 1e-6) ** 0.7
    probabilities, n = p / p.sum(), len(p)
    for beta in (0.5, 1.0):
        memory.update_parameter("beta", beta)  # applies from the next batch
        w = (n * probabilities) ** -beta
        w /= w.max()  # normalised by the largest weight over the memory (the smallest P)
        batch = memory.sample(16, torch.Generator().manual_seed(1))
        np.testing.assert_allclose(batch.weights.numpy(), w[batch.indices.numpy()], rtol=1e-6)
        assert batch.weights.dtype == torch.float32


def test_after_gradients_sets_the_batch_priorities():
    memory = prioritized([1.0] * 6, alpha=1.0)
    batch = memory.sample(4, torch.Generator().manual_seed(0))
    new = batch.indices.numpy() * 10.0 + 1.0  # the same value for a repeated index
    memory.after_gradients(batch, GradientResult(grads=None, info={}, priorities=torch.from_numpy(new)))
    np.testing.assert_allclose(memory.priorities[batch.indices.numpy()], new + 1e-6)
    before = memory.priorities.copy()
    memory.after_gradients(batch, GradientResult(grads=None, info={}))
    np.testing.assert_array_equal(memory.priorities, before)
    uniform = build()  # no priorities: nothing to do
    uniform.add_data(rollout(0, 2), "w0")
    uniform.after_gradients(uniform.sample(2), GradientResult(grads=None, info={}, priorities=np.ones(2)))
    assert uniform.priorities is None


# ---------------------------------------------------------------------- crc_debug
@pytest.mark.parametrize(("n_step", "field"), [(1, "obs"), (1, "next_obs"), (3, "next_obs_1"), (3, "rewards_1")])
def test_crc_debug_names_the_worker_and_step_of_a_corrupted_transition(n_step, field):
    config = ReplayConfig(num_steps=4, memory_size=64, crc_debug=True, n_step=n_step)
    cworker, gworker = (config.build(OBS_SPACE, ACT_SPACE, 2) for _ in "ab")
    collector = Collector(cworker, 2)
    for round_ in range(3):
        data = collector.collect(4)
        np.testing.assert_array_equal(data["step_index"], np.arange(4 * round_, 4 * round_ + 4))
        assert data["crc"].shape == (4, 2) and data["crc"].dtype == np.uint32
        gworker.add_data(data, "cworker-7")
    generator = torch.Generator().manual_seed(0)
    gworker.sample(256, generator)  # intact: no error
    slot = 3
    step, env = int(gworker.arrays["step_index"][slot]), int(gworker.arrays["env"][slot])
    gworker.arrays[field][slot:slot + 1].view(np.uint8)[..., 0] ^= 0xFF  # flip the bits of one byte
    with pytest.raises(ReplayCorruptionError, match=rf"slot {slot}: .*'cworker-7', sub-env {env}, step_index {step}"):
        gworker.sample(256, generator)
    data = collector.collect(4)
    del data["crc"]
    with pytest.raises(ValueError, match="crc"):
        gworker.add_data(data, "cworker-7")


# ---------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_gives_identical_batches(tmp_path):
    config = ReplayConfig(num_steps=5, memory_size=16, n_step=3, prioritized=True, crc_debug=True)
    cworker, gworker = (config.build(OBS_SPACE, ACT_SPACE, 2) for _ in "ab")
    collector = Collector(cworker, 2, seed=1)
    plan = ReplayPlan(batch_size=4, learning_starts=4, updates_per_step=0.3)
    for _ in range(4):  # 40 steps into 16 slots: wrapped; n-step tails waiting
        gworker.add_data(collector.collect(5), "cworker-0")
        for batch in gworker.batches(plan, torch.Generator().manual_seed(2)):
            gworker.after_gradients(batch, GradientResult(None, {}, priorities=np.abs(batch.rewards.numpy())))
    assert gworker.before_gradients()["transitions_waiting"] > 0
    torch.save({"gworker": gworker.state_dict(), "cworker": cworker.state_dict()}, tmp_path / "memory.pt")
    state = torch.load(tmp_path / "memory.pt", weights_only=True)  # tensors and primitives only
    restored, restored_cworker = (config.build(OBS_SPACE, ACT_SPACE, 2) for _ in "ab")
    restored.load_state_dict(state["gworker"])
    restored_cworker.load_state_dict(state["cworker"])
    assert len(restored) == len(gworker) == 16
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for _ in range(3):
        a, b = gworker.sample(8, g1), restored.sample(8, g2)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # the CWorker's step counter, the pending tails and the credit continue exactly
    data = collector.collect(5)
    np.testing.assert_array_equal(Collector(restored_cworker, 2).collect(5)["step_index"], data["step_index"])
    assert data["step_index"][0] == 20
    for memory in (gworker, restored):
        memory.add_data(data, "cworker-0")
    for name, array in gworker.arrays.items():
        np.testing.assert_array_equal(restored.arrays[name], array, err_msg=name)
    np.testing.assert_array_equal(restored.priorities, gworker.priorities)
    assert len(list(gworker.batches(plan))) == len(list(restored.batches(plan)))


# ---------------------------------------------------------------------- offline datasets
def test_dataset_round_trip_initialises_another_memory(tmp_path):
    source = build(envs=2, memory_size=10)
    for start in (0, 100):
        source.add_data(rollout(start, 4, envs=2), "w0")  # 16 transitions: wrapped
    path = tmp_path / "data.npz"
    write_dataset(source, path)
    data = load_dataset(path)
    assert tuple(data) == DATASET_KEYS and len(data["obs"]) == 10
    np.testing.assert_array_equal(data["obs"][:, 0], [6, 7, *range(100, 108)])  # the newest 10, oldest first
    memory = ReplayConfig(memory_size=50, dataset_path=str(path)).build(OBS_SPACE, ACT_SPACE, 2)
    info = memory.before_gradients()
    assert info["memory_size"] == 10 and info["transitions_added"] == 0
    for key in DATASET_KEYS:
        np.testing.assert_array_equal(memory.transitions()[key], source.transitions()[key], err_msg=key)
    batch = memory.sample(6, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (6, 3) and torch.equal(batch.next_obs[:, 0], batch.obs[:, 0] + 2)
    # the dataset counts toward learning_starts but earns no updates: only new transitions do
    plan = ReplayPlan(batch_size=4, learning_starts=10, updates_per_step=1.0)
    assert len(list(memory.batches(plan))) == 0
    memory.add_data(rollout(500, 1, envs=2), "w0")
    assert len(list(memory.batches(plan))) == 2 and len(memory) == 12
    small = ReplayConfig(memory_size=4, dataset_path=str(path)).build(OBS_SPACE, ACT_SPACE, 2)
    small.before_gradients()
    np.testing.assert_array_equal(small.transitions()["obs"], data["obs"][-4:])  # the newest 4


def test_load_dataset_names_the_bad_key(tmp_path):
    good = build()
    good.add_data(rollout(0, 3), "w0")
    columns = good.transitions()
    cases = {"truncated": {k: v for k, v in columns.items() if k != "truncated"},
             "'rewards'": columns | {"rewards": columns["rewards"].astype(np.float64)},
             "'actions'": columns | {"actions": columns["actions"][:2]},
             "'terminated'": columns | {"terminated": np.array([None, None, None], dtype=object)}}
    for message, arrays in cases.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=message):
            load_dataset(path)
    np.savez(tmp_path / "wide.npz", **columns | {"obs": np.zeros((3, 4), np.float32), "next_obs": np.zeros((3, 4),
                                                                                                       np.float32)})
    with pytest.raises(ValueError, match="'obs'"):
        load_dataset(tmp_path / "wide.npz", good.layout)
    with pytest.raises(ValueError, match="crc_debug"):
        nstep = build(n_step=3)
        nstep.add_data(rollout(0, 4), "w0")
        nstep.transitions()


# ---------------------------------------------------------------------- config and contract
def test_config_validation(tmp_path):
    assert ReplayConfig.runtime_parameters() == ("gamma", "alpha", "beta")
    assert ReplayConfig.kind == "replay" and ReplayConfig.collection_parameters == frozenset()
    for bad in ({"n_step": 0}, {"beta": 1.5}, {"memory_size": 0}, {"priority_epsilon": 0.0}, {"alpha": -1.0},
                {"sample_preprocessor": "no_colon"}, {"dataset_path": str(tmp_path / "missing.npz")}):
        with pytest.raises(ConfigError):
            ReplayConfig(**bad)
    with pytest.raises(ConfigError, match="sample_preprocessor"):
        ReplayConfig(sample_preprocessor="colonyrl_no_such_module:f").build(OBS_SPACE, ACT_SPACE, 1)
    with pytest.raises(ConfigError, match="sample_preprocessor"):
        ReplayConfig(sample_preprocessor="math:no_such_function").build(OBS_SPACE, ACT_SPACE, 1)
    path = tmp_path / "d.npz"
    write_dataset(build(), path)
    with pytest.raises(ConfigError, match="n_step"):
        ReplayConfig(n_step=3, dataset_path=str(path))
    memory = build()
    memory.update_parameter("gamma", 0.5)
    assert memory.config.gamma == 0.5
    for name, value in (("memory_size", 5), ("beta", 2.0)):
        with pytest.raises(ConfigError):
            memory.update_parameter(name, value)
    assert memory.config.beta == 0.4


def test_storage_contract():
    memory = build()
    assert memory.on_policy is False and memory.advantage_moments == Moments(0, 0.0, 0.0)
    memory.add_data(rollout(0, 3), "w0")
    memory.start_round()  # the memory persists across rounds
    assert memory.num_samples == 3
    assert set(memory.before_gradients()) >= {"memory_size", "transitions_added"}


# ---------------------------------------------------------------------- Dict observations (uint8 images inside)
DICT_SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (2, 4, 4), np.uint8),
                              "vec": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})


def dict_rollout(start: int, steps: int, envs: int = 1) -> dict:
    """:func:`rollout` with a Dict observation: image pixels id % 256 (uint8), vec [id, id, id]."""
    data = rollout(start, steps, envs)
    ids = data["obs"][..., 0]
    image = np.broadcast_to((ids % 256).astype(np.uint8)[..., None, None, None], (*ids.shape, 2, 4, 4)).copy()
    return {**data, "obs": {"image": image, "vec": data["obs"]}}


class DictCollector(Collector):
    """:class:`Collector` with random Dict observations."""

    def __init__(self, memory: ReplayMemory, envs: int, seed: int = 0) -> None:
        super().__init__(memory, envs, seed)
        self.obs = self._obs(envs)

    def _obs(self, envs: int) -> dict[str, np.ndarray]:
        return {"image": self.rng.integers(0, 256, (envs, 2, 4, 4), dtype=np.uint8),
                "vec": self.rng.normal(size=(envs, 3)).astype(np.float32)}

    def collect(self, steps: int) -> dict:
        for _ in range(steps):
            envs = len(self.prev_done)
            next_obs = self._obs(envs)
            end = self.rng.random(envs)
            terminated, truncated = (end < 0.1) & ~self.prev_done, (end > 0.9) & ~self.prev_done
            self.memory.insert(self.obs, self.rng.integers(0, 2, envs), self.rng.normal(size=envs),
                               terminated, truncated, ~self.prev_done, {})
            self.obs, self.prev_done = next_obs, terminated | truncated
        self.memory.finish(self.obs, {})
        return self.memory.get_data()


def same_batch(a: ReplayBatch, b: ReplayBatch) -> bool:
    return all(all(torch.equal(x[k], y[k]) for k in x) if isinstance(x, dict) else torch.equal(x, y)
               for x, y in zip(a, b, strict=True))


def test_dict_observations_round_trip_through_replay_with_dtypes_kept():
    memory = ReplayConfig(memory_size=100, num_steps=3).build(DICT_SPACE, ACT_SPACE, 2)
    assert {"obs/image", "obs/vec", "next_obs/image", "next_obs/vec"} <= set(memory.fields)
    memory.add_data(dict_rollout(0, 3, envs=2), "w0")
    memory.add_data(dict_rollout(6, 3, envs=2), "w0")
    assert len(memory) == 12
    assert memory.arrays["obs/image"].dtype == memory.arrays["next_obs/image"].dtype == np.uint8
    batch = memory.sample(32, torch.Generator().manual_seed(0))
    assert set(batch.obs) == set(batch.next_obs) == {"image", "vec"}
    assert batch.obs["image"].dtype == batch.next_obs["image"].dtype == torch.uint8
    assert batch.obs["image"].shape == (32, 2, 4, 4) and batch.obs["vec"].dtype == torch.float32
    ids = batch.obs["vec"][:, 0]
    assert torch.equal(batch.next_obs["vec"][:, 0], ids + 2)  # the same sub-env's next observation
    assert torch.equal(batch.obs["image"][:, 1, 3, 3], ids.to(torch.uint8))
    assert torch.equal(batch.next_obs["image"][:, 0, 0, 0], (ids + 2).to(torch.uint8))
    assert torch.equal(batch.rewards, ids)


def test_dict_observations_take_n_step_targets_across_rollouts():
    memory = ReplayConfig(memory_size=100, num_steps=4, n_step=3, gamma=0.5).build(DICT_SPACE, ACT_SPACE, 1)
    memory.add_data(dict_rollout(0, 4), "w0")  # ids 0..4; the next rollout starts at 4: the stream goes on
    assert len(memory) == 2 and memory.before_gradients()["transitions_waiting"] == 2
    memory.add_data(dict_rollout(4, 4), "w0")
    assert len(memory) == 6
    ids = memory.arrays["obs/vec"][:, 0]
    np.testing.assert_array_equal(ids, np.arange(6))
    np.testing.assert_array_equal(memory.arrays["next_obs/vec"][:, 0], ids + 3)
    np.testing.assert_array_equal(memory.arrays["next_obs/image"][:, 0, 0, 0], (ids + 3).astype(np.uint8))
    np.testing.assert_allclose(memory.arrays["rewards"], ids + 0.5 * (ids + 1) + 0.25 * (ids + 2))
    broken = dict_rollout(40, 4)  # does not continue the stream: the waiting transitions end there
    memory.add_data(broken, "w0")
    np.testing.assert_array_equal(memory.arrays["obs/vec"][6:8, 0], [6, 7])
    np.testing.assert_array_equal(memory.arrays["next_obs/vec"][6:8, 0], [8, 8])


def test_dict_memory_state_dict_round_trip_gives_identical_batches(tmp_path):
    config = ReplayConfig(num_steps=5, memory_size=16, n_step=3, prioritized=True, crc_debug=True)
    cworker, gworker = (config.build(DICT_SPACE, ACT_SPACE, 2) for _ in "ab")
    collector = DictCollector(cworker, 2, seed=1)
    for _ in range(4):  # 40 steps into 16 slots: wrapped; n-step tails waiting
        gworker.add_data(collector.collect(5), "cworker-0")
    assert gworker.before_gradients()["transitions_waiting"] > 0
    gworker.sample(64, torch.Generator().manual_seed(1))  # crc_debug: every sampled transition verifies
    torch.save({"gworker": gworker.state_dict()}, tmp_path / "memory.pt")
    state = torch.load(tmp_path / "memory.pt", weights_only=True)
    assert state["gworker"]["arrays"]["obs/image"].dtype == torch.uint8
    restored = config.build(DICT_SPACE, ACT_SPACE, 2)
    restored.load_state_dict(state["gworker"])
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for _ in range(3):
        assert same_batch(gworker.sample(8, g1), restored.sample(8, g2))
    data = collector.collect(5)  # the pending tails continue exactly
    for memory in (gworker, restored):
        memory.add_data(data, "cworker-0")
    for name, array in gworker.arrays.items():
        np.testing.assert_array_equal(restored.arrays[name], array, err_msg=name)


def test_crc_debug_catches_a_corrupted_dict_observation():
    config = ReplayConfig(num_steps=4, memory_size=64, crc_debug=True)
    cworker, gworker = (config.build(DICT_SPACE, ACT_SPACE, 2) for _ in "ab")
    gworker.add_data(DictCollector(cworker, 2).collect(4), "cworker-3")
    generator = torch.Generator().manual_seed(0)
    gworker.sample(256, generator)  # intact
    gworker.arrays["next_obs/image"][2, 0, 0, 0] ^= 0xFF
    with pytest.raises(ReplayCorruptionError, match="slot 2: .*'cworker-3'"):
        gworker.sample(256, generator)


def test_datasets_refuse_dict_observations_clearly(tmp_path):
    memory = ReplayConfig(memory_size=10, num_steps=3).build(DICT_SPACE, ACT_SPACE, 1)
    memory.add_data(dict_rollout(0, 3), "w0")
    with pytest.raises(ValueError, match="Dict"):
        write_dataset(memory, tmp_path / "data.npz")
    source = build()
    source.add_data(rollout(0, 3), "w0")
    write_dataset(source, tmp_path / "flat.npz")
    with pytest.raises(ConfigError, match="ReplayConfig.dataset_path"):
        ReplayConfig(dataset_path=str(tmp_path / "flat.npz")).build(DICT_SPACE, ACT_SPACE, 1)
