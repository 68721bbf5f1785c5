"""Running observation normalization and return-based reward normalization, shared by every worker.

The semantics are Stable-Baselines3's ``VecNormalize``
(``stable_baselines3/common/vec_env/vec_normalize.py``): an observation becomes
``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` with the running mean and
variance of the observations seen; a reward becomes ``clip(reward / sqrt(var_R + epsilon),
-clip_reward, clip_reward)``, where ``var_R`` is the running variance of each sub-env's discounted
return ``R = gamma * R + reward``, which is reset to 0 at an episode's end. The default clips (10),
epsilon (1e-8) and gamma (0.99) are SB3's.

What differs is where the statistics live. SB3 keeps them in the one process that steps the envs;
here many CWorkers step envs, so (as RLlib users ask for: ray-project/ray #2505, #9399, #11967)
every CWorker normalizes with the statistics it was last handed, frozen while it collects, and
accumulates the raw statistics of what it saw since (a *delta*, :class:`Statistics`). Deltas go up
with the rollouts; the Learner merges them exactly (:meth:`RunningMeanStd.merge`, the pairwise
update of Chan, Golub and LeVeque, "Updating formulae and a pairwise algorithm for computing
sample variances", 1979; the "parallel algorithm" of Wikipedia's "Algorithms for calculating
variance") and hands the totals down with the weights. Merging the deltas of any number of
workers, in any grouping, gives the statistics of the pooled data (tests/envs/test_normalization.py).

Statistics start empty (count 0, mean 0, var 1): SB3 starts its count at 1e-4 to avoid a division
by zero, a prior that an exact merge would count once per worker.

A Dict observation is normalized per key, as SB3 does (``norm_obs_keys``; one ``RunningMeanStd``
per key, each key's statistics merged on their own): the keys ``NormalizeConfig.obs_keys`` names,
by default every Box of floats. The other keys pass untouched, uint8 ones always: SB3 would
normalize an image key and make its space float32, so that its policies' image preprocessing
refuses it (SB3 GH #1214); here the Nature CNN and the storage take images as uint8.

Pure numpy (torch only for checkpoint tensors, imported when asked): no Ray, no scheme import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from colonyrl.config import Config, ConfigError, param

__all__ = ["NormalizeConfig", "RunningMeanStd", "Statistics", "ObsNormalizer", "Normalizer", "normalize_obs",
           "normalize_reward", "obs_shapes", "empty_obs_statistics", "copy_obs_statistics"]


@dataclass(frozen=True, kw_only=True)
class NormalizeConfig(Config):
    """Observation and reward normalization (SB3 ``VecNormalize``'s arguments and defaults). Off by
    default. The statistics are shared by every worker, kept in checkpoints, frozen in evaluation
    and baked into the exported policy (observations only: rewards do not reach a policy)."""

    #: Normalize observations (a Box of floats, or a Dict's keys) by their running mean and variance.
    obs: bool = False
    #: A Dict observation's keys to normalize (SB3's ``norm_obs_keys``), each a Box of floats;
    #: None: every Box of floats of the Dict. Only with ``obs`` and a Dict observation space.
    obs_keys: tuple[str, ...] | None = None
    #: Scale rewards by the running std of the discounted return.
    reward: bool = False
    clip_obs: float = param(10.0, gt=0.0)
    clip_reward: float = param(10.0, gt=0.0)
    #: Discount of the return whose variance scales the rewards (SB3: set it to the algorithm's).
    gamma: float = param(0.99, ge=0.0, le=1.0)
    epsilon: float = param(1e-8, gt=0.0)

    @property
    def enabled(self) -> bool:
        return self.obs or self.reward

    def _check(self) -> None:
        keys = self.obs_keys
        if keys is not None and not self.obs:
            raise ConfigError("NormalizeConfig.obs_keys", keys, "None unless obs is True (it names the Dict keys "
                                                                "observation normalization normalizes)")
        if keys is not None and (not keys or len(set(keys)) < len(keys) or not all(keys)):
            raise ConfigError("NormalizeConfig.obs_keys", keys, "None or a non-empty tuple of distinct, non-empty keys")


class RunningMeanStd:
    """Count, mean and population variance (float64) of a stream of arrays of one shape."""

    __slots__ = ("count", "mean", "var")

    def __init__(self, shape: tuple[int, ...] = (), count: float = 0.0, mean: Any = None, var: Any = None) -> None:
        self.count = float(count)
        self.mean = np.zeros(shape, np.float64) if mean is None else np.array(mean, np.float64)
        self.var = np.ones(shape, np.float64) if var is None else np.array(var, np.float64)

    @classmethod
    def of(cls, x: np.ndarray) -> RunningMeanStd:
        """The statistics of a batch ``x [N, *shape]``."""
        x = np.asarray(x, np.float64)
        if len(x) == 0:
            return cls(x.shape[1:])
        return cls(x.shape[1:], len(x), x.mean(axis=0), x.var(axis=0))

    def update(self, x: np.ndarray) -> None:
        """Add a batch ``x [N, *shape]``."""
        if len(x):
            self.merge(RunningMeanStd.of(x))

    def merge(self, other: RunningMeanStd) -> None:
        """Add ``other``'s data (Chan et al. 1979's pairwise update): with ``d = mean_b - mean_a``
        and ``n = n_a + n_b``, ``mean = mean_a + d n_b / n`` and
        ``var = (var_a n_a + var_b n_b + d^2 n_a n_b / n) / n``. Exact: no prior, no decay."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.var = other.count, other.mean.copy(), other.var.copy()
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        m2 = self.var * self.count + other.var * other.count + np.square(delta) * (self.count * other.count / total)
        self.mean = np.asarray(self.mean + delta * (other.count / total))  # 0-d stays an array
        self.var = np.asarray(m2 / total)
        self.count = total

    def copy(self) -> RunningMeanStd:
        return RunningMeanStd(self.mean.shape, self.count, self.mean, self.var)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and a float, for checkpoints that load with ``torch.load(weights_only=True)``."""
        import torch

        return {"count": self.count, "mean": torch.from_numpy(self.mean.copy()), "var": torch.from_numpy(self.var.copy())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningMeanStd:
        mean, var = (np.asarray(state[k].numpy() if hasattr(state[k], "numpy") else state[k]) for k in ("mean", "var"))
        return cls(mean.shape, state["count"], mean, var)

    def __repr__(self) -> str:
        return f"RunningMeanStd(count={self.count:g}, mean={self.mean}, var={self.var})"


#: The observation statistics: one for a Box, one per normalized key for a Dict observation.
ObsStatistics = RunningMeanStd | dict[str, RunningMeanStd]
#: What is normalized: a Box's shape, or the shape of each normalized key of a Dict.
ObsShapes = tuple[int, ...] | dict[str, tuple[int, ...]]


def obs_shapes(space: gym.Space, config: NormalizeConfig) -> ObsShapes | None:
    """What ``config`` normalizes in observations of ``space`` (None when it does not). Called when
    the spaces are read, before any worker starts, so a space it cannot normalize (SB3's
    ``VecNormalize._sanity_checks``) is a ConfigError naming the field then."""
    if not config.obs:
        return None
    if isinstance(space, gym.spaces.Dict):
        floats = [key for key, sub in space.spaces.items() if _is_float_box(sub)]
        keys = config.obs_keys
        if keys is None and not floats:
            raise ConfigError("EnvConfig.normalize.obs", True, f"False for a Dict observation without a Box of floats "
                                                               f"(this env's: {space})")
        for key in keys or ():
            if key not in floats:
                raise ConfigError("EnvConfig.normalize.obs_keys", keys,
                                  f"None or keys of this env's Dict observation that are a Box of floats: {floats} "
                                  f"({key!r} is {'not a key' if key not in space.spaces else space[key]}; uint8 "
                                  "images are never normalized)")
        return {key: tuple(space[key].shape) for key in floats if keys is None or key in keys}
    if config.obs_keys is not None:
        raise ConfigError("EnvConfig.normalize.obs_keys", config.obs_keys,
                          f"None for an observation space that is not a Dict (this env's: {space})")
    if not _is_float_box(space):
        raise ConfigError("EnvConfig.normalize.obs", True,
                          f"False for observations that are not a Box of floats or a Dict with one (this env's: {space})")
    return tuple(space.shape)


def _is_float_box(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)


def empty_obs_statistics(shapes: ObsShapes) -> ObsStatistics:
    """Empty statistics of ``shapes`` (:func:`obs_shapes`)."""
    if isinstance(shapes, dict):
        return {key: RunningMeanStd(shape) for key, shape in shapes.items()}
    return RunningMeanStd(shapes)


def copy_obs_statistics(obs: ObsStatistics) -> ObsStatistics:
    return {key: rms.copy() for key, rms in obs.items()} if isinstance(obs, dict) else obs.copy()


def _merge_obs(into: ObsStatistics, other: ObsStatistics) -> None:
    """``other`` merged into ``into``, key by key for a Dict (each key exactly, as one Box)."""
    if isinstance(into, dict) != isinstance(other, dict) or (isinstance(into, dict) and into.keys() != other.keys()):
        raise ValueError(f"observation statistics of different layouts: {into} and {other}")
    if isinstance(into, dict):
        for key, rms in into.items():
            rms.merge(other[key])  # type: ignore[index]
    else:
        into.merge(other)  # type: ignore[arg-type]


def _obs_state(obs: ObsStatistics | None, name: str) -> dict[str, Any]:
    """``{name: Box state}``, or ``{name + "_keys": {key: state}}`` for a Dict (so a Box checkpoint
    of before Dict observations reads the same)."""
    if isinstance(obs, dict):
        return {f"{name}_keys": {key: rms.state_dict() for key, rms in obs.items()}}
    return {name: None if obs is None else obs.state_dict()}


def _obs_from_state(state: dict[str, Any], name: str) -> ObsStatistics | None:
    keys = state.get(f"{name}_keys")
    if keys is not None:
        return {key: RunningMeanStd.from_state(s) for key, s in keys.items()}
    return None if state.get(name) is None else RunningMeanStd.from_state(state[name])


class Statistics(NamedTuple):
    """The observation and discounted-return statistics (None where that normalization is off).

    Up the hierarchy (``Rollout.normalizer``, ``GradientPacket.normalizer``) it is a delta: what
    was seen since the last report; down (``Weights.normalizer``) the merged totals. Treated as
    immutable: in one process the same object may be held by the Learner and its workers, so
    :meth:`combine` returns new statistics and never changes its inputs.
    """

    obs: ObsStatistics | None
    ret: RunningMeanStd | None

    @staticmethod
    def combine(*parts: Statistics | None) -> Statistics | None:
        """The merge of ``parts`` (None ones skipped; None if all are)."""
        live = [p for p in parts if p is not None]
        if not live:
            return None
        return Statistics(_merged(p.obs for p in live), _merged(p.ret for p in live))  # type: ignore[arg-type]

    @property
    def count(self) -> float:
        """Observations counted (returns, without obs normalization)."""
        rms = self.obs if self.obs is not None else self.ret
        if isinstance(rms, dict):  # every key counts every observation
            rms = next(iter(rms.values()))
        return 0.0 if rms is None else rms.count

    def state_dict(self) -> dict[str, Any]:
        return {**_obs_state(self.obs, "obs"), **_obs_state(self.ret, "ret")}

    @staticmethod
    def from_state(state: dict[str, Any] | None) -> Statistics | None:
        if state is None:
            return None
        return Statistics(_obs_from_state(state, "obs"), _obs_from_state(state, "ret"))  # type: ignore[arg-type]


def _merged(parts: Iterable[ObsStatistics | None]) -> ObsStatistics | None:
    out = None
    for rms in parts:
        if rms is None:
            continue
        if out is None:
            out = copy_obs_statistics(rms)
        else:
            _merge_obs(out, rms)
    return out


def normalize_obs(obs: np.ndarray, rms: RunningMeanStd, clip: float, epsilon: float) -> np.ndarray:
    """SB3's ``VecNormalize._normalize_obs``, in float64, returned in the observation's float dtype."""
    out = np.clip((obs - rms.mean) / np.sqrt(rms.var + epsilon), -clip, clip)
    return out.astype(obs.dtype if obs.dtype.kind == "f" else np.float32, copy=False)


def normalize_obs_tree(obs: Any, rms: ObsStatistics, clip: float, epsilon: float) -> Any:
    """:func:`normalize_obs` of a Box observation, or of a Dict's normalized keys (the others as
    they are: SB3's ``VecNormalize.normalize_obs`` with ``norm_obs_keys``)."""
    if isinstance(rms, dict):
        return {key: normalize_obs(np.asarray(value), rms[key], clip, epsilon) if key in rms else value
                for key, value in obs.items()}
    return normalize_obs(np.asarray(obs), rms, clip, epsilon)


def _counted(rms: ObsStatistics, obs: Any, rows: np.ndarray | None) -> Any:
    """A float64 copy of the observations ``obs[rows]`` (all if None) that ``rms`` counts: the
    array, or a dict of the normalized keys' arrays for a Dict."""
    def pick(x: Any) -> np.ndarray:  # one copy: indexing by a mask copies already
        return np.array(x, np.float64) if rows is None else np.asarray(np.asarray(x)[rows], np.float64)
    return {key: pick(obs[key]) for key in rms} if isinstance(rms, dict) else pick(obs)


def normalize_reward(reward: np.ndarray, rms: RunningMeanStd, clip: float, epsilon: float) -> np.ndarray:
    """SB3's ``VecNormalize.normalize_reward``: scaled, not centred."""
    return np.clip(reward / np.sqrt(rms.var + epsilon), -clip, clip)


class ObsNormalizer(NamedTuple):
    """Frozen observation normalization (evaluation, the exported policy)."""

    rms: ObsStatistics
    clip: float
    epsilon: float

    def __call__(self, obs: Any) -> Any:
        return normalize_obs_tree(obs, self.rms, self.clip, self.epsilon)

    def state_dict(self) -> dict[str, Any]:
        """For a model file (``rms``, or ``rms_keys`` for a Dict, with clip and epsilon)."""
        return {**_obs_state(self.rms, "rms"), "clip": float(self.clip), "epsilon": float(self.epsilon)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ObsNormalizer:
        rms = _obs_from_state(state, "rms")
        assert rms is not None
        return cls(rms, state["clip"], state["epsilon"])


class Normalizer:
    """One CWorker's normalization of its ``num_envs`` sub-envs: applies the statistics it was last
    handed (:meth:`set_statistics`) and accumulates the raw statistics of what it sees since its
    last :meth:`pop_delta`, and each sub-env's discounted return (SB3's ``VecNormalize.returns``).

    With gymnasium's next-step autoreset the step after an episode end only resets that sub-env:
    its observation is the episode's last one and its reward is not real (``valid`` False). Neither
    is counted, so the statistics see what SB3's see: every observation an episode starts or
    continues with, and the return after every real step.

    What a step counts is kept as it is and merged into :attr:`delta` in batches of up to
    :attr:`FOLD_EVERY` steps, when the delta is read: one Chan merge per batch instead of a mean, a
    variance and a merge of a few numbers per step, which cost a one-env MuJoCo CWorker ~0.1 ms a
    step. The same statistics up to rounding (tests/envs/test_normalization.py).
    """

    FOLD_EVERY = 1024

    def __init__(self, config: NormalizeConfig, obs_shape: ObsShapes, num_envs: int) -> None:
        self.config = config
        self.obs_shape = dict(obs_shape) if isinstance(obs_shape, dict) else tuple(obs_shape)  # :func:`obs_shapes`
        self.statistics = self._empty()
        self.delta = self._empty()
        self.returns = np.zeros(num_envs, np.float64)

    @property
    def delta(self) -> Statistics:
        """What was seen since the last :meth:`pop_delta`, as statistics."""
        self._fold()
        return self._delta

    @delta.setter
    def delta(self, value: Statistics) -> None:
        self._delta, self._seen_obs, self._seen_returns = value, [], []

    def _fold(self) -> None:
        if self._seen_obs:
            assert self._delta.obs is not None
            rms = self._delta.obs
            for key, part in rms.items() if isinstance(rms, dict) else ((None, rms),):
                part.update(np.concatenate([x if key is None else x[key] for x in self._seen_obs]))
            self._seen_obs = []
        if self._seen_returns:
            assert self._delta.ret is not None
            self._delta.ret.update(np.concatenate(self._seen_returns))
            self._seen_returns = []

    def _empty(self) -> Statistics:
        return Statistics(empty_obs_statistics(self.obs_shape) if self.config.obs else None,
                          RunningMeanStd(()) if self.config.reward else None)

    def set_statistics(self, statistics: Statistics | None) -> None:
        """Normalize with ``statistics`` from now on (None: keep the current ones)."""
        if statistics is not None:
            self.statistics = statistics

    def observation(self, obs: Any, count: np.ndarray | None = None) -> Any:
        """``obs [num_envs, *shape]`` (a dict of them for a Dict) normalized; the sub-envs where
        ``count`` is True (all if None) are added to the delta. Unchanged when observations are not
        normalized."""
        if not self.config.obs:
            return obs
        assert self._delta.obs is not None and self.statistics.obs is not None
        self._seen_obs.append(_counted(self._delta.obs, obs, count))
        if len(self._seen_obs) >= self.FOLD_EVERY:
            self._fold()
        return normalize_obs_tree(obs, self.statistics.obs, self.config.clip_obs, self.config.epsilon)

    def frozen_observation(self, obs: Any) -> Any:
        """``obs`` normalized without counting it (the observation a rollout bootstraps from: the
        next rollout's first, counted then)."""
        if not self.config.obs:
            return obs
        assert self.statistics.obs is not None
        return normalize_obs_tree(obs, self.statistics.obs, self.config.clip_obs, self.config.epsilon)

    def reward(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray,
               rows: slice = slice(None)) -> np.ndarray:
        """``reward [num_envs]`` scaled (or the sub-envs ``rows``: a double-buffered half); the
        discounted return of every ``valid`` sub-env goes into the delta and is reset where the
        episode is ``done``."""
        if not self.config.reward:
            return reward
        assert self._delta.ret is not None and self.statistics.ret is not None
        returns = np.where(valid, self.returns[rows] * self.config.gamma + reward, self.returns[rows])
        self._seen_returns.append(returns[valid])
        if len(self._seen_returns) >= self.FOLD_EVERY:
            self._fold()
        returns[done] = 0.0
        self.returns[rows] = returns
        return normalize_reward(reward, self.statistics.ret, self.config.clip_reward, self.config.epsilon)

    def pop_delta(self) -> Statistics:
        """What was seen since the last call (then a new, empty delta starts)."""
        delta, self.delta = self.delta, self._empty()
        return delta

    def reset_returns(self) -> None:
        """New episodes everywhere (a replaced env)."""
        self.returns[:] = 0.0

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"statistics": self.statistics.state_dict(), "delta": self.delta.state_dict(),
                "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.statistics = Statistics.from_state(state["statistics"]) or self._empty()
        self.delta = Statistics.from_state(state["delta"]) or self._empty()
        returns = state["returns"]
        self.returns = np.array(returns.numpy() if hasattr(returns, "numpy") else returns, np.float64)
