"""Goal-reaching envs with Dict observations, for hindsight experience replay (storage/her.py).

:class:`BitFlipEnv` is the bit-flipping env of Andrychowicz et al. 2017, "Hindsight Experience
Replay", https://arxiv.org/abs/1707.01495, section 3.1 and 4.1 (the same task as SB3's
``stable_baselines3/common/envs/bit_flipping_env.py``): the state is ``n`` bits, action ``i`` flips
bit ``i``, the goal is another ``n``-bit vector and the reward is ``-[s != g]``, so that a random
policy almost never sees anything but -1 once ``n`` is more than a few bits.

It follows gymnasium-robotics' ``GoalEnv`` convention
(https://robotics.farama.org/content/multi-goal_api/): the observation is a Dict of
``"observation"``, ``"achieved_goal"`` and ``"desired_goal"``, and the env offers vectorised
``compute_reward(achieved_goal, desired_goal, info)`` and ``compute_terminated(...)``, so that a
replay memory can recompute both for substituted goals. The module-level :func:`compute_reward`
and :func:`compute_terminated` are the same functions, importable by path
(``"colonyrl.envs.goal:compute_reward"``), which is how ``HERConfig`` names them.

Episodes end with ``terminated`` when the state equals the goal (reward 0 on that step) and with
``truncated`` after ``max_steps`` steps (default ``n_bits``, the paper's episode length).

The id ``colonyrl/BitFlip-v0`` is registered when this module is imported; :data:`BIT_FLIP`
(``"colonyrl.envs.goal:colonyrl/BitFlip-v0"``) makes ``gymnasium.make`` import it first, so that
id works in any process (gymnasium's ``"module:env_id"`` rule), e.g.
``EnvConfig(id=BIT_FLIP, kwargs={"n_bits": 8})``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

__all__ = ["BitFlipEnv", "compute_reward", "compute_terminated", "BIT_FLIP_ID", "BIT_FLIP"]

BIT_FLIP_ID = "colonyrl/BitFlip-v0"
BIT_FLIP = f"{__name__}:{BIT_FLIP_ID}"


def compute_terminated(achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None) -> np.ndarray:
    """``achieved == desired`` over the last axis: ``[...]`` bool for goals ``[..., n]``."""
    del info  # the bit-flip task needs nothing but the goals
    return np.all(np.asarray(achieved_goal) == np.asarray(desired_goal), axis=-1)


def compute_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None) -> np.ndarray:
    """The paper's ``-[s != g]``: 0.0 where the goal is achieved, else -1.0 (float32, ``[...]``)."""
    return compute_terminated(achieved_goal, desired_goal, info).astype(np.float32) - np.float32(1.0)


class BitFlipEnv(gymnasium.Env[dict[str, np.ndarray], np.int64]):
    """``n_bits`` bits; ``Discrete(n_bits)`` actions flip one bit each; goal-conditioned Dict obs.

    Observations are float32 0/1 vectors (``Box(0, 1, (n_bits,))`` each key); ``observation`` and
    ``achieved_goal`` are both the current bits (GoalEnv keeps the two apart for tasks whose goal
    is a part of the state). The initial bits and the goal are uniform and always differ.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_bits: int = 8, max_steps: int | None = None) -> None:
        if not isinstance(n_bits, int) or isinstance(n_bits, bool) or n_bits < 1:
            raise ValueError(f"n_bits must be an integer >= 1, got {n_bits!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1):
            raise ValueError(f"max_steps must be None or an integer >= 1, got {max_steps!r}")
        self.n_bits = n_bits
        self.max_steps = n_bits if max_steps is None else max_steps
        bits = gymnasium.spaces.Box(0.0, 1.0, (n_bits,), np.float32)
        self.observation_space = gymnasium.spaces.Dict(
            {"observation": bits, "achieved_goal": bits, "desired_goal": bits})
        self.action_space = gymnasium.spaces.Discrete(n_bits)
        self._state = np.zeros(n_bits, np.float32)
        self._goal = np.ones(n_bits, np.float32)
        self._steps = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self._state.copy(), "achieved_goal": self._state.copy(),
                "desired_goal": self._goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._state = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        self._goal = self._state
        while np.array_equal(self._goal, self._state):  # a goal already reached is no task
            self._goal = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        self._steps = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self._state = self._state.copy()
        self._state[int(action)] = 1.0 - self._state[int(action)]
        self._steps += 1
        obs = self._obs()
        info = {"is_success": bool(compute_terminated(obs["achieved_goal"], obs["desired_goal"]))}
        reward = float(compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
        terminated = info["is_success"]
        return obs, reward, terminated, self._steps >= self.max_steps and not terminated, info

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """GoalEnv's vectorised reward (:func:`compute_reward`)."""
        return compute_reward(achieved_goal, desired_goal, info)

    def compute_terminated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """GoalEnv's vectorised termination (:func:`compute_terminated`)."""
        return compute_terminated(achieved_goal, desired_goal, info)


if BIT_FLIP_ID not in gymnasium.envs.registry:
    gymnasium.register(BIT_FLIP_ID, entry_point=f"{__name__}:BitFlipEnv")
