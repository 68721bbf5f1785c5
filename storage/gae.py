"""Generalized Advantage Estimation for gymnasium 1.x next-step autoreset rollouts.

Model: TorchRL ``torchrl/objectives/value/functional.py::generalized_advantage_estimate`` (a pure
function with a shape contract, termination kept apart from truncation); the loop is as short as
CleanRL's ``ppo.py`` GAE. Paper: Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", https://arxiv.org/abs/1506.02438 (eq. 16).

Layout (``storage/layout.py``), gymnasium's default NEXT_STEP autoreset
(https://gymnasium.farama.org/main/api/vector/autoreset/):

* The step that ends an episode returns the *real* final observation, so ``values[t + 1]`` is
  V(final obs). On truncation (a time limit is not a terminal state,
  https://gymnasium.farama.org/tutorials/gymnasium_basics/handling_time_limits/) we bootstrap from it;
  on termination we do not.
* The following step of that sub-env is the reset step: the action is ignored, the reward is 0 and
  its "transition" final obs -> reset obs is not real. The CWorker marks it ``valid=False``; it gets
  advantage 0 and return ``values[t]`` and is dropped before training.
"""

from __future__ import annotations

import numpy as np

__all__ = ["generalized_advantage_estimate"]


def generalized_advantage_estimate(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(gamma, lambda) advantages and returns, vectorised over envs, backwards over time.

    Args:
        rewards: ``[T, N]`` float, reward of transition t.
        values: ``[T+1, N]`` float, ``V(obs_t)``; row T is V of the observation after the last step.
        terminated: ``[T, N]`` bool, transition t ended its episode in a true terminal state.
        truncated: ``[T, N]`` bool, transition t ended its episode by a time limit.
        valid: ``[T, N]`` bool, False for the autoreset step that follows an episode end.
        gamma: discount factor.
        lam: GAE lambda (0: one-step TD error, 1: Monte-Carlo return minus value).

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` float32; ``returns = advantages + values[:T]``.
        Invalid steps have advantage 0 and return ``values[t]``.

    Inputs are only read (read-only views from Ray's object store are fine).
    """
    _check_shapes(rewards, values, terminated, truncated, valid)
    gamma, lam = float(gamma), float(lam)  # Python floats keep float32 arrays float32 (NEP 50)
    values = np.asarray(values, dtype=np.float32)
    # delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t): truncation still bootstraps,
    # because values[t+1] is V of the real final obs under next-step autoreset.
    not_terminal = 1.0 - np.asarray(terminated, dtype=np.float32)
    deltas = np.asarray(rewards, dtype=np.float32) + gamma * not_terminal * values[1:] - values[:-1]
    deltas = np.where(valid, deltas, np.float32(0.0))  # where, not *: an invalid row may hold inf/NaN
    # c_t = (1 - done_t) * valid_t: the lambda-chain is cut at every episode end (terminated or
    # truncated) and at an invalid step. An invalid step thus has A_t = 0 (its delta is zeroed above),
    # which also cuts the chain *into* it: nothing from an autoreset step or the next episode leaks
    # backwards, even if the step before it was (wrongly) not marked as an episode end.
    not_done = 1.0 - np.asarray(np.logical_or(terminated, truncated), dtype=np.float32)
    discounts = (gamma * lam) * not_done * np.asarray(valid, dtype=np.float32)

    advantages = np.empty_like(deltas)
    last = np.zeros(deltas.shape[1], dtype=np.float32)
    for t in reversed(range(deltas.shape[0])):
        last = advantages[t] = deltas[t] + discounts[t] * last  # A_t = delta_t + gamma*lam*c_t*A_{t+1}
    return advantages, advantages + values[:-1]


def _check_shapes(rewards: np.ndarray, values: np.ndarray, *masks: np.ndarray) -> None:
    """Raise ``ValueError`` unless rewards/masks are ``[T, N]`` and values ``[T+1, N]``."""
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [T, N], got shape {rewards.shape}")
    steps, envs = rewards.shape
    if values.shape != (steps + 1, envs):
        raise ValueError(f"values must be [T+1, N] = {(steps + 1, envs)}, got {values.shape}")
    for name, mask in zip(("terminated", "truncated", "valid"), masks, strict=True):
        if mask.shape != (steps, envs):
            raise ValueError(f"{name} must be [T, N] = {(steps, envs)}, got {mask.shape}")
