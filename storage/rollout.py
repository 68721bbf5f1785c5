"""On-policy rollout storage: CWorkers fill it step by step, GWorkers turn it into minibatches.

Data path (see ``colonyrl.scheme``): ``CWorker.collect`` calls :meth:`RolloutStorage.insert` once per
vector-env step, then :meth:`~RolloutStorage.finish` and :meth:`~RolloutStorage.get_data` (a dict of
numpy arrays in the layout of ``storage/layout.py``, time-major ``[T, N, ...]``, with PPO's extras
``logp`` and ``values``). The GWorker calls :meth:`~RolloutStorage.add_data` for every rollout it
receives, :meth:`~RolloutStorage.before_gradients` (GAE, drop invalid autoreset steps, flatten to
``[B, ...]`` torch tensors) and iterates :meth:`~RolloutStorage.batches` (an ``EpochPlan``).

Models: SB3 ``stable_baselines3/common/buffers.py::RolloutBuffer`` (``RolloutBufferSamples`` NamedTuple,
``get(batch_size)``), CleanRL ``ppo.py`` (one ``randperm`` per epoch); the storage holds no reference
to the actor or the algorithm.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.base import EpochPlan, GradientResult
from colonyrl.config import Config, ConfigError, param
from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.layout import RolloutBuffer, check_rollout, make_layout

__all__ = ["RolloutConfig", "RolloutStorage", "Minibatch", "Moments"]


@dataclass(frozen=True, kw_only=True)
class RolloutConfig(Config):
    """Rollout storage parameters; ``gamma`` and ``gae_lambda`` may change while training runs."""

    num_steps: int = param(128, ge=1)
    """T: steps per env per collection round (per CWorker)."""
    gamma: float = param(0.99, ge=0.0, le=1.0, runtime=True)
    """Discount factor used by GAE."""
    gae_lambda: float = param(0.95, ge=0.0, le=1.0, runtime=True)
    """GAE lambda (Schulman et al. 2016, arXiv:1506.02438)."""
    #: Runtime parameters the collecting side uses (CWorkers get only these): none, GAE runs on the GWorker.
    collection_parameters: ClassVar[frozenset[str]] = frozenset()
    #: What algorithms name as their ``storage_kind``.
    kind: ClassVar[str] = "rollout"

    def build(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
              extras: Mapping[str, tuple] | None = None) -> RolloutStorage:
        """A storage for ``num_envs`` sub-envs with these *single-env* spaces and the policy's
        declared extras (name -> ExtraSpec); GAE needs ``logp`` and a bootstrapped ``values``."""
        return RolloutStorage(self, observation_space, action_space, num_envs, extras)


class Minibatch(NamedTuple):
    """One minibatch of B transitions, torch tensors on the CPU (model: SB3 ``RolloutBufferSamples``)."""

    obs: torch.Tensor  # [B, *obs_shape], dtype of the observation space (uint8 frames stay uint8)
    actions: torch.Tensor  # [B] int64 (Discrete) or [B, *act_shape] float32 (Box)
    logp_old: torch.Tensor  # [B] float32, log-prob under the collecting policy
    advantages: torch.Tensor  # [B] float32, GAE
    returns: torch.Tensor  # [B] float32, advantages + values_old
    values_old: torch.Tensor  # [B] float32, V(obs) under the collecting policy
    #: (mean, std) to standardize ``advantages`` with: those of the whole round, of every GWorker
    #: that started it together (:class:`Moments`); None = this minibatch's own (SB3 per minibatch).
    advantage_stats: tuple[float, float] | None = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The per-sample fields (everything but ``advantage_stats``), in field order."""
        return self[:6]


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations of a sample, mergeable exactly (Chan et al. 1979,
    "Updating formulae and a pairwise algorithm for computing sample variances"): the statistics
    of a union computed from those of its parts, so N GWorkers can standardize with the union's."""

    count: int
    mean: float
    m2: float

    @staticmethod
    def of(x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return Moments(0, 0.0, 0.0)
        mean = float(x.mean())
        return Moments(int(x.size), mean, float(((x - mean) ** 2).sum()))

    @staticmethod
    def merge(parts: list[Moments]) -> Moments:
        count, mean, m2 = 0, 0.0, 0.0
        for n, m, s in parts:
            if n == 0:
                continue
            total = count + n
            delta = m - mean
            mean += delta * n / total
            m2 += s + delta * delta * count * n / total
            count = total
        return Moments(count, mean, m2)

    @property
    def std(self) -> float:
        """Unbiased standard deviation (torch.std's default, which SB3 and CleanRL use)."""
        return float(np.sqrt(self.m2 / (self.count - 1))) if self.count > 1 else 0.0


#: PPO's extras (agents/ppo.py ``PPOPolicy.extras``): the default when none are given.
_PPO_EXTRAS = {"logp": ((), "float32", False), "values": ((), "float32", True)}

#: Which rollout array each Minibatch field is gathered from (for its trailing shape and dtype).
_SOURCE = {"obs": "obs", "actions": "actions", "logp_old": "logp", "advantages": "values",
           "returns": "values", "values_old": "values"}


def _gather(arrays: list[np.ndarray], masks: list[np.ndarray], trailing: tuple[int, ...],
            dtype: np.dtype) -> np.ndarray:
    """Concatenate ``arrays[i][masks[i]]`` (each ``[T_i, N_i, *trailing]``) into a fresh ``[B, *trailing]``.

    ``np.compress(..., out=...)`` writes each rollout's kept rows straight into the result, so every
    byte is copied once (boolean indexing followed by ``np.concatenate`` would copy twice). The inputs
    are only read, so read-only views from Ray's object store are fine; the result is writable.
    """
    counts = [int(np.count_nonzero(m)) for m in masks]
    out = np.empty((sum(counts), *trailing), dtype=dtype)
    offset = 0
    for array, mask, count in zip(arrays, masks, counts, strict=True):
        flat = array.reshape(-1, *trailing)
        np.compress(mask.reshape(-1), flat, axis=0, out=out[offset:offset + count])
        offset += count
    return out


def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """``1 - Var[returns - values] / Var[returns]``; NaN when empty or Var[returns] == 0 (as SB3)."""
    if returns.size == 0:
        return float("nan")
    var_returns = np.var(returns, dtype=np.float64)
    if var_returns == 0.0:
        return float("nan")
    return float(1.0 - np.var(returns - values, dtype=np.float64) / var_returns)


class RolloutStorage:
    """Preallocated ``[T, N, ...]`` numpy buffers (CWorker side) and a flat ``[B, ...]`` batch (GWorker side).

    Build it with :meth:`RolloutConfig.build`. ``config`` holds the current :class:`RolloutConfig`.
    """

    #: On-policy: every rollout is used up within its collection round, so a checkpoint taken at a
    #: round boundary has no storage contents to save (a replay buffer would set this False and
    #: provide ``state_dict``/``load_state_dict``; issue 4).
    on_policy: ClassVar[bool] = True

    def __init__(self, config: RolloutConfig, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int, extras: Mapping[str, tuple] | None = None) -> None:
        self.config = config
        self.num_envs = num_envs
        extras = _PPO_EXTRAS if extras is None else extras
        for name, bootstrap in (("logp", False), ("values", True)):
            if name not in extras or bool(extras[name][2]) != bootstrap:
                raise ConfigError("storage", "rollout", f"a policy that declares the extras 'logp' and "
                                  f"'values' (bootstrapped) for GAE; this one declares {sorted(extras)}")
        #: key -> (trailing shape, dtype, extra rows) of every rollout array (storage/layout.py)
        self.layout = make_layout(observation_space, action_space, extras)
        self._buffer = RolloutBuffer(self.layout, config.num_steps, num_envs)
        self._rollouts: list[dict[str, np.ndarray]] = []
        self._num_samples = 0
        self._batch: Minibatch | None = None
        self._moments = Moments(0, 0.0, 0.0)

    # ------------------------------------------------------------------ CWorker side
    @property
    def step(self) -> int:
        """Rows filled since the last :meth:`get_data`."""
        return self._buffer.step

    @property
    def full(self) -> bool:
        return self._buffer.full

    def insert(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
               truncated: np.ndarray, valid: np.ndarray, extras: Mapping[str, np.ndarray]) -> None:
        """Write one step (each argument ``[N, ...]``); ``extras`` holds ``logp`` and ``values`` = V(obs).
        ``valid`` is False for the autoreset step right after an episode end."""
        self._buffer.insert(obs, actions, rewards, terminated, truncated, valid, extras)

    def finish(self, last_obs: np.ndarray, bootstrap: Mapping[str, np.ndarray]) -> None:
        """The observation after the last step and ``{"values": V(last_obs)}`` (GAE's bootstrap)."""
        self._buffer.finish(last_obs, bootstrap)

    def get_data(self) -> dict[str, np.ndarray]:
        """The rollout (storage/layout.py); resets the CWorker-side buffer to step 0."""
        return self._buffer.get_data()

    # ------------------------------------------------------------------ GWorker side
    @property
    def num_samples(self) -> int:
        """Valid transitions added since the last :meth:`clear` (= B after :meth:`before_gradients`)."""
        return self._num_samples

    def add_data(self, data: dict[str, np.ndarray], source: str = "") -> None:
        """Keep one rollout (any T including 0, any N) for :meth:`before_gradients`.

        The arrays are stored, never written into: read-only views from Ray's object store are fine.
        """
        check_rollout(self.layout, data)
        self._rollouts.append({key: data[key] for key in self.layout})
        self._num_samples += int(np.count_nonzero(data["valid"]))
        self._batch = None  # the batch no longer covers all data

    def before_gradients(self) -> dict[str, float]:
        """GAE per rollout with the current gamma/gae_lambda, drop invalid steps, flatten to ``[B, ...]`` tensors.

        Returns ``{"num_samples", "explained_variance", "value_mean", "advantage_mean"}``.
        """
        gamma, lam = self.config.gamma, self.config.gae_lambda
        columns: dict[str, list[np.ndarray]] = {field: [] for field in _SOURCE}
        for data in self._rollouts:
            advantages, returns = generalized_advantage_estimate(
                data["rewards"], data["values"], data["terminated"], data["truncated"], data["valid"],
                gamma, lam)
            for field, array in (("obs", data["obs"][:-1]), ("actions", data["actions"]), ("logp_old", data["logp"]),
                                 ("advantages", advantages), ("returns", returns),
                                 ("values_old", data["values"][:-1])):
                columns[field].append(array)
        masks = [data["valid"] for data in self._rollouts]
        arrays = {field: _gather(columns[field], masks, *self.layout[_SOURCE[field]][:2]) for field in columns}
        # _gather returns fresh writable arrays, so torch.from_numpy shares them without a copy or warning.
        self._batch = Minibatch(**{field: torch.from_numpy(array) for field, array in arrays.items()})
        self._moments = Moments.of(arrays["advantages"])
        return self._info(arrays)

    @property
    def advantage_moments(self) -> Moments:
        """Moments of the advantages of the batch made by the last :meth:`before_gradients`."""
        return self._moments

    @staticmethod
    def _info(arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Summary statistics of the flat batch (NaN for the means of an empty batch)."""
        values, advantages, returns = arrays["values_old"], arrays["advantages"], arrays["returns"]
        empty = returns.size == 0  # np.mean of nothing warns; report NaN instead
        return {"num_samples": float(returns.size),
                "explained_variance": _explained_variance(values, returns),
                "value_mean": float("nan") if empty else float(np.mean(values, dtype=np.float64)),
                "advantage_mean": float("nan") if empty else float(np.mean(advantages, dtype=np.float64))}

    def batches(self, plan: EpochPlan, generator: torch.Generator | None = None,
                advantage_moments: Moments | None = None) -> Iterator[Minibatch]:
        """The round's minibatches for an on-policy ``plan`` (:meth:`generate_batches`)."""
        if not isinstance(plan, EpochPlan):
            raise TypeError(f"rollout storage takes an EpochPlan (epochs x minibatches), got {plan!r}")
        return self.generate_batches(plan.num_epochs, plan.minibatch_size, generator, advantage_moments)

    def after_gradients(self, batch: Minibatch, result: GradientResult) -> None:
        """Nothing to update (a replay memory updates priorities here)."""

    def start_round(self) -> None:
        """A new round replaces the last one: on-policy data is used up within its round."""
        self.clear()

    def generate_batches(self, num_epochs: int, minibatch_size: int, generator: torch.Generator | None = None,
                         advantage_moments: Moments | None = None) -> Iterator[Minibatch]:
        """Yield minibatches: per epoch a fresh permutation split into ``max(1, round(B / minibatch_size))`` chunks.

        Every minibatch carries the advantage statistics of ``advantage_moments`` (the union of
        every GWorker's round, merged by the Learner), else of this storage's whole batch.

        ``torch.tensor_split`` makes the chunks nearly equal (sizes differ by at most 1), so every sample
        is used exactly once per epoch even when B, which varies because invalid steps are dropped, is
        not a multiple of ``minibatch_size``. Nothing is yielded when B == 0.
        """
        if self._batch is None:
            raise RuntimeError("call before_gradients() after the last add_data()")
        if num_epochs < 0 or minibatch_size < 1:
            raise ValueError(f"need num_epochs >= 0 and minibatch_size >= 1, got {num_epochs}, {minibatch_size}")
        size = len(self._batch.returns)
        if size == 0:
            return
        num_minibatches = max(1, round(size / minibatch_size))
        moments = advantage_moments if advantage_moments is not None else self._moments
        stats = (moments.mean, moments.std)
        tensors = self._batch.tensors()
        for _ in range(num_epochs):
            for indices in torch.tensor_split(torch.randperm(size, generator=generator), num_minibatches):
                yield Minibatch(*(tensor[indices] for tensor in tensors), advantage_stats=stats)

    def clear(self) -> None:
        """Drop the GWorker-side rollouts and batch (the CWorker-side buffers are untouched)."""
        self._rollouts, self._num_samples, self._batch = [], 0, None
        self._moments = Moments(0, 0.0, 0.0)

    def update_parameter(self, name: str, value: Any) -> None:
        """Change a runtime parameter (``gamma``, ``gae_lambda``); it applies at the next :meth:`before_gradients`.

        Raises :class:`~colonyrl.config.ConfigError` for an unknown or fixed name or a bad value,
        changing nothing.
        """
        self.config = self.config.check_parameter(name, value)
