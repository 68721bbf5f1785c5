"""Observation wrappers colonyrl ships, and the gymnasium ids registered with them.

* :class:`RemoveVelocity` drops the velocity entries of a classic-control observation, which turns
  the task into a partially observed one that only a policy with memory solves (the RL Zoo's
  ``rl_zoo3/wrappers.py::MaskVelocityWrapper`` zeroes the same entries instead; SB3-contrib
  benchmarks RecurrentPPO on it as ``CartPoleNoVel-v1``).
* ``colonyrl/CartPoleNoVel-v1``: CartPole-v1 observing cart position and pole angle only (indices
  0 and 2 of [x, x_dot, theta, theta_dot]), with CartPole-v1's 500-step limit and threshold.

The ids are registered when this module is imported; envs/factory.py imports it, so every
process that builds an env (a CWorker, a Ray worker, an evaluation) knows them.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

__all__ = ["RemoveVelocity", "VELOCITY_INDICES", "cartpole_no_velocity", "CARTPOLE_NO_VELOCITY"]

#: The velocity entries of classic-control observations, by env id.
VELOCITY_INDICES: dict[str, tuple[int, ...]] = {"CartPole-v1": (1, 3)}
CARTPOLE_NO_VELOCITY = "colonyrl/CartPoleNoVel-v1"


class RemoveVelocity(gymnasium.ObservationWrapper):
    """Remove the entries ``indices`` of a flat Box observation (default: the env's velocities,
    :data:`VELOCITY_INDICES`); the observation space keeps the bounds of the other entries."""

    def __init__(self, env: gymnasium.Env, indices: tuple[int, ...] | None = None) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"RemoveVelocity needs a flat Box observation space, got {space}")
        if indices is None:
            spec_id = env.spec.id if env.spec is not None else None
            if spec_id not in VELOCITY_INDICES:
                raise ValueError(f"no known velocity entries for {spec_id!r}: pass indices "
                                 f"(known: {sorted(VELOCITY_INDICES)})")
            indices = VELOCITY_INDICES[spec_id]
        # a numeric array, not a tuple: envs/snapshot.py saves it (constant) and resume stays exact
        self.keep = np.setdiff1d(np.arange(space.shape[0]), np.asarray(indices, dtype=np.int64))
        self.observation_space = gymnasium.spaces.Box(space.low[self.keep], space.high[self.keep],
                                                      dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def cartpole_no_velocity(**kwargs: Any) -> gymnasium.Env:
    """CartPole without its velocities (the entry point of ``colonyrl/CartPoleNoVel-v1``)."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    return RemoveVelocity(CartPoleEnv(**kwargs), VELOCITY_INDICES["CartPole-v1"])


if CARTPOLE_NO_VELOCITY not in gymnasium.envs.registry:
    gymnasium.register(CARTPOLE_NO_VELOCITY, entry_point="colonyrl.envs.wrappers:cartpole_no_velocity",
                       max_episode_steps=500, reward_threshold=475.0)
