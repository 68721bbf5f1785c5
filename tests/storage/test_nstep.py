"""nstep_returns against hand-computed targets, and the replay memory's carry-over between rollouts."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from colonyrl.storage.nstep import _summed_returns, nstep_returns
from colonyrl.storage.replay import ReplayConfig, ReplayMemory

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)


def column(*values: float | bool) -> np.ndarray:
    """A ``[T, 1]`` column."""
    return np.array(values).reshape(-1, 1)


def run(rewards, terminated, truncated, valid, gamma=0.5, n=3):
    return nstep_returns(column(*rewards).astype(np.float32), column(*terminated).astype(bool),
                         column(*truncated).astype(bool), column(*valid).astype(bool), gamma, n)


def test_terminated_episode_stops_summing_and_never_bootstraps():
    # episode ends by termination at t=2; t=3 is the autoreset step; t=4 starts the next episode
    returns, offset, discounts, done, complete = run([1, 2, 3, 4, 5], [0, 0, 1, 0, 0], [0] * 5, [1, 1, 1, 0, 1])
    np.testing.assert_allclose(returns[:, 0], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 0, 5])
    np.testing.assert_array_equal(offset[:, 0], [3, 2, 1, 0, 1])
    np.testing.assert_allclose(discounts[:, 0], [0.125, 0.25, 0.5, 1.0, 0.5])
    np.testing.assert_array_equal(done[:, 0], [True, True, True, False, False])
    # t=4's lookahead runs past the piece: it waits for the next rollout
    np.testing.assert_array_equal(complete[:, 0], [True, True, True, True, False])
    assert returns.dtype == np.float32 and discounts.dtype == np.float32 and offset.dtype == np.int64


def test_truncated_episode_stops_summing_and_bootstraps_from_the_final_observation():
    returns, offset, discounts, done, complete = run([1, 2, 3, 4, 5], [0] * 5, [0, 0, 1, 0, 0], [1, 1, 1, 0, 1])
    np.testing.assert_allclose(returns[:, 0], [2.75, 3.5, 3, 0, 5])
    # next observation obs[t + n'] = obs[3]: the real final observation of the truncated episode
    np.testing.assert_array_equal((np.arange(5) + offset[:, 0])[:3], [3, 3, 3])
    np.testing.assert_allclose(discounts[:3, 0], [0.125, 0.25, 0.5])
    assert not done.any()
    np.testing.assert_array_equal(complete[:, 0], [True, True, True, True, False])


def test_full_lookahead_and_the_autoreset_step_is_never_summed_across():
    # no episode end: t=0 sums 3 rewards; t=1 and t=2 need rows past the piece
    returns, offset, _, done, complete = run([1, 2, 3, 4], [0] * 4, [0] * 4, [1] * 4)
    np.testing.assert_allclose(returns[:2, 0], [1 + 1 + 0.75, 2 + 1.5 + 1])
    np.testing.assert_array_equal(offset[:2, 0], [3, 3])
    np.testing.assert_array_equal(complete[:, 0], [True, True, False, False])
    assert not done.any()
    # an autoreset step (valid False) nobody announced: summing stops before it and bootstraps
    returns, offset, discounts, done, complete = run([1, 2, 100, 4], [0] * 4, [0] * 4, [1, 1, 0, 1])
    np.testing.assert_allclose(returns[:2, 0], [1 + 0.5 * 2, 2])
    np.testing.assert_array_equal(offset[:, 0], [2, 1, 0, 1])
    np.testing.assert_allclose(discounts[:2, 0], [0.25, 0.5])
    assert not done.any() and complete[:3].all()


def test_one_step_is_the_plain_transition():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 3)).astype(np.float32)
    terminated = rng.random((6, 3)) < 0.3
    returns, offset, discounts, done, complete = nstep_returns(
        rewards, terminated, np.zeros((6, 3), bool), np.ones((6, 3), bool), 0.9, 1)
    np.testing.assert_array_equal(returns, rewards)
    assert (offset == 1).all() and complete.all()
    np.testing.assert_allclose(discounts, 0.9)
    np.testing.assert_array_equal(done, terminated)


def test_one_step_shortcut_equals_the_general_lookahead_bit_for_bit():
    """n = 1 skips the lookahead loop: the same arrays, dtypes and bits as the loop gives at n = 1,
    with terminations, truncations and autoreset steps."""
    rewards, terminated, truncated, valid = synthetic(50, 3, np.random.default_rng(7))
    fast = nstep_returns(rewards, terminated, truncated, valid, 0.97, 1)
    general = _summed_returns(rewards, terminated, truncated, valid, 0.97, 1)
    assert (~valid).any() and terminated.any() and truncated.any()
    for name, a, b in zip(("returns", "next_offset", "discounts", "done", "complete"), fast, general, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def reference(rewards, terminated, truncated, valid, gamma, n):
    """One env, one step at a time: the definition."""
    steps = len(rewards)
    out = []
    for t in range(steps):
        if not valid[t]:
            out.append((0.0, 0, False, True))
            continue
        total, k, done, complete = 0.0, 0, False, True
        while k < n:
            if t + k >= steps:
                complete = False
                break
            if k > 0 and not valid[t + k]:
                break
            total += gamma ** k * rewards[t + k]
            done = bool(terminated[t + k])
            k += 1
            if terminated[t + k - 1] or truncated[t + k - 1]:
                break
        out.append((total, k, done, complete))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_vectorised_matches_the_definition(n):
    rewards, terminated, truncated, valid = synthetic(40, 4, np.random.default_rng(n))
    returns, offset, _, done, complete = nstep_returns(rewards, terminated, truncated, valid, 0.9, n)
    for env in range(4):
        expected = reference(rewards[:, env], terminated[:, env], truncated[:, env], valid[:, env], 0.9, n)
        for t, (total, k, is_done, is_complete) in enumerate(expected):
            assert complete[t, env] == is_complete
            if is_complete:
                assert (offset[t, env], done[t, env]) == (k, is_done)
                assert returns[t, env] == pytest.approx(total, rel=1e-5, abs=1e-6)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="terminated"):
        nstep_returns(np.zeros((3, 2)), np.zeros((3, 1), bool), np.zeros((3, 2), bool), np.ones((3, 2), bool), 0.9, 2)
    with pytest.raises(ValueError, match="n must be"):
        nstep_returns(np.zeros((3, 2)), *(np.zeros((3, 2), bool),) * 3, 0.9, 0)


# ---------------------------------------------------------------------- carry-over in the memory
def synthetic(steps: int, envs: int, rng: np.random.Generator):
    """rewards/terminated/truncated/valid of a next-step-autoreset stream: valid = not prev_done."""
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    end = rng.random((steps, envs))
    terminated, truncated = end < 0.12, (end >= 0.12) & (end < 0.2)
    valid = np.ones((steps, envs), bool)
    valid[1:] = ~(terminated[:-1] | truncated[:-1])
    terminated &= valid  # the autoreset step itself ends nothing
    truncated &= valid
    return rewards, terminated, truncated, valid


def stream(steps: int, envs: int, seed: int) -> dict[str, np.ndarray]:
    """A whole rollout whose observation is a unique id (row * envs + env)."""
    rewards, terminated, truncated, valid = synthetic(steps, envs, np.random.default_rng(seed))
    obs = np.arange((steps + 1) * envs, dtype=np.float32).reshape(steps + 1, envs, 1)
    actions = np.random.default_rng(seed + 1).integers(0, 2, (steps, envs))
    return dict(obs=obs, actions=actions, rewards=rewards, terminated=terminated, truncated=truncated, valid=valid)


def pieces(data: dict[str, np.ndarray], bounds: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut a rollout at ``bounds`` (consecutive rollouts of one CWorker: obs overlap by one row)."""
    edges = [0, *bounds, len(data["rewards"])]
    return [{key: value[a:b + (key == "obs")] for key, value in data.items()} for a, b in itertools.pairwise(edges)]


def memory(n: int, gamma: float = 0.9) -> ReplayMemory:
    return ReplayConfig(n_step=n, gamma=gamma, memory_size=1000).build(OBS_SPACE, ACT_SPACE, 2)


def by_obs(m: ReplayMemory) -> dict[float, tuple]:
    """Stored transitions keyed by the id of their observation."""
    a = m.arrays
    rows = zip(a["obs"][:, 0], a["actions"], a["rewards"], a["next_obs"][:, 0], a["terminated"], a["discounts"],
               strict=True)
    table = {float(o): (int(act), float(r), float(nxt), bool(term), float(d)) for o, act, r, nxt, term, d in rows}
    assert len(table) == len(m), "a transition was stored twice"
    return table


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("bounds", [[7], [3, 4, 5, 11], list(range(1, 24))])
def test_carry_over_equals_the_concatenated_rollout(n, bounds):
    data = stream(24, 2, seed=n)
    whole, split = memory(n), memory(n)
    whole.add_data(data, "w0")
    for piece in pieces(data, bounds):
        split.add_data(piece, "w0")
    assert by_obs(split) == by_obs(whole)
    # every valid step is stored exactly once, except the ones whose lookahead is still open
    _, _, _, _, complete = nstep_returns(data["rewards"], data["terminated"], data["truncated"], data["valid"],
                                         0.9, n)
    assert len(split) == int((data["valid"] & complete).sum())
    assert split.before_gradients()["transitions_waiting"] == int((data["valid"] & ~complete).sum())


def test_carry_over_hand_computed_across_two_rollouts():
    # one env, gamma 0.5, n 3: rewards 1 2 | 3 4 5 ; termination at t=3, t=4 autoreset
    data = dict(obs=np.arange(6, dtype=np.float32).reshape(6, 1, 1), actions=np.zeros((5, 1), np.int64),
                rewards=column(1, 2, 3, 4, 5).astype(np.float32), terminated=column(0, 0, 0, 1, 0).astype(bool),
                truncated=column(0, 0, 0, 0, 0).astype(bool), valid=column(1, 1, 1, 1, 0).astype(bool))
    m = ReplayConfig(n_step=3, gamma=0.5, memory_size=10).build(OBS_SPACE, ACT_SPACE, 1)
    first, second = pieces(data, [2])
    m.add_data(first, "w0")
    assert len(m) == 0  # both steps wait for rewards of the next rollout
    m.add_data(second, "w0")
    assert by_obs(m) == {0.0: (0, 1 + 1 + 0.75, 3.0, False, 0.125),  # 1 + .5*2 + .25*3, bootstraps at obs 3
                         1.0: (0, 2 + 1.5 + 1, 4.0, True, 0.125),  # 2 + .5*3 + .25*4, terminated at t=3
                         2.0: (0, 3 + 2, 4.0, True, 0.25),
                         3.0: (0, 4, 4.0, True, 0.5)}


def test_sources_are_separate_streams_in_any_order():
    a, b = stream(10, 2, seed=1), stream(10, 2, seed=2)
    b["obs"] += 1000  # distinct ids
    mixed, alone = memory(3), memory(3)
    pa, pb = pieces(a, [4]), pieces(b, [6])
    for source, piece in (("b", pb[0]), ("a", pa[0]), ("a", pa[1]), ("b", pb[1])):
        mixed.add_data(piece, source)
    alone.add_data(a, "a")
    alone.add_data(b, "b")
    assert by_obs(mixed) == by_obs(alone)


def test_a_broken_stream_cuts_the_waiting_steps_like_a_time_limit():
    m = ReplayConfig(n_step=3, gamma=0.5, memory_size=10).build(OBS_SPACE, ACT_SPACE, 1)
    zeros = column(0, 0).astype(bool)
    m.add_data(dict(obs=np.arange(3, dtype=np.float32).reshape(3, 1, 1), actions=np.zeros((2, 1), np.int64),
                    rewards=column(1, 2).astype(np.float32), terminated=zeros, truncated=zeros,
                    valid=~zeros), "w0")
    # the CWorker restarted: its next rollout starts from a fresh observation (99), not obs 2
    m.add_data(dict(obs=np.array([99, 100], np.float32).reshape(2, 1, 1), actions=np.zeros((1, 1), np.int64),
                    rewards=column(7).astype(np.float32), terminated=column(0).astype(bool),
                    truncated=column(0).astype(bool), valid=column(1).astype(bool)), "w0")
    table = by_obs(m)
    assert table[0.0] == (0, 1 + 0.5 * 2, 2.0, False, 0.25)  # bootstraps from obs 2, never from 99
    assert table[1.0] == (0, 2, 2.0, False, 0.5)
    assert 99.0 not in table  # its own lookahead is still open
