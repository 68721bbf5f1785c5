"""Hindsight experience replay in the replay memory (storage/her.py): goals from the same episode and
later steps only (across rollouts, never across episodes, sub-envs, sources or a broken stream),
the final strategy, recomputed rewards and terminations, the relabel ratio, ring wrap-around,
checkpoints, redistribution, PER and crc_debug with HER, config errors.

Synthetic rollouts number every observation: ``observation = achieved_goal = id`` (unique), while
``desired_goal`` is 99, which no state reaches, so a row was relabelled iff its goal is not 99 and
transition ``id -> id + 1`` is identified by its observation alone.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import GradientResult, ReplayPlan
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.goal import BIT_FLIP
from colonyrl.storage.her import HERConfig
from colonyrl.storage.replay import ReplayConfig, ReplayMemory

BOX = gym.spaces.Box(-1e3, 1e3, (1,), np.float32)
GOAL_SPACE = gym.spaces.Dict({"observation": BOX, "achieved_goal": BOX, "desired_goal": BOX})
ACTIONS = gym.spaces.Discrete(2)
UNREACHED = 99.0


def memory(envs: int = 2, memory_size: int = 100, **her) -> ReplayMemory:
    config = ReplayConfig(num_steps=3, memory_size=memory_size, her=HERConfig(**her))
    return config.build(GOAL_SPACE, ACTIONS, envs)


def piece(ids: list[list[float]], ends: dict[tuple[int, int], str] | None = None,
          invalid: tuple[tuple[int, int], ...] = ()) -> dict:
    """A rollout whose obs ``[T+1, N]`` are ``ids`` (one list per sub-env); ``ends[(t, e)]`` is
    "term" or "trunc"; the row after an end is the autoreset row (valid False), as are ``invalid``."""
    obs = np.array(ids, np.float32).T[..., None]  # [T+1, N, 1]
    steps, envs = obs.shape[0] - 1, obs.shape[1]
    terminated, truncated = np.zeros((steps, envs), bool), np.zeros((steps, envs), bool)
    for (t, e), kind in (ends or {}).items():
        (terminated if kind == "term" else truncated)[t, e] = True
    valid = np.ones((steps, envs), bool)
    valid[1:] = ~(terminated | truncated)[:-1]
    for t, e in invalid:
        valid[t, e] = False
    return {"obs": {"observation": obs, "achieved_goal": obs.copy(), "desired_goal": np.full_like(obs, UNREACHED)},
            "actions": np.zeros((steps, envs), np.int64), "rewards": np.full((steps, envs), -1.0, np.float32),
            "terminated": terminated, "truncated": truncated, "valid": valid}


def fill(mem: ReplayMemory) -> None:
    """Two sources, two sub-envs each; source w0's episodes run across its two rollouts (with w1's
    in between). Episodes (obs ids): a = 0,1,(2) truncated, then the autoreset row; b = 3..6 (reset
    obs 3, still running); c = 10..15 terminated at 15, across both rollouts; d = 100..103 and
    e = 110..113 (w1, running)."""
    mem.add_data(piece([[0, 1, 2, 3], [10, 11, 12, 13]], {(1, 0): "trunc"}), "w0")
    mem.add_data(piece([[100, 101, 102, 103], [110, 111, 112, 113]]), "w1")
    mem.add_data(piece([[3, 4, 5, 6], [13, 14, 15, 16]], {(1, 1): "term"}), "w0")


def later(first: int, last: int) -> dict[int, set[float]]:
    """Episode ``first..last`` (obs ids): transition i -> i + 1 may take the goals i + 1 .. last."""
    return {i: set(np.arange(i + 1, last + 1, dtype=np.float32).tolist()) for i in range(first, last)}


FUTURE = {**later(0, 2), **later(3, 6), **later(10, 15), **later(100, 103), **later(110, 113)}
FINAL = {i: max(goals) for i, goals in FUTURE.items()}


def draws(mem: ReplayMemory, batches: int = 40, size: int = 100, seed: int = 0) -> list[tuple[float, float, ...]]:
    """(obs id, obs goal, next_obs goal, reward, terminated) of every sampled row."""
    generator, rows = torch.Generator().manual_seed(seed), []
    for _ in range(batches):
        b = mem.sample(size, generator)
        rows += zip(b.obs["observation"][:, 0].tolist(), b.obs["desired_goal"][:, 0].tolist(),
                    b.next_obs["desired_goal"][:, 0].tolist(), b.rewards.tolist(), b.terminated.tolist(), strict=True)
    return rows


def test_future_goals_come_from_later_steps_of_the_same_episode_only() -> None:
    mem = memory(strategy="future", k=4)
    fill(mem)
    assert len(mem) == 16 and set(mem.arrays["obs/observation"][:, 0].tolist()) == set(FUTURE)
    seen: dict[int, set[float]] = {i: set() for i in FUTURE}
    for obs_id, goal, next_goal, _, _ in draws(mem):
        assert goal == next_goal  # obs and next_obs carry the same goal
        if goal != UNREACHED:
            assert goal in FUTURE[int(obs_id)], (obs_id, goal)
            seen[int(obs_id)].add(goal)
    assert seen == FUTURE  # every later step of the episode is drawn, nothing else


def test_goals_stored_after_a_sample_are_drawn_by_the_next_one() -> None:
    mem = memory(strategy="final", k=4)
    mem.add_data(piece([[10, 11, 12], [20, 21, 22]]), "w0")
    assert {g for i, g, *_ in draws(mem, batches=2) if i == 10 and g != UNREACHED} == {12.0}
    mem.add_data(piece([[12, 13, 14], [22, 23, 24]]), "w0")  # the episodes go on
    assert {g for i, g, *_ in draws(mem, batches=2) if i == 10 and g != UNREACHED} == {14.0}


def test_final_strategy_takes_the_last_stored_step_of_the_episode() -> None:
    mem = memory(strategy="final", k=4)
    fill(mem)
    relabelled = [(obs_id, goal) for obs_id, goal, *_ in draws(mem, batches=10) if goal != UNREACHED]
    assert relabelled and all(goal == FINAL[int(obs_id)] for obs_id, goal in relabelled)


def test_a_rollout_that_does_not_continue_its_stream_starts_a_new_episode() -> None:
    mem = memory(k=4)
    mem.add_data(piece([[0, 1, 2], [10, 11, 12]]), "w0")
    # a restarted CWorker: env 0 starts from 50, not from 2 (no episode end was sent); env 1 goes on
    mem.add_data(piece([[50, 51, 52], [12, 13, 14]]), "w0")
    expected = {**later(0, 2), **later(50, 52), **later(10, 14)}
    for obs_id, goal, *_ in draws(mem, batches=10):
        assert goal == UNREACHED or goal in expected[int(obs_id)], (obs_id, goal)


@pytest.mark.parametrize("terminated_fn", ["colonyrl.envs.goal:compute_terminated", None])
def test_reward_and_termination_are_recomputed_for_relabelled_rows_only(terminated_fn: str | None) -> None:
    mem = memory(k=4, terminated_fn=terminated_fn)
    fill(mem)
    stored = {1: (-1.0, 0.0), 14: (-1.0, 1.0)}  # (reward, terminated) as sent: 14 -> 15 terminated
    relabelled = 0
    for obs_id, goal, _, reward, terminated in draws(mem, batches=10):
        if goal == UNREACHED:
            assert (reward, terminated) == stored.get(int(obs_id), (-1.0, 0.0))
            continue
        relabelled += 1
        reached = goal == obs_id + 1  # the goal this transition itself achieves
        assert reward == (0.0 if reached else -1.0)
        assert terminated == (float(reached) if terminated_fn is not None else 0.0)
    assert relabelled > 0


@pytest.mark.parametrize(("size", "k", "expected"), [(100, 4, 80), (10, 4, 8), (7, 1, 3), (1, 4, 0), (9, 2, 6)])
def test_relabel_ratio_is_k_over_k_plus_one_of_every_batch(size: int, k: int, expected: int) -> None:
    mem = memory(k=k)
    fill(mem)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        goals = mem.sample(size, generator).obs["desired_goal"][:, 0]
        assert int((goals != UNREACHED).sum()) == expected


def test_ring_wrap_drops_overwritten_steps_from_the_episodes() -> None:
    mem = memory(envs=1, memory_size=6, k=4)
    mem.add_data(piece([[0, 1, 2, 3, 4]]), "w0")
    mem.add_data(piece([[4, 5, 6, 7, 8]], {(1, 0): "trunc"}), "w0")  # episode 0..6 ends; 7 starts one
    mem.add_data(piece([[8, 9, 10, 11, 12]]), "w0")
    # 11 stored transitions, 6 slots: 5 -> 6 (the end of episode 0..6) and 7 .. 11 are left
    assert sorted(mem.arrays["obs/observation"][:, 0].tolist()) == [5, 7, 8, 9, 10, 11]
    expected = {5: {6.0}, **later(7, 12)}
    seen: dict[int, set[float]] = {i: set() for i in expected}
    for obs_id, goal, *_ in draws(mem, batches=20):
        if goal != UNREACHED:
            assert goal in expected[int(obs_id)], (obs_id, goal)
            seen[int(obs_id)].add(goal)
    assert seen == expected


def test_state_dict_round_trip_continues_the_episodes() -> None:
    mem = memory(k=4)
    mem.add_data(piece([[0, 1, 2, 3], [10, 11, 12, 13]], {(1, 0): "trunc"}), "w0")
    restored = memory(k=4)
    restored.load_state_dict(mem.state_dict())
    for m in (mem, restored):  # the next rollout continues episode c (10..) and starts b (3..)
        m.add_data(piece([[3, 4, 5, 6], [13, 14, 15, 16]], {(1, 1): "term"}), "w0")
    for name, array in mem.arrays.items():
        np.testing.assert_array_equal(restored.arrays[name], array, err_msg=name)
    assert draws(mem, batches=3, seed=5) == draws(restored, batches=3, seed=5)
    expected = {**later(0, 2), **later(3, 6), **later(10, 15)}
    assert all(g == UNREACHED or g in expected[int(i)] for i, g, *_ in draws(restored, batches=5))
    with pytest.raises(ValueError, match="her"):
        ReplayConfig(num_steps=3, memory_size=100).build(GOAL_SPACE, ACTIONS, 2).load_state_dict(mem.state_dict())


def test_redistributed_memories_keep_their_episodes_apart() -> None:
    first, second = memory(k=4), memory(k=4)
    first.add_data(piece([[0, 1, 2, 3], [10, 11, 12, 13]]), "w0")
    second.add_data(piece([[200, 201, 202, 203], [210, 211, 212, 213]]), "w0")  # the same episode ids 0 and 1
    (part,) = ReplayMemory.redistribute([first, second], 1)
    merged = memory(k=4)
    merged.seed(part)
    expected = {**later(0, 3), **later(10, 13), **later(200, 203), **later(210, 213)}
    assert all(g == UNREACHED or g in expected[int(i)] for i, g, *_ in draws(merged, batches=10))
    merged.add_data(piece([[300, 301], [310, 311]]), "w9")  # new episodes get fresh ids
    assert len(np.unique(merged.arrays["her_episode"])) == 6


def test_prioritized_and_crc_debug_memories_relabel_too() -> None:
    config = ReplayConfig(num_steps=3, memory_size=100, prioritized=True, crc_debug=True, her=HERConfig(k=1))
    cworker, gworker = (config.build(GOAL_SPACE, ACTIONS, 1) for _ in "ab")
    env_obs = {"observation": np.array([[0.0]], np.float32)}
    env_obs |= {"achieved_goal": env_obs["observation"], "desired_goal": np.array([[UNREACHED]], np.float32)}
    for _ in range(3):  # through the CWorker side, so that every transition has its CRC
        cworker.insert(env_obs, np.zeros(1, np.int64), np.full(1, -1.0, np.float32), np.zeros(1, bool),
                       np.zeros(1, bool), np.ones(1, bool))
        env_obs = {key: value + (1.0 if key != "desired_goal" else 0.0) for key, value in env_obs.items()}
    cworker.finish(env_obs)
    gworker.add_data(cworker.get_data(), "w0")
    plan = ReplayPlan(batch_size=4, learning_starts=1, updates_per_step=2.0)
    (batch, *_) = list(gworker.batches(plan, torch.Generator().manual_seed(0)))  # CRC checked on stored rows
    assert int((batch.obs["desired_goal"] != UNREACHED).sum()) == 2
    gworker.after_gradients(batch, GradientResult(None, {}, priorities=np.full(4, 3.0)))
    assert gworker.priorities.max() > 1.0


def test_episodes_follow_a_real_vector_env_with_next_step_autoreset() -> None:
    """The real bit-flip env through the CWorker side: the stored (episode, step) of every transition
    are the ones its env's flags give; the autoreset rows are not stored."""
    envs = EnvConfig(id=BIT_FLIP, num_envs=2, kwargs={"n_bits": 2})  # 2 bits: episodes of 1-2 steps
    venv, obs = envs.make(seed=0)
    config = ReplayConfig(num_steps=10, memory_size=100, her=HERConfig(k=4))
    cworker, gworker = (config.build(venv.single_observation_space, venv.single_action_space, 2) for _ in "ab")
    expected, episode, step, prev_done = [], [0, 1000], [0, 0], np.zeros(2, bool)
    for _ in range(10):
        actions = venv.action_space.sample()
        next_obs, reward, terminated, truncated, _ = venv.step(actions)
        cworker.insert(obs, actions, reward.astype(np.float32), terminated, truncated, ~prev_done)
        for e in range(2):  # stored in (t, env) order
            if not prev_done[e]:
                expected.append((episode[e], step[e]))
                step[e] += 1
            if terminated[e] or truncated[e]:
                episode[e], step[e] = episode[e] + 1, 0
        obs, prev_done = next_obs, terminated | truncated
    cworker.finish(obs)
    gworker.add_data(cworker.get_data(), "w0")
    venv.close()
    stored = list(zip(gworker.arrays["her_episode"].tolist(), gworker.arrays["her_step"].tolist(), strict=True))
    assert [s for _, s in stored] == [s for _, s in expected]
    assert episode[0] > 1 and episode[1] > 1001  # several episodes ended in each sub-env
    # one stored id per expected episode, and the other way round
    pairs = {(e, x) for (e, _), (x, _) in zip(expected, stored, strict=True)}
    assert len(pairs) == len({e for e, _ in expected}) == len({x for x, _ in stored})


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="HERConfig.strategy"):
        HERConfig(strategy="episode")
    with pytest.raises(ConfigError, match="HERConfig.k"):
        HERConfig(k=0)
    with pytest.raises(ConfigError, match="HERConfig.reward_fn"):
        HERConfig(reward_fn="not a path")
    with pytest.raises(ConfigError, match="HERConfig.desired_goal_key"):
        HERConfig(desired_goal_key="achieved_goal")
    with pytest.raises(ConfigError, match="ReplayConfig.n_step.*1 when her is set"):
        ReplayConfig(n_step=3, her=HERConfig())
    with pytest.raises(ConfigError, match="ReplayConfig.her"):  # not a goal Dict
        ReplayConfig(her=HERConfig()).check_spaces(BOX, ACTIONS)
    with pytest.raises(ConfigError, match="ReplayConfig.her"):
        ReplayConfig(her=HERConfig(achieved_goal_key="reached")).build(GOAL_SPACE, ACTIONS, 1)
    with pytest.raises(ConfigError, match="HERConfig.reward_fn"):
        ReplayConfig(her=HERConfig(reward_fn="colonyrl.envs.goal:no_such_function")).build(GOAL_SPACE, ACTIONS, 1)
    ReplayConfig(her=HERConfig(), prioritized=True).check_spaces(GOAL_SPACE, ACTIONS)  # PER is supported
