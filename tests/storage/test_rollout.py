"""RolloutStorage: CWorker round trip on a real gymnasium vector env, GWorker batching, runtime updates."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.config import ConfigError
from colonyrl.storage import Minibatch, RolloutConfig, RolloutStorage, SequenceBatch

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)
#: The rollout layout with PPO's extras (storage/layout.py)
ROLLOUT_KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "valid", "logp", "values")


def collect(storage: RolloutStorage, env: gym.vector.VectorEnv, obs: np.ndarray, prev_done: np.ndarray,
            rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray, dict[str, list]]:
    """What a CWorker does: act randomly, step, insert; valid=False right after an episode end."""
    sent: dict[str, list] = {key: [] for key in ROLLOUT_KEYS}
    for _ in range(steps):
        actions = rng.integers(0, 2, env.num_envs)
        values = (10 * obs[:, 0]).astype(np.float32)  # a stand-in critic: any function of obs
        logp = np.full(env.num_envs, np.log(0.5), np.float32)
        next_obs, rewards, terminated, truncated, _ = env.step(actions)
        # gymnasium NEXT_STEP autoreset: this step only reset the sub-envs that ended last step
        row = dict(obs=obs, actions=actions, rewards=rewards, terminated=terminated, truncated=truncated,
                   valid=~prev_done)
        storage.insert(**row, extras={"logp": logp, "values": values})
        for key, value in {**row, "logp": logp, "values": values}.items():
            sent[key].append(np.array(value))
        obs, prev_done = next_obs, terminated | truncated
    last_values = (10 * obs[:, 0]).astype(np.float32)
    storage.finish(obs, {"values": last_values})
    sent["values"].append(last_values)
    sent["obs"].append(np.array(obs))
    return obs, prev_done, sent


@pytest.fixture
def cartpole():
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", max_episode_steps=4)
    yield env
    env.close()


def make_rollout(steps: int, envs: int, invalid: list[tuple[int, int]], first_id: int = 0) -> dict[str, np.ndarray]:
    """A synthetic rollout whose obs[t, n, 0] is a unique sample id; (t, n) in ``invalid`` are autoreset steps."""
    ids = first_id + np.arange(steps * envs, dtype=np.float32).reshape(steps, envs)
    valid = np.ones((steps, envs), bool)
    terminated = np.zeros((steps, envs), bool)
    for t, n in invalid:
        valid[t, n] = False
        terminated[t - 1, n] = True  # the step before an autoreset step ended the episode
    obs_ids = np.concatenate([ids, np.full((1, envs), -1.0, np.float32)])  # row T: the obs after the last step
    return {"obs": np.stack([obs_ids, obs_ids, obs_ids], axis=-1), "actions": (ids % 2).astype(np.int64),
            "logp": np.full((steps, envs), -0.5, np.float32), "values": np.zeros((steps + 1, envs), np.float32),
            "rewards": ids.copy(), "terminated": terminated, "truncated": np.zeros((steps, envs), bool),
            "valid": valid}


def storage(**config) -> RolloutStorage:
    return RolloutConfig(**config).build(OBS_SPACE, ACT_SPACE, num_envs=2)


def all_samples(store: RolloutStorage) -> Minibatch:
    """The whole batch in one minibatch, sorted by sample id (obs[:, 0])."""
    (batch,) = store.generate_batches(num_epochs=1, minibatch_size=10**6)
    order = torch.argsort(batch.obs[:, 0])
    return Minibatch(*(tensor[order] for tensor in batch.tensors()), advantage_stats=batch.advantage_stats)


# ---------------------------------------------------------------- CWorker side


def test_round_trip_with_cartpole_marks_autoreset_steps(cartpole):
    store = RolloutConfig(num_steps=12).build(cartpole.single_observation_space, cartpole.single_action_space,
                                              num_envs=2)
    obs, _ = cartpole.reset(seed=0)
    _, _, sent = collect(store, cartpole, obs, np.zeros(2, bool), np.random.default_rng(0), steps=12)
    assert store.full and store.step == 12
    data = store.get_data()
    assert store.step == 0 and not store.full

    assert tuple(data) == ROLLOUT_KEYS
    for key in ROLLOUT_KEYS:
        np.testing.assert_array_equal(data[key], np.stack(sent[key]), err_msg=key)
    assert data["values"].shape == (13, 2) and data["obs"].shape == (13, 2, 4)
    assert data["obs"].dtype == np.float32 and data["actions"].dtype == np.int64
    assert data["logp"].dtype == data["values"].dtype == data["rewards"].dtype == np.float32

    # max_episode_steps=4: episodes end at t=3 and t=8 (truncated unless the pole fell earlier) ...
    ended = data["terminated"] | data["truncated"]
    assert ended.sum() >= 4
    # ... and the step after each end is gymnasium's autoreset step: invalid, reward exactly 0,
    invalid = ~data["valid"]
    np.testing.assert_array_equal(invalid[1:], ended[:-1])
    assert not invalid[0].any() and (data["rewards"][invalid] == 0).all()
    # its obs is the real final obs; the obs after it is a fresh reset obs (CartPole: all in +-0.05).
    t, n = np.argwhere(invalid)[0]
    assert (np.abs(data["obs"][t + 1, n]) <= 0.05).all()

    store.add_data(data)
    assert store.num_samples == 24 - invalid.sum()
    info = store.before_gradients()
    assert info["num_samples"] == 24 - invalid.sum()


def test_get_data_arrays_are_not_overwritten_by_later_inserts(cartpole):
    store = RolloutConfig(num_steps=6).build(cartpole.single_observation_space, cartpole.single_action_space, 2)
    rng = np.random.default_rng(1)
    obs, _ = cartpole.reset(seed=1)
    obs, done, _ = collect(store, cartpole, obs, np.zeros(2, bool), rng, steps=6)
    first = store.get_data()
    snapshot = {key: array.copy() for key, array in first.items()}
    collect(store, cartpole, obs, done, rng, steps=6)
    second = store.get_data()
    for key in ROLLOUT_KEYS:
        np.testing.assert_array_equal(first[key], snapshot[key], err_msg=key)
        assert not np.shares_memory(first[key], second[key])


def test_partial_rollout_of_a_preempted_worker(cartpole):
    store = RolloutConfig(num_steps=8).build(cartpole.single_observation_space, cartpole.single_action_space, 2)
    obs, _ = cartpole.reset(seed=2)
    collect(store, cartpole, obs, np.zeros(2, bool), np.random.default_rng(2), steps=3)
    data = store.get_data()
    assert data["obs"].shape == (4, 2, 4) and data["values"].shape == (4, 2) and data["valid"].shape == (3, 2)
    assert all(array.flags.c_contiguous for array in data.values())


def test_insert_when_full_and_get_data_before_finish_raise():
    store = storage(num_steps=1)
    row = dict(obs=np.zeros((2, 3), np.float32), actions=np.zeros(2, np.int64), rewards=np.zeros(2),
               terminated=np.zeros(2, bool), truncated=np.zeros(2, bool), valid=np.ones(2, bool),
               extras={"logp": np.zeros(2), "values": np.zeros(2)})
    store.insert(**row)
    with pytest.raises(RuntimeError, match="full"):
        store.insert(**row)
    with pytest.raises(RuntimeError, match="finish"):
        store.get_data()


def test_image_obs_stay_uint8_and_box_actions_are_float32():
    obs_space = gym.spaces.Box(0, 255, (4, 4), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    store = RolloutConfig(num_steps=2).build(obs_space, act_space, num_envs=3)
    for t in range(2):
        store.insert(np.full((3, 4, 4), t, np.uint8), np.full((3, 2), 0.5), np.ones(3), np.zeros(3, bool),
                     np.zeros(3, bool), np.ones(3, bool), {"logp": np.zeros(3), "values": np.zeros(3)})
    store.finish(np.full((3, 4, 4), 2, np.uint8), {"values": np.zeros(3)})
    data = store.get_data()
    assert data["obs"].dtype == np.uint8 and data["actions"].dtype == np.float32
    assert data["actions"].shape == (2, 3, 2)
    store.add_data(data)
    store.before_gradients()
    (batch,) = store.generate_batches(1, minibatch_size=6)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (6, 4, 4)
    assert batch.actions.dtype == torch.float32 and batch.actions.shape == (6, 2)


# ---------------------------------------------------------------- GWorker side


def test_add_data_with_two_rollouts_of_different_length_drops_invalid_steps():
    store = storage(gamma=0.0, gae_lambda=0.0)  # advantages = rewards - values = sample id
    store.add_data(make_rollout(5, 2, invalid=[(2, 0), (4, 1)], first_id=0))  # ids 0..9, invalid 4 and 9
    store.add_data(make_rollout(3, 3, invalid=[(1, 2)], first_id=100))  # ids 100..108, invalid 105
    assert store.num_samples == 10 - 2 + 9 - 1

    info = store.before_gradients()
    assert info["num_samples"] == 16
    batch = all_samples(store)
    expected_ids = [0, 1, 2, 3, 5, 6, 7, 8, 100, 101, 102, 103, 104, 106, 107, 108]
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), expected_ids)
    np.testing.assert_array_equal(batch.advantages.numpy(), expected_ids)
    np.testing.assert_array_equal(batch.returns.numpy(), expected_ids)
    np.testing.assert_array_equal(batch.actions.numpy(), np.array(expected_ids) % 2)
    assert batch.logp_old.dtype == batch.advantages.dtype == batch.values_old.dtype == torch.float32
    assert batch.actions.dtype == torch.int64 and (batch.logp_old == -0.5).all()
    # mean advantage = mean of the ids = (0+1+2+3+5+6+7+8 + 100+...+108 - 105) / 16 = (32 + 831) / 16
    assert info["advantage_mean"] == pytest.approx(863 / 16) and info["value_mean"] == 0.0


@pytest.mark.parametrize("minibatch_size, sizes", [(4, [5, 4, 4]), (5, [5, 4, 4]), (1, [1] * 13), (13, [13]), (100, [13])])
def test_generate_batches_uses_every_sample_once_per_epoch(minibatch_size, sizes):
    store = storage()
    store.add_data(make_rollout(5, 3, invalid=[(1, 0), (3, 2)]))  # 15 - 2 = 13 samples
    store.before_gradients()
    batches = list(store.generate_batches(3, minibatch_size, torch.Generator().manual_seed(0)))
    assert len(batches) == 3 * len(sizes)  # round(13 / mbs) minibatches per epoch
    for epoch in range(3):
        chunk = batches[epoch * len(sizes):(epoch + 1) * len(sizes)]
        assert [len(mb.obs) for mb in chunk] == sizes
        ids = torch.cat([mb.obs[:, 0] for mb in chunk]).sort().values.numpy()
        np.testing.assert_array_equal(ids, [i for i in range(15) if i not in (3, 11)])  # (t, n) -> 3t + n


def test_generate_batches_is_reproducible_with_a_generator():
    store = storage()
    store.add_data(make_rollout(4, 2, invalid=[]))
    store.before_gradients()

    def ids(seed: int) -> list[list[float]]:
        return [mb.obs[:, 0].tolist() for mb in store.generate_batches(2, 3, torch.Generator().manual_seed(seed))]

    assert ids(7) == ids(7) and ids(7) != ids(8)


def test_update_parameter_changes_gamma_at_next_before_gradients():
    # one env, T=2, rewards [1, 1], V [0, 0, 2], no episode end, lambda = 1
    rollout = {"obs": np.array([[[0, 0, 0]], [[1, 1, 1]], [[2, 2, 2]]], np.float32), "actions": np.zeros((2, 1), np.int64),
               "logp": np.zeros((2, 1), np.float32), "values": np.array([[0], [0], [2]], np.float32),
               "rewards": np.ones((2, 1), np.float32), "terminated": np.zeros((2, 1), bool),
               "truncated": np.zeros((2, 1), bool), "valid": np.ones((2, 1), bool)}
    store = storage(gamma=0.5, gae_lambda=1.0)
    store.add_data(rollout)
    store.before_gradients()
    # gamma 0.5: delta1 = 1 + 0.5*2 - 0 = 2, delta0 = 1 + 0.5*0 - 0 = 1; A1 = 2, A0 = 1 + 0.5*2 = 2
    np.testing.assert_array_equal(all_samples(store).advantages.numpy(), [2.0, 2.0])

    store.update_parameter("gamma", 1.0)
    assert store.config.gamma == 1.0
    np.testing.assert_array_equal(all_samples(store).advantages.numpy(), [2.0, 2.0])  # not before ...
    store.before_gradients()
    # gamma 1: delta1 = 1 + 2 = 3, delta0 = 1; A1 = 3, A0 = 1 + 3 = 4  (... but at before_gradients)
    np.testing.assert_array_equal(all_samples(store).advantages.numpy(), [4.0, 3.0])


@pytest.mark.parametrize("name, value", [("nope", 0.5), ("gamma", 1.5), ("gae_lambda", -0.1),
                                         ("gamma", "0.9"), ("num_steps", 64)])
def test_update_parameter_rejects_bad_changes_and_changes_nothing(name, value):
    store = storage(gamma=0.9)
    before = store.config
    with pytest.raises(ConfigError):
        store.update_parameter(name, value)
    assert store.config is before and store.config.gamma == 0.9 and store.config.num_steps == 128


def test_read_only_input_arrays_work():
    data = make_rollout(4, 2, invalid=[(2, 1)])
    for array in data.values():
        array.setflags(write=False)
    store = storage()
    store.add_data(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a non-writable numpy array
        store.before_gradients()
    (batch,) = store.generate_batches(1, minibatch_size=7)
    batch.advantages.mul_(2.0)  # tensors are ours to write
    assert store.num_samples == 7 and not data["obs"].flags.writeable


def test_explained_variance_and_means():
    store = storage(gamma=0.0, gae_lambda=0.0)  # returns = rewards
    data = make_rollout(2, 2, invalid=[])  # rewards = ids [0, 1, 2, 3]
    data["values"][:2] = data["rewards"]  # a perfect critic: Var[returns - values] = 0
    store.add_data(data)
    info = store.before_gradients()
    assert info == {"num_samples": 4.0, "explained_variance": 1.0, "value_mean": 1.5, "advantage_mean": 0.0}

    store.clear()
    data = make_rollout(2, 2, invalid=[])
    data["rewards"][:] = 1.0  # constant returns: Var[returns] = 0 -> NaN, not a division error
    store.add_data(data)
    info = store.before_gradients()
    assert np.isnan(info["explained_variance"]) and info["advantage_mean"] == 1.0


def test_empty_storage_yields_no_batches():
    store = storage()
    store.add_data(make_rollout(0, 2, invalid=[]))
    info = store.before_gradients()
    assert info["num_samples"] == 0 and np.isnan(info["value_mean"]) and np.isnan(info["explained_variance"])
    assert list(store.generate_batches(4, 8)) == []


def test_clear_drops_gworker_data():
    store = storage()
    store.add_data(make_rollout(3, 2, invalid=[]))
    store.before_gradients()
    store.clear()
    assert store.num_samples == 0
    with pytest.raises(RuntimeError, match="before_gradients"):
        next(store.generate_batches(1, 4))
    assert store.before_gradients()["num_samples"] == 0


def test_add_data_invalidates_the_prepared_batch():
    store = storage()
    store.add_data(make_rollout(3, 2, invalid=[]))
    store.before_gradients()
    store.add_data(make_rollout(3, 2, invalid=[]))
    with pytest.raises(RuntimeError, match="before_gradients"):
        next(store.generate_batches(1, 4))


@pytest.mark.parametrize("key, bad", [("values", np.zeros((3, 2), np.float32)),  # needs T+1 rows
                                      ("actions", np.zeros((3, 2), np.int32)),  # wrong dtype
                                      ("obs", np.zeros((3, 2, 3), np.float32)),  # needs T+1 rows
                                      ("valid", None)])  # missing
def test_add_data_rejects_a_broken_rollout(key, bad):
    data = make_rollout(3, 2, invalid=[])
    if bad is None:
        del data[key]
    else:
        data[key] = bad
    store = storage()
    with pytest.raises(ValueError, match=key):
        store.add_data(data)
    assert store.num_samples == 0


def test_config_validation():
    assert RolloutConfig.runtime_parameters() == ("gamma", "gae_lambda")
    for bad in ({"num_steps": 0}, {"gamma": 1.2}, {"gae_lambda": -1.0}, {"num_steps": 1.5}):
        with pytest.raises(ConfigError):
            RolloutConfig(**bad)
    with pytest.raises(ValueError, match="num_envs"):
        RolloutConfig().build(OBS_SPACE, ACT_SPACE, num_envs=0)


# ---------------------------------------------------------------- time-major sequences (SequencePlan)


def test_sequences_keep_time_order_episode_boundaries_and_pad_short_rollouts():
    store = storage(gamma=0.0, gae_lambda=0.0)  # advantages = rewards - values = sample id
    store.add_data(make_rollout(5, 2, invalid=[(2, 0), (4, 1)], first_id=0))  # (t, n) -> id 2t + n
    store.add_data(make_rollout(3, 3, invalid=[(1, 2)], first_id=100))  # a shorter (preempted) rollout
    store.before_gradients()
    (batch,) = store.generate_sequences(1, minibatch_size=10**6, generator=torch.Generator().manual_seed(0))
    assert isinstance(batch, SequenceBatch) and batch.gamma == 0.0
    assert batch.obs.shape == (6, 5, 3) and batch.rewards.shape == batch.valid.shape == (5, 5)
    assert batch.values_old.shape == (6, 5) and batch.num_samples == 16  # 10 - 2 + 9 - 1 valid steps
    columns = {int(batch.obs[0, c, 0]): c for c in range(5)}  # the columns, by their first id
    assert sorted(columns) == [0, 1, 100, 101, 102]
    for first, envs, steps in ((0, 2, 5), (1, 2, 5), (100, 3, 3), (101, 3, 3), (102, 3, 3)):
        c = columns[first]
        ids = first + envs * np.arange(steps)
        np.testing.assert_array_equal(batch.obs[:steps, c, 0].numpy(), ids)  # time order kept
        np.testing.assert_array_equal(batch.rewards[:steps, c].numpy(), ids)
        np.testing.assert_array_equal(batch.advantages[:steps, c].numpy(), np.where(batch.valid[:steps, c], ids, 0))
        # the real next observation after the last step (-1 in make_rollout), repeated over the padding
        np.testing.assert_array_equal(batch.obs[steps:, c, 0].numpy(), -1.0)
        assert not batch.valid[steps:, c].any() and not batch.terminated[steps:, c].any()
        assert (batch.rewards[steps:, c] == 0).all()
    # autoreset steps stay in place, invalid, right after the episode end that precedes them
    for first, t in ((0, 2), (1, 4), (102, 1)):
        assert not batch.valid[t, columns[first]] and batch.terminated[t - 1, columns[first]]
    assert batch.logp_old.dtype == batch.advantages.dtype == torch.float32 and batch.actions.dtype == torch.int64


def test_sequence_batches_take_whole_columns_and_shuffle_only_columns():
    store = storage()
    store.add_data(make_rollout(4, 6, invalid=[(2, 3)]))  # (t, n) -> 6t + n
    store.before_gradients()
    batches = list(store.generate_sequences(2, minibatch_size=8, generator=torch.Generator().manual_seed(1)))
    assert len(batches) == 2 * 3  # round(6 columns x 4 steps / 8) = 3 batches of 2 columns per epoch
    for epoch in range(2):
        chunk = batches[3 * epoch:3 * epoch + 3]
        firsts = sorted(int(f) for b in chunk for f in b.obs[0, :, 0])
        assert firsts == list(range(6))  # every column once per epoch
        for b in chunk:
            assert b.obs.shape == (5, 2, 3)
            np.testing.assert_array_equal(b.obs[:4, :, 0] - b.obs[0, :, 0], np.repeat(6.0 * np.arange(4)[:, None], 2, 1))
            assert b.num_samples == int(b.valid.sum())
    assert [b.obs[0, :, 0].tolist() for b in batches[:3]] != [b.obs[0, :, 0].tolist() for b in batches[3:]]

    def firsts(seed: int) -> list[list[float]]:
        return [b.obs[0, :, 0].tolist() for b in store.generate_sequences(1, 8, None, torch.Generator().manual_seed(seed))]

    assert firsts(3) == firsts(3)


def test_sequence_length_cuts_columns_into_chunks():
    store = storage()
    store.add_data(make_rollout(5, 2, invalid=[(3, 1)]))  # (t, n) -> 2t + n
    store.before_gradients()
    (batch,) = store.generate_sequences(1, minibatch_size=10**6, sequence_length=2)
    assert batch.obs.shape == (3, 6, 3) and batch.num_samples == 9  # chunks [0, 2), [2, 4), [4, 5) of 2 envs
    by_first = {int(batch.obs[0, c, 0]): c for c in range(6)}
    assert sorted(by_first) == [0, 1, 4, 5, 8, 9]
    for first in (0, 1, 4, 5):  # full chunks: their next observation is the next chunk's first
        np.testing.assert_array_equal(batch.obs[:, by_first[first], 0].numpy(), [first, first + 2, first + 4])
    for first in (8, 9):  # the last chunk: one step, padded; its next obs is the rollout's last (-1)
        np.testing.assert_array_equal(batch.obs[:, by_first[first], 0].numpy(), [first, -1, -1])
        assert batch.valid[:, by_first[first]].tolist() == [True, False]
    assert not batch.valid[1, by_first[5]] and batch.terminated[0, by_first[5]]  # (3, 1) is chunk [2, 4)'s


def test_batches_follow_the_plan_type():
    from colonyrl.agents.base import EpochPlan, ReplayPlan, SequencePlan

    store = storage()
    store.add_data(make_rollout(3, 2, invalid=[]))
    store.before_gradients()
    assert all(isinstance(b, Minibatch) for b in store.batches(EpochPlan(1, 2)))
    sequences = list(store.batches(SequencePlan(2, 3)))
    assert len(sequences) == 2 * 2 and all(isinstance(b, SequenceBatch) and b.obs.shape[:2] == (4, 1) for b in sequences)
    with pytest.raises(TypeError, match="SequencePlan"):
        store.batches(ReplayPlan(4, 0, 1.0))


def test_sequences_of_an_empty_round_and_before_preparing():
    store = storage()
    store.add_data(make_rollout(0, 2, invalid=[]))
    store.before_gradients()
    assert list(store.generate_sequences(1, 8)) == []
    store.add_data(make_rollout(3, 2, invalid=[]))
    with pytest.raises(RuntimeError, match="before_gradients"):
        next(store.generate_sequences(1, 8))
    with pytest.raises(ValueError, match="sequence_length"):
        next(store.generate_sequences(1, 8, sequence_length=0))


def test_a_batch_of_autoreset_steps_only_is_skipped():
    store = storage()
    store.add_data(make_rollout(2, 2, invalid=[(1, 0)]))
    store.before_gradients()
    batches = list(store.generate_sequences(1, minibatch_size=1, sequence_length=1))  # 4 one-step columns
    assert len(batches) == 3 and all(b.num_samples == 1 for b in batches)


# ---------------------------------------------------------------- Dict observations (uint8 images inside)
DICT_SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (2, 5, 5), np.uint8),
                              "vec": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})


def dict_obs(ids: np.ndarray) -> dict[str, np.ndarray]:
    """A Dict observation per id (any shape of ids): image pixels id % 256, vec [id, -id, 0]."""
    ids = np.asarray(ids, np.float32)
    image = np.broadcast_to((ids % 256).astype(np.uint8)[..., None, None, None], (*ids.shape, 2, 5, 5)).copy()
    return {"image": image, "vec": np.stack([ids, -ids, np.zeros_like(ids)], axis=-1)}


def fill_dict_storage(store: RolloutStorage, steps: int, envs: int, prev_done: list[tuple[int, int]] = ()) -> None:
    """obs of (t, n) has id envs * t + n; (t, n) in prev_done are autoreset steps."""
    valid = np.ones((steps, envs), bool)
    for t, n in prev_done:
        valid[t, n] = False
    for t in range(steps):
        ids = envs * t + np.arange(envs)
        store.insert(dict_obs(ids), ids % 2, ids.astype(np.float32), np.zeros(envs, bool), np.zeros(envs, bool),
                     valid[t], {"logp": np.zeros(envs, np.float32), "values": np.zeros(envs, np.float32)})
    store.finish(dict_obs(envs * steps + np.arange(envs)), {"values": np.zeros(envs, np.float32)})


def test_dict_observations_round_trip_through_rollout_storage_with_dtypes_kept():
    store = RolloutConfig(num_steps=4, gamma=0.0, gae_lambda=0.0).build(DICT_SPACE, ACT_SPACE, num_envs=3)
    assert [k for k in store.layout if k.startswith("obs")] == ["obs/image", "obs/vec"]
    fill_dict_storage(store, 4, 3, prev_done=[(2, 1)])
    data = store.get_data()
    assert set(data["obs"]) == {"image", "vec"}
    assert data["obs"]["image"].dtype == np.uint8 and data["obs"]["image"].shape == (5, 3, 2, 5, 5)
    assert data["obs"]["vec"].dtype == np.float32 and data["obs"]["vec"].shape == (5, 3, 3)
    gworker = RolloutConfig(num_steps=4, gamma=0.0, gae_lambda=0.0).build(DICT_SPACE, ACT_SPACE, num_envs=3)
    gworker.add_data(data)
    assert gworker.num_samples == 11
    gworker.before_gradients()
    (batch,) = gworker.generate_batches(1, minibatch_size=10**6)
    assert batch.obs["image"].dtype == torch.uint8 and batch.obs["vec"].dtype == torch.float32
    ids = batch.obs["vec"][:, 0]
    assert sorted(ids.tolist()) == [i for i in range(12) if i != 7]  # (2, 1) -> id 7 is an autoreset step
    # every field of a sample belongs to the same step
    assert torch.equal(batch.obs["image"][:, 0, 0, 0], (ids % 256).to(torch.uint8))
    assert torch.equal(batch.advantages, ids) and torch.equal(batch.actions, ids.long() % 2)
    (seq,) = gworker.generate_sequences(1, minibatch_size=10**6)
    assert seq.obs["image"].shape == (5, 3, 2, 5, 5) and seq.obs["image"].dtype == torch.uint8
    assert seq.obs["vec"].shape == (5, 3, 3)
    for c in range(3):  # whole columns, in time order, the last row the observation after the last step
        n = int(seq.obs["vec"][0, c, 0])
        np.testing.assert_array_equal(seq.obs["vec"][:, c, 0].numpy(), n + 3 * np.arange(5))
        np.testing.assert_array_equal(seq.obs["image"][:, c, 1, 4, 4].numpy(), n + 3 * np.arange(5))


def test_a_dict_rollout_missing_a_key_is_rejected():
    store = RolloutConfig(num_steps=1).build(DICT_SPACE, ACT_SPACE, num_envs=2)
    with pytest.raises(ValueError, match="observation keys"):
        store.insert({"image": dict_obs(np.zeros(2))["image"]}, np.zeros(2, np.int64), np.zeros(2), np.zeros(2, bool),
                     np.zeros(2, bool), np.ones(2, bool), {"logp": np.zeros(2), "values": np.zeros(2)})
    fill_dict_storage(store, 1, 2)
    data = store.get_data()
    del data["obs"]["vec"]
    with pytest.raises(ValueError, match="obs/vec"):
        store.add_data(data)
