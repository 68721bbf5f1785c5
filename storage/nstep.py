"""n-step returns for gymnasium 1.x next-step autoreset rollouts (the replay memory's targets).

Model: the n-step target of Sutton & Barto (2018), "Reinforcement Learning: An Introduction",
section 7.1, as used by Rainbow (Hessel et al. 2018, https://arxiv.org/abs/1710.02298) and by
PyTorchRL's ``agent/storages/off_policy/nstep_buffer.py``; termination kept apart from truncation,
as TorchRL does for its value functions.

    G_t = sum_{k < n'} gamma**k r_{t+k},   target_t = G_t + gamma**n' (1 - done_t) Q(obs_{t+n'})

where n' <= n stops early at the first episode end. gymnasium's default NEXT_STEP autoreset
(https://gymnasium.farama.org/main/api/vector/autoreset/) means:

* the step that ends an episode returns the *real* final observation, so ``obs[t + n']`` is it:
  on truncation (a time limit is not a terminal state,
  https://gymnasium.farama.org/tutorials/gymnasium_basics/handling_time_limits/) the target
  bootstraps from it, on termination it does not (``done = 1``);
* the following step is the autoreset step (``valid = False``): not a transition, never summed
  across and never stored.

A replay memory receives each stream (one CWorker's sub-env) in pieces, one rollout at a time.
The last ``n - 1`` rows of a piece may still wait for their lookahead: :func:`split_tail` keeps
them (with a ``needed`` mask of the rows not yet stored) and :func:`join_tail` prepends them to
the stream's next piece, so every transition is stored exactly once, with its full target.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from colonyrl.storage.layout import is_obs_key

__all__ = ["nstep_returns", "join_tail", "split_tail", "stream_breaks"]


def nstep_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray,
                  gamma: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n-step discounted returns of every step of a ``[T, N]`` piece of rollout.

    Args:
        rewards: ``[T, N]`` float, reward of transition t.
        terminated: ``[T, N]`` bool, transition t ended its episode in a true terminal state.
        truncated: ``[T, N]`` bool, transition t ended its episode by a time limit.
        valid: ``[T, N]`` bool, False for the autoreset step that follows an episode end.
        gamma: discount factor.
        n: lookahead, ``n >= 1``.

    Returns:
        ``(returns, next_offset, discounts, done, complete)``, all ``[T, N]``:

        * ``returns`` float32, ``sum_{k < n'} gamma**k * rewards[t + k]``;
        * ``next_offset`` int64, n': the target's next observation is ``obs[t + n']`` (the piece's
          ``obs`` has T+1 rows); n' < n when the episode ended at step ``t + n' - 1``, or when step
          ``t + n'`` is an autoreset step that no episode end announced (defensive, as in GAE: it
          then bootstraps from ``obs[t + n']``, the real final observation);
        * ``discounts`` float32, ``gamma**n'``;
        * ``done`` bool, a termination within the n' steps: do not bootstrap;
        * ``complete`` bool, False when the lookahead runs past row T-1 before n steps or an
          episode end: the step must wait for the next piece of the same stream (its values here
          are partial).

        Invalid steps have ``n' = 0``, return 0, ``complete = True``: they are not transitions.

    The loop runs over k < n (small), vectorised over the piece. Inputs are only read.
    """
    rewards = np.asarray(rewards)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [T, N], got shape {rewards.shape}")
    for name, mask in (("terminated", terminated), ("truncated", truncated), ("valid", valid)):
        if np.shape(mask) != rewards.shape:
            raise ValueError(f"{name} must be [T, N] = {rewards.shape}, got {np.shape(mask)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    terminated, valid = np.asarray(terminated, bool), np.asarray(valid, bool)
    if n == 1:  # the loop of _summed_returns at k = 0 alone, without its bookkeeping (SAC and TD3
        # store every env step through here): each valid step is a complete transition, next obs[t + 1]
        return (np.where(valid, rewards, 0.0).astype(np.float32), valid.astype(np.int64),
                np.where(valid, np.float32(gamma), np.float32(1.0)), valid & terminated, np.ones(rewards.shape, bool))
    return _summed_returns(rewards, terminated, np.asarray(truncated, bool), valid, gamma, n)


def _summed_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray,
                    gamma: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`nstep_returns` for any ``n``, on checked bool masks."""
    steps = rewards.shape[0]
    ended = terminated | truncated
    returns = np.zeros(rewards.shape, np.float64)  # summed in float64, handed out as float32
    offset = np.zeros(rewards.shape, np.int64)
    done = np.zeros(rewards.shape, bool)
    waiting = np.zeros(rewards.shape, bool)
    alive = valid.copy()  # still summing
    for k in range(n):
        # rows t whose step t + k lies past the piece: wait for the next one
        past = alive.copy()
        past[:max(steps - k, 0)] = False
        waiting |= past
        alive &= ~past
        rows = max(steps - k, 0)
        if rows == 0:
            break
        head = alive[:rows]  # view: updates below write through to ``alive``
        if k > 0:
            head &= valid[k:]  # never sum across an autoreset step
        returns[:rows] += np.where(head, gamma ** k * rewards[k:].astype(np.float64), 0.0)
        offset[:rows] += head
        done[:rows] |= head & terminated[k:]
        head &= ~ended[k:]
    # every other row stopped inside the piece: n steps summed, an episode end or an autoreset step
    complete = ~waiting
    discounts = np.power(float(gamma), offset).astype(np.float32)
    return returns.astype(np.float32), offset, discounts, done, complete


def split_tail(piece: Mapping[str, np.ndarray], waiting: np.ndarray, n: int) -> dict[str, np.ndarray] | None:
    """The last ``n - 1`` rows of ``piece`` (its observation, ``obs`` or each ``obs/<key>``, one more)
    with ``needed = waiting`` there, or None when no row waits. Rows that wait lie in those rows
    only: row t waits iff t + n - 1 > T - 1.
    Copies, so that the rest of the rollout is not kept alive."""
    rows = min(n - 1, len(waiting))
    if rows == 0 or not waiting[-rows:].any():
        return None
    tail = {key: np.array(array[-rows - int(is_obs_key(key)):]) for key, array in piece.items()}
    tail["needed"] = waiting[-rows:].copy()
    return tail


def join_tail(tail: Mapping[str, np.ndarray], piece: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                        np.ndarray]:
    """``(tail + piece, needed)``: the tail's last observation is the piece's first one (the CWorker
    continues from it), so ``obs`` is joined without it; ``needed`` is True for the piece's rows."""
    joined = {key: np.concatenate([tail[key][:-1] if is_obs_key(key) else tail[key], array])
              for key, array in piece.items()}
    return joined, np.concatenate([tail["needed"], np.ones(piece["valid"].shape, bool)])


def stream_breaks(last_obs: np.ndarray, first_obs: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the sub-envs whose next piece does not start where the tail ended (byte-wise,
    so NaNs compare equal to themselves), e.g. after a CWorker restarted its envs."""
    envs = first_obs.shape[0]
    last = np.ascontiguousarray(last_obs).reshape(envs, -1).view(np.uint8)
    return (last != np.ascontiguousarray(first_obs).reshape(envs, -1).view(np.uint8)).any(axis=1)
