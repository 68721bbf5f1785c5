"""The bit-flipping goal env (envs/goal.py): gymnasium's checker, the GoalEnv reward and termination."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.goal import BIT_FLIP, BIT_FLIP_ID, BitFlipEnv, compute_reward, compute_terminated


@pytest.mark.parametrize("kwargs", [{"n_bits": 1}, {"n_bits": 5}, {"n_bits": 8, "max_steps": 3}])
def test_bit_flip_env_passes_gymnasium_env_checker(kwargs: dict) -> None:
    env = gymnasium.make(BIT_FLIP, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.spec.id == BIT_FLIP_ID


def test_flipping_the_differing_bits_reaches_the_goal_with_reward_zero_and_terminates() -> None:
    env = BitFlipEnv(n_bits=6)
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    assert not np.array_equal(obs["achieved_goal"], obs["desired_goal"])  # never solved at reset
    differing = np.flatnonzero(obs["achieved_goal"] != obs["desired_goal"])
    for i, bit in enumerate(differing):
        obs, reward, terminated, truncated, info = env.step(int(bit))
        last = i == len(differing) - 1
        assert (reward, terminated, truncated, info["is_success"]) == ((0.0, True, False, True) if last
                                                                        else (-1.0, False, False, False))
        np.testing.assert_array_equal(obs["observation"], obs["achieved_goal"])
    np.testing.assert_array_equal(obs["achieved_goal"], obs["desired_goal"])


def test_episode_is_truncated_after_max_steps_with_reward_minus_one() -> None:
    env = BitFlipEnv(n_bits=4)
    obs, _ = env.reset(seed=0)
    matching = np.flatnonzero(obs["achieved_goal"] == obs["desired_goal"])
    # flipping one bit back and forth never reaches the goal: a bit that matches moves away from
    # it, and with all 4 bits differing one flip leaves 3 differing
    bit = int(matching[0]) if len(matching) else 0
    flags = [env.step(bit)[1:4] for _ in range(4)]
    assert flags == [(-1.0, False, False)] * 3 + [(-1.0, False, True)]
    env = BitFlipEnv(n_bits=10, max_steps=2)
    env.reset(seed=1)
    assert [env.step(0)[3] for _ in range(2)] == [False, True]


def test_compute_reward_and_terminated_are_vectorised_over_goals() -> None:
    achieved = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 0]], np.float32)
    desired = np.array([[0, 1, 1], [1, 0, 1], [1, 0, 0]], np.float32)
    np.testing.assert_array_equal(compute_reward(achieved, desired, {}), np.array([0.0, -1.0, -1.0], np.float32))
    np.testing.assert_array_equal(compute_terminated(achieved, desired, {}), [True, False, False])
    assert compute_reward(achieved, desired, {}).dtype == np.float32
    env = BitFlipEnv(n_bits=3)
    np.testing.assert_array_equal(env.compute_reward(achieved, desired, {}), compute_reward(achieved, desired))
    assert float(compute_reward(achieved[0], desired[0])) == 0.0  # one goal pair: a scalar


def test_env_config_builds_the_bit_flip_env_with_its_kwargs() -> None:
    cfg = EnvConfig(id=BIT_FLIP, num_envs=3, kwargs={"n_bits": 5})
    observation, action = cfg.spaces()
    assert isinstance(observation, gymnasium.spaces.Dict) and action == gymnasium.spaces.Discrete(5)
    assert observation["desired_goal"].shape == (5,)
    env, obs = cfg.make(seed=0)
    try:
        assert obs["desired_goal"].shape == (3, 5)
    finally:
        env.close()
    assert EnvConfig(id=BIT_FLIP_ID).id == BIT_FLIP_ID  # registered once the module is imported


@pytest.mark.parametrize("kwargs", [{"n_bits": 0}, {"n_bits": 2.5}, {"n_bits": 4, "max_steps": 0}])
def test_bad_sizes_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="n_bits|max_steps"):
        BitFlipEnv(**kwargs)
