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
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import gymnasium
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from colonyrl.config import Config, ConfigError, param
from colonyrl.envs import atari as _atari
from colonyrl.envs import goal as _goal  # noqa: F401  registers colonyrl/BitFlip-v0 in every process
from colonyrl.envs.atari import AtariConfig
from colonyrl.envs.normalization import NormalizeConfig
from colonyrl.envs.snapshot import SubEnvState
from colonyrl.envs.split import SplitVectorEnv
from colonyrl.envs.wrappers import (  # registers colonyrl/... ids
    StepDelay,
    WrapperConfig,
    check_json,
    check_wrappers,
)

__all__ = ["EnvConfig", "WrapperConfig", "EnvHandle", "StepDelay", "env_seeds", "reset_seeded", "episode_stats",
           "check_json", "route_mujoco_warnings"]


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


def _make_sub_env(
    env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any], step_delay_s: float,
    in_worker: bool = False, wrappers: tuple[WrapperConfig, ...] = (),
) -> gymnasium.Env:
    """Build one sub-env (the thunk the vector env calls, in this or a spawned process): the
    registered env, then ``wrappers`` in order (the first is innermost), then the step delay.

    ``in_worker``: an ``AsyncVectorEnv`` sub-env, wrapped outermost in :class:`SubEnvState` so that
    envs/snapshot.py can snapshot and restore it from the main process.
    """
    if max_episode_steps is not None:  # None: keep the registered spec's own TimeLimit
        kwargs = {**kwargs, "max_episode_steps": max_episode_steps}
    if _atari.is_ale_id(env_id):  # a fresh (e.g. spawned or Ray) process: ale-py registers its ids
        _atari.import_ale(env_id)
    route_mujoco_warnings(env_id)
    env = gymnasium.make(env_id, **kwargs)
    for i, wrapper in enumerate(wrappers):
        try:
            env = wrapper.wrap(env)
        except Exception as e:  # e.g. an image wrapper on a vector observation: name the entry
            env.close()
            raise ConfigError(f"EnvConfig.wrappers[{i}]", wrapper.name,
                              f"a wrapper that fits {env_id} wrapped so far ({type(e).__name__}: {e})") from e
    if step_delay_s > 0:
        env = StepDelay(env, step_delay_s)
    return SubEnvState(env) if in_worker else env


def route_mujoco_warnings(env_id: str) -> None:
    """For gymnasium's MuJoCo envs: MuJoCo's default warning handler appends every warning to
    ``MUJOCO_LOG.TXT`` in the working folder (e.g. the deprecation of ``settotalmass``, which
    HalfCheetah's XML uses, on every build); send them to Python's ``warnings`` instead, through
    MuJoCo's ``mju_user_warning`` hook (https://mujoco.readthedocs.io/en/stable/APIreference/APIglobals.html)."""
    spec = gymnasium.envs.registry.get(env_id)
    entry = spec.entry_point if spec is not None else None
    if not isinstance(entry, str) or not entry.startswith("gymnasium.envs.mujoco"):
        return
    try:
        import mujoco
    except ImportError:
        return  # gymnasium.make says what to install
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def _mujoco_warning(message: str) -> None:
    warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


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
    #: only for slow envs, and let parallelism come from more CWorkers. ``ale``: ale-py's native
    #: vector env for ``ALE/`` ids, with its preprocessing (:attr:`atari`; envs/atari.py).
    vectorization: Literal["sync", "async", "ale"] = "sync"
    #: Overrides the spec's time limit (``gymnasium.make(..., max_episode_steps=)``); None keeps it.
    max_episode_steps: int | None = param(None, ge=1)
    #: Extra keyword arguments for ``gymnasium.make``, any JSON values (e.g. ``{"g": 9.81}`` for
    #: Pendulum). On the command line: ``--env.kwargs '{"g": 9.81}'``.
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Wrappers applied in order (the first innermost) to every sub-env of every CWorker and of
    #: evaluation; the spaces the networks and storage are built for are the wrapped env's. On the
    #: command line a JSON list: ``--env.wrappers '["TimeAwareObservation", {"name":
    #: "FrameStackObservation", "kwargs": {"stack_size": 4}}]'``.
    wrappers: tuple[WrapperConfig, ...] = ()
    #: Running observation / return-based reward normalization shared by every worker (SB3's
    #: ``VecNormalize`` semantics; envs/normalization.py). Off by default.
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    #: Seconds slept per sub-env step (:class:`StepDelay`): simulates slow envs.
    step_delay_s: float = param(0.0, ge=0.0)
    #: Only these worker indices get ``step_delay_s`` (None: all): simulates a straggler.
    step_delay_workers: tuple[int, ...] | None = None
    #: ale-py's preprocessing (frame skip, 84x84 grayscale, stack of 4, no-ops, FIRE, episodic life
    #: and reward clipping for training only); used with ``vectorization="ale"``.
    atari: AtariConfig = field(default_factory=AtariConfig)
    #: Double-buffered sampling (envs/split.py; Sample Factory's ``worker_num_splits=2``): the
    #: sub-envs in two halves, each stepping in a background thread while the policy acts for the
    #: other. It pays where a step releases the GIL (ale-py, MuJoCo, ``async``); needs
    #: ``num_envs >= 2``. A recurrent policy's state and the normalizer's returns go by halves.
    double_buffered: bool = False

    def _check(self) -> None:
        name = type(self).__name__
        if self.double_buffered and self.num_envs < 2:
            raise ConfigError(f"{name}.num_envs", self.num_envs, ">= 2 with double_buffered=True (two halves of sub-envs)")
        check_json(f"{name}.kwargs", self.kwargs)
        if _atari.is_ale_id(self.id) or self.vectorization == "ale":
            self._check_ale()
        check_wrappers(f"{name}.wrappers", self.wrappers)
        where = f"{name}.id"
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

    def _check_ale(self) -> None:
        """ale-py installed (it registers the ``ALE/`` ids), and what its vector env cannot do."""
        name = type(self).__name__
        if not _atari.is_ale_id(self.id):
            raise ConfigError(f"{name}.vectorization", self.vectorization,
                              f"'sync' or 'async' for {self.id!r} ('ale' needs an ALE/ id, e.g. 'ALE/Pong-v5')")
        _atari.import_ale(self.id)
        if self.vectorization != "ale":
            return
        if self.wrappers:  # ale-py preprocesses in C++: no single sub-env to wrap
            raise ConfigError(f"{name}.wrappers", WrapperConfig.list_json(self.wrappers),
                              "() with vectorization='ale' (set the preprocessing with EnvConfig.atari)")
        if self.step_delay_s > 0:
            raise ConfigError(f"{name}.step_delay_s", self.step_delay_s, "0.0 with vectorization='ale'")
        _atari.check_ale_kwargs(self.kwargs)

    def evaluation(self) -> EnvConfig:
        """This env as evaluations run it: for ale-py, without the training-only signals (episodic
        life, reward clipping: :meth:`AtariConfig.evaluation`); other envs are the same."""
        return self.replace(atari=self.atari.evaluation()) if self.vectorization == "ale" else self

    def env_fns(self, worker_index: int = 0) -> list[functools.partial[gymnasium.Env]]:
        """One picklable thunk per sub-env (what ``SyncVectorEnv``/``AsyncVectorEnv`` take)."""
        slow = self.step_delay_workers is None or worker_index in self.step_delay_workers
        thunk = functools.partial(_make_sub_env, self.id, self.max_episode_steps, dict(self.kwargs),
                                  self.step_delay_s if slow else 0.0, self.vectorization == "async", self.wrappers)
        return [thunk] * self.num_envs

    def make_single(self) -> gymnasium.Env:
        """One sub-env, built and wrapped exactly as each CWorker's (without the step delay)."""
        if self.vectorization == "ale":
            raise ConfigError(f"{type(self).__name__}.vectorization", "ale",
                              "'sync' or 'async' for a single env (ale-py's vector env has no sub-env objects)")
        return _make_sub_env(self.id, self.max_episode_steps, dict(self.kwargs), 0.0, False, self.wrappers)

    def spaces(self) -> tuple[gymnasium.Space, gymnasium.Space]:
        """(observation, action) space of one wrapped sub-env (built and closed here)."""
        if self.vectorization == "ale":
            return _atari.ale_spaces(self.id, dict(self.kwargs), self.atari)
        env = self.make_single()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    def make(self, num_envs: int | None = None, seed: int = 0, worker_index: int = 0) -> EnvHandle:
        """Build the vector env, reset it once with per-worker, per-sub-env seeds, seed its spaces.

        ``num_envs`` overrides :attr:`num_envs` (e.g. an evaluation env). The env is wrapped in
        ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` (read it with :func:`episode_stats`)
        and uses next-step autoreset. The same ``(seed, worker_index)`` gives the same first
        observations; a different worker index gives different ones.
        """
        # an evaluation env of one sub-env is not split (nor refused: num_envs >= 2 is for training)
        cfg = self if num_envs is None else self.replace(num_envs=num_envs, double_buffered=self.double_buffered
                                                         and num_envs >= 2)
        if cfg.double_buffered:
            first = cfg.num_envs // 2
            env: VectorEnv = SplitVectorEnv((cfg._vector(first, worker_index), cfg._vector(cfg.num_envs - first,
                                                                                            worker_index)))
        else:
            env = cfg._vector(cfg.num_envs, worker_index)
        try:
            obs = reset_seeded(env, seed, worker_index)
        except BaseException:
            env.close()
            raise
        return EnvHandle(env, obs)

    def _vector(self, num_envs: int, worker_index: int) -> VectorEnv:
        """``num_envs`` sub-envs vectorized as :attr:`vectorization` says, with their episode statistics."""
        cfg = self.replace(num_envs=num_envs, double_buffered=False)
        vec: VectorEnv
        if cfg.vectorization == "ale":
            vec = _atari.make_ale_vector(cfg.id, cfg.num_envs, dict(cfg.kwargs), cfg.max_episode_steps, cfg.atari)
        elif cfg.vectorization == "sync":
            vec = SyncVectorEnv(cfg.env_fns(worker_index), autoreset_mode=AutoresetMode.NEXT_STEP)
        else:
            # "spawn": measured to work inside a Ray actor (platform.md §7); fork in a process that
            # already runs threads (Ray, torch) can deadlock the child.
            vec = AsyncVectorEnv(cfg.env_fns(worker_index), context="spawn", autoreset_mode=AutoresetMode.NEXT_STEP)
        # The storage masks the step after an episode end; another mode would train on fake
        # transitions (https://gymnasium.farama.org/main/api/vector/autoreset/).
        assert vec.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP, vec.metadata
        return RecordEpisodeStatistics(vec)


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

