"""Gymnasium vector-env factory: one picklable :class:`EnvConfig` builds the env of every CWorker.

Contract (DESIGN.md, "Env factory"): the gymnasium 1.x vector API with **next-step autoreset**.
The step whose ``terminated | truncated`` is true returns the real final observation; on the
following step that sub-env is reset, its reward is 0, both flags are False and the action is
ignored. The rollout storage marks that transition ``valid=False`` (scheme/packets.py).

Usage in a CWorker::

    env, obs = cfg.make(seed=run_seed, worker_index=i)       # built, wrapped, reset once, seeded
    obs, rew, term, trunc, info = env.step(actions)
    returns, lengths = episode_stats(info)                    # episodes that ended at this step

Design choices:

* ``make`` returns :class:`EnvHandle` ``(env, obs)``: building and the one seeded reset always go
  together, so a caller cannot forget to seed, and it gets the first observation it needs.
  :func:`reset_seeded` is the same seeded reset on its own (e.g. to restart an evaluation env).
* Everything that crosses a process boundary is module-level (``_make_sub_env``, :class:`StepDelay`,
  ``snapshot.SubEnvState``) so that Ray can ship the config and ``AsyncVectorEnv(context="spawn")``
  can pickle the env thunks.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import gymnasium
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from colonyrl.config import Config, ConfigError, param
from colonyrl.envs import wrappers as _wrappers  # noqa: F401  (registers colonyrl/... env ids)
from colonyrl.envs.snapshot import SubEnvState

__all__ = ["EnvConfig", "EnvHandle", "StepDelay", "env_seeds", "reset_seeded", "episode_stats"]


def env_seeds(seed: int, worker_index: int, num_envs: int) -> list[int]:
    """Distinct, reproducible reset seeds for the ``num_envs`` sub-envs of worker ``worker_index``.

    NumPy's guidance for parallel streams: combine the worker ID and the root seed as a *list* of
    integers fed to ``SeedSequence`` (which hashes them, so nearby seeds give far-apart states), and
    put the varying ID *before* the root seed; ``root_seed + worker_id`` is marked unsafe because
    runs with nearby root seeds share worker streams.
    https://numpy.org/doc/stable/reference/random/parallel.html ("Sequence of integer seeds").
    Hence ``SeedSequence([worker_index, seed])``, and one 32-bit word per sub-env.

    Both ``seed`` and ``worker_index`` must be non-negative (SeedSequence rejects negative entropy).
    """
    words = np.random.SeedSequence([worker_index, seed]).generate_state(num_envs)
    return [int(w) for w in words]


def _action_space_seeds(seed: int, worker_index: int) -> tuple[int, int]:
    """Seeds for the batched and the single action space, independent of :func:`env_seeds`
    (they come from a spawned child of the same sequence)."""
    child = np.random.SeedSequence([worker_index, seed]).spawn(1)[0]
    batched, single = child.generate_state(2)
    return int(batched), int(single)


class StepDelay(gymnasium.Wrapper):
    """Sleeps ``delay_s`` seconds before every ``step``: a slow (I/O-bound) env for benchmarks and
    straggler tests. Module-level so that it pickles into ``AsyncVectorEnv`` workers."""

    def __init__(self, env: gymnasium.Env, delay_s: float) -> None:
        super().__init__(env)
        self.delay_s = float(delay_s)

    def step(self, action: Any) -> Any:
        time.sleep(self.delay_s)
        return self.env.step(action)


def _make_sub_env(
    env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any], step_delay_s: float,
    in_worker: bool = False,
) -> gymnasium.Env:
    """Build one sub-env (the thunk the vector env calls, in this or a spawned process).

    ``in_worker``: an ``AsyncVectorEnv`` sub-env, wrapped outermost in :class:`SubEnvState` so that
    envs/snapshot.py can snapshot and restore it from the main process.
    """
    if max_episode_steps is not None:  # None: keep the registered spec's own TimeLimit
        kwargs = {**kwargs, "max_episode_steps": max_episode_steps}
    env = gymnasium.make(env_id, **kwargs)
    if step_delay_s > 0:
        env = StepDelay(env, step_delay_s)
    return SubEnvState(env) if in_worker else env


class EnvHandle(NamedTuple):
    """What :meth:`EnvConfig.make` returns: the vector env and its first (seeded) observation."""

    env: VectorEnv
    obs: Any  # np.ndarray [num_envs, *obs_shape] for Box observations


@dataclass(frozen=True, kw_only=True)
class EnvConfig(Config):
    """How a CWorker builds its vector env. Picklable: Ray rebuilds the env from it in the worker."""

    #: A registered gymnasium id; ``"module:Env-v0"`` imports ``module`` first (gymnasium.make's rule).
    id: str = "CartPole-v1"
    #: Sub-envs per CWorker.
    num_envs: int = param(8, ge=1)
    #: ``sync`` steps sub-envs in the worker's own process. Measured: SyncVectorEnv ~96k vs
    #: AsyncVectorEnv ~14k env-steps/s for 4 CartPoles on 2 cores (platform.md §7): use ``async``
    #: only for slow envs, and let parallelism come from more CWorkers.
    vectorization: Literal["sync", "async"] = "sync"
    #: Overrides the spec's time limit (``gymnasium.make(..., max_episode_steps=)``); None keeps it.
    max_episode_steps: int | None = param(None, ge=1)
    #: Extra keyword arguments for ``gymnasium.make`` (e.g. ``{"g": 9.81}`` for Pendulum).
    kwargs: dict[str, float | int | str | bool] = field(default_factory=dict)
    #: Seconds slept per sub-env step (:class:`StepDelay`): simulates slow envs.
    step_delay_s: float = param(0.0, ge=0.0)
    #: Only these worker indices get ``step_delay_s`` (None: all): simulates a straggler.
    step_delay_workers: tuple[int, ...] | None = None

    def _check(self) -> None:
        where = f"{type(self).__name__}.id"
        env_name = self.id
        if ":" in self.id:  # "module:Env-v0": the module registers the env on import
            module, _, env_name = self.id.partition(":")
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ConfigError(where, self.id, f"an importable module before ':' ({e})") from e
        if env_name not in gymnasium.envs.registry:
            close = difflib.get_close_matches(env_name, list(gymnasium.envs.registry), n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
            raise ConfigError(
                where, self.id,
                f"a registered gymnasium id (gymnasium.pprint_registry() lists them; envs of other "
                f"packages need 'package:Env-vN'){hint}",
            )

    def env_fns(self, worker_index: int = 0) -> list[functools.partial[gymnasium.Env]]:
        """One picklable thunk per sub-env (what ``SyncVectorEnv``/``AsyncVectorEnv`` take)."""
        slow = self.step_delay_workers is None or worker_index in self.step_delay_workers
        thunk = functools.partial(_make_sub_env, self.id, self.max_episode_steps, dict(self.kwargs),
                                  self.step_delay_s if slow else 0.0, self.vectorization == "async")
        return [thunk] * self.num_envs

    def make(self, num_envs: int | None = None, seed: int = 0, worker_index: int = 0) -> EnvHandle:
        """Build the vector env, reset it once with per-worker, per-sub-env seeds, seed its spaces.

        ``num_envs`` overrides :attr:`num_envs` (e.g. an evaluation env). The env is wrapped in
        ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` (read it with :func:`episode_stats`)
        and uses next-step autoreset. The same ``(seed, worker_index)`` gives the same first
        observations; a different worker index gives different ones.
        """
        cfg = self if num_envs is None else self.replace(num_envs=num_envs)
        fns = cfg.env_fns(worker_index)
        vec: VectorEnv
        if cfg.vectorization == "sync":
            vec = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
        else:
            # "spawn": measured to work inside a Ray actor (platform.md §7); fork in a process that
            # already runs threads (Ray, torch) can deadlock the child.
            vec = AsyncVectorEnv(fns, context="spawn", autoreset_mode=AutoresetMode.NEXT_STEP)
        # The storage masks the step after an episode end; another mode would train on fake
        # transitions (https://gymnasium.farama.org/main/api/vector/autoreset/).
        assert vec.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP, vec.metadata
        env = RecordEpisodeStatistics(vec)
        try:
            obs = reset_seeded(env, seed, worker_index)
        except BaseException:
            env.close()
            raise
        return EnvHandle(env, obs)


def reset_seeded(env: VectorEnv, seed: int, worker_index: int) -> Any:
    """Reset ``env`` with :func:`env_seeds` and seed its action spaces; return the observations."""
    obs, _ = env.reset(seed=env_seeds(seed, worker_index, env.num_envs))
    batched, single = _action_space_seeds(seed, worker_index)
    env.action_space.seed(batched)  # e.g. random actions for warm-up: reproducible per worker
    env.single_action_space.seed(single)
    return obs


_EMPTY_F = np.zeros(0, np.float64)
_EMPTY_I = np.zeros(0, np.int64)
_EMPTY_F.flags.writeable = False
_EMPTY_I.flags.writeable = False


def episode_stats(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (float64) and lengths (int64) of the episodes that ended at this step.

    Reads ``RecordEpisodeStatistics``' ``info["episode"] = {"r", "l", "t"}`` and its mask
    ``info["_episode"]`` (platform.md §7); both keys are present only on steps where an episode
    ended, so the common case is one dict lookup. The empty result is a shared read-only array.
    """
    mask = info.get("_episode")
    if mask is None:
        return _EMPTY_F, _EMPTY_I
    ep = info["episode"]
    return np.asarray(ep["r"][mask], np.float64), np.asarray(ep["l"][mask], np.int64)

