"""Double-buffered sampling: a CWorker's sub-envs in two halves, one half stepping while the policy
acts for the other.

Sample Factory's double-buffered sampling (Petrenko et al. 2020, "Sample Factory: Egocentric 3D
Control from Pixels at 100000 FPS with Asynchronous Reinforcement Learning", section 3.1; its
``--worker_num_splits 2``, https://github.com/alex-petrenko/sample-factory): without it, a worker's
policy forward pass and its envs' step take turns, each leaving the other's core idle. Here each
half is a complete vector env of its own (the factory's, with its episode statistics and next-step
autoreset) whose ``step`` runs in a background thread. Steps that release the GIL (ale-py's C++
emulator, MuJoCo's ``mj_step``, an ``AsyncVectorEnv`` waiting on its workers) then overlap torch's
forward pass for the other half, which releases it too; a pure-Python env (CartPole) gains nothing.

To everyone but the CWorker's collect loop this is one vector env of ``n_0 + n_1`` sub-envs in
order (half 0 first): :meth:`SplitVectorEnv.step` steps both halves at once, ``reset`` hands each
half its share of the seeds, so per-sub-env seeds, observations and infos are those of the unsplit
env. The collect loop drives the halves one by one with :meth:`step_async` / :meth:`step_wait`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["SplitVectorEnv", "concat", "merge_infos", "take"]

Step = tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def concat(a: Any, b: Any) -> Any:
    """``a`` then ``b`` along the batch axis, key by key for a Dict observation."""
    if isinstance(a, dict):
        return {key: concat(a[key], b[key]) for key in a}
    return np.concatenate([a, b])


def take(x: Any, rows: slice) -> Any:
    """Rows ``rows`` of a batch, key by key for a Dict observation."""
    if isinstance(x, dict):
        return {key: take(value, rows) for key, value in x.items()}
    return x[rows]


def merge_infos(a: dict[str, Any], b: dict[str, Any], sizes: tuple[int, int]) -> dict[str, Any]:
    """Two halves' vector infos as the unsplit env's: every key's arrays concatenated, a key that
    only one half has filled with zeros (False for the ``_key`` masks, None for objects) for the
    other, as gymnasium's ``VectorEnv._add_info`` fills the sub-envs without it."""
    out: dict[str, Any] = {}
    for key in {**a, **b}:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) or isinstance(vb, dict):
            out[key] = merge_infos(va or {}, vb or {}, sizes)
            continue
        like = np.asarray(va if va is not None else vb)
        out[key] = np.concatenate([np.asarray(v) if v is not None else _filler(like, n)
                                   for v, n in zip((va, vb), sizes, strict=True)])
    return out


def _filler(like: np.ndarray, n: int) -> np.ndarray:
    if like.dtype == object:
        return np.full(n, None, dtype=object)
    return np.zeros((n, *like.shape[1:]), like.dtype)


class SplitVectorEnv(VectorEnv):
    """Two vector envs of the same spaces as one, each stepping in a thread of its own."""

    def __init__(self, halves: tuple[VectorEnv, VectorEnv]) -> None:
        self.halves = halves
        self.sizes = (halves[0].num_envs, halves[1].num_envs)
        self.num_envs = sum(self.sizes)
        self.rows = (slice(0, self.sizes[0]), slice(self.sizes[0], self.num_envs))
        self.single_observation_space = halves[0].single_observation_space
        self.single_action_space = halves[0].single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(halves[0].metadata)
        self.spec = halves[0].spec
        self.render_mode = halves[0].render_mode
        # one thread per half: a half sent its actions never waits behind the other's step
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="colonyrl-env-half")
        self._pending: list[Future[Step] | None] = [None, None]

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> Any:
        if any(p is not None for p in self._pending):
            raise RuntimeError("SplitVectorEnv.reset while a half is stepping: step_wait it first")
        # each sub-env the seed it has in the unsplit env: an int seeds sub-env i with seed + i
        seeds: list[Any] = [None, None]
        if isinstance(seed, int):
            seeds = [seed, seed + self.sizes[0]]
        elif seed is not None:
            seeds = [list(seed[rows]) for rows in self.rows]
        options_per_half: list[dict[str, Any] | None] = [options, options]
        if options is not None and "reset_mask" in options:  # gymnasium's partial reset: a mask over all sub-envs
            mask = np.asarray(options["reset_mask"])
            options_per_half = [{**options, "reset_mask": mask[rows]} for rows in self.rows]
        (obs0, info0), (obs1, info1) = (half.reset(seed=s, options=o) for half, s, o
                                        in zip(self.halves, seeds, options_per_half, strict=True))
        return concat(obs0, obs1), merge_infos(info0, info1, self.sizes)

    def step_async(self, half: int, actions: Any) -> None:
        """Start half ``half``'s step with its ``actions`` (its rows of a batch) in its thread."""
        if self._pending[half] is not None:
            raise RuntimeError(f"SplitVectorEnv: half {half} is stepping already")
        self._pending[half] = self._threads.submit(self.halves[half].step, actions)

    def step_wait(self, half: int) -> Step:
        """Half ``half``'s step result (waits for it; its exception, if it raised)."""
        pending = self._pending[half]
        if pending is None:
            raise RuntimeError(f"SplitVectorEnv: half {half} was not sent actions")
        self._pending[half] = None
        return pending.result()

    def step(self, actions: Any) -> Step:
        for half, rows in enumerate(self.rows):
            self.step_async(half, take(actions, rows))
        (o0, r0, te0, tr0, i0), (o1, r1, te1, tr1, i1) = self.step_wait(0), self.step_wait(1)
        info = merge_infos(i0, i1, self.sizes)
        if "env_id" in info:  # ale-py numbers the sub-envs of its vector env: half 1's are the unsplit env's n_0 + i
            info["env_id"][self.sizes[0]:] += self.sizes[0]
        return concat(o0, o1), concat(r0, r1), concat(te0, te1), concat(tr0, tr1), info

    def close_extras(self, **kwargs: Any) -> None:
        self._threads.shutdown(wait=True)  # a step still running finishes before its env closes
        self._pending = [None, None]
        for env in self.halves:
            env.close(**kwargs)
