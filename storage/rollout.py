"""On-policy rollout storage: CWorkers fill it step by step, GWorkers turn it into minibatches.

Data path (see ``colonyrl.scheme``): ``CWorker.collect`` calls :meth:`RolloutStorage.insert` once per
vector-env step, then :meth:`~RolloutStorage.finish` and :meth:`~RolloutStorage.get_data` (a dict of
numpy arrays in the layout of ``storage/layout.py``, time-major ``[T, N, ...]``, with PPO's extras
``logp`` and ``values``). The GWorker calls :meth:`~RolloutStorage.add_data` for every rollout it
receives, :meth:`~RolloutStorage.before_gradients` (GAE and its statistics) and iterates
:meth:`~RolloutStorage.batches`, which builds what the plan needs once per round: for an
``EpochPlan`` flat shuffled :class:`Minibatch` es of ``[B, ...]`` tensors without the invalid
autoreset steps, for a ``SequencePlan`` time-major :class:`SequenceBatch` es of whole env columns
(V-trace, recurrent policies), never shuffled across time. A Dict observation is a dict of arrays
(tensors in the batches), one per key; uint8 observations stay uint8 throughout.

Models: SB3 ``stable_baselines3/common/buffers.py::RolloutBuffer`` (``RolloutBufferSamples`` NamedTuple,
``get(batch_size)``), CleanRL ``ppo.py`` (one ``randperm`` per epoch); for sequences RLlib's
time-major IMPALA batches and Sample Factory's ``recurrence`` chunks
(``sample_factory/algo/learning/learner.py::_get_minibatches``). The storage holds no reference to
the actor or the algorithm.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.base import EpochPlan, GradientResult, SequencePlan
from colonyrl.config import Config, ConfigError, param
from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.layout import (
    BASE_KEYS,
    RolloutBuffer,
    flat_rollout,
    is_obs_key,
    make_layout,
    observation_keys,
    tree_map,
    unflatten_tree,
)

__all__ = ["RolloutConfig", "RolloutStorage", "Minibatch", "SequenceBatch", "Moments"]


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

    #: [B, *obs_shape], the space's dtype (uint8 frames stay uint8); a dict of them for a Dict space
    obs: torch.Tensor | dict[str, torch.Tensor]
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


class SequenceBatch(NamedTuple):
    """C sequences of L consecutive steps, time-major, torch tensors on the CPU (``SequencePlan``).

    Each column is one env's steps in time order (a whole rollout, or a chunk of
    ``sequence_length`` steps); a column shorter than L is padded at its end with invalid steps
    (``valid`` False, zero rewards, never an episode end) whose observations repeat its last real
    one, so ``obs[L]`` of a column holds its real next observation wherever it ends. Autoreset
    steps stay in place (``valid`` False): they are not transitions.
    """

    #: [L+1, C, *obs_shape]: obs[t+1] is step t's next observation; a dict of them for a Dict space
    obs: torch.Tensor | dict[str, torch.Tensor]
    actions: torch.Tensor  # [L, C] int64 (Discrete) or [L, C, *act_shape] float32 (Box)
    rewards: torch.Tensor  # [L, C] float32
    terminated: torch.Tensor  # [L, C] bool
    truncated: torch.Tensor  # [L, C] bool
    valid: torch.Tensor  # [L, C] bool: False for autoreset steps and padding
    logp_old: torch.Tensor  # [L, C] float32, log-prob under the collecting (behaviour) policy
    values_old: torch.Tensor  # [L+1, C] float32, V(obs) under the collecting policy
    advantages: torch.Tensor  # [L, C] float32, GAE with the collecting policy's values (0 where invalid)
    returns: torch.Tensor  # [L, C] float32, advantages + values_old[:L]
    #: Valid steps in the batch: what its gradients are weighted by (agents/base.py ``num_samples``).
    num_samples: int
    #: The storage's discount factor (its ``gamma`` at :meth:`RolloutStorage.before_gradients`), for
    #: targets an algorithm computes with its current networks (V-trace): one gamma for GAE and them.
    gamma: float
    #: (mean, std) of the round's GAE advantages, as :attr:`Minibatch.advantage_stats`.
    advantage_stats: tuple[float, float] | None = None
    #: The policy's other declared extras, name -> ``[L, C, *shape]``, cut into columns as the
    #: steps (zeros as padding): a recurrent policy's per-step ``state`` and ``episode_start``, so
    #: each column starts from the state its CWorker had at its first step (agents/recurrent.py).
    extras: dict[str, torch.Tensor] | None = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensor fields, in field order (not ``extras``)."""
        return self[:10]


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


def _take(tensor: Any, index: Any) -> Any:
    """``tensor[index]``, or that of every tensor of a Dict observation."""
    return tree_map(lambda t: t[index], tensor)


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
    """Preallocated ``[T, N, ...]`` numpy buffers (CWorker side); flat ``[B, ...]`` or time-major
    ``[L, C, ...]`` batches (GWorker side).

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
        #: the layout's observation names: ["obs"], or "obs/<key>" per key of a Dict space
        self.obs_keys = observation_keys(self.layout)
        self._buffer = RolloutBuffer(self.layout, config.num_steps, num_envs)
        self._rollouts: list[dict[str, np.ndarray]] = []
        self._num_samples = 0
        self._gae: list[tuple[np.ndarray, np.ndarray]] | None = None  # per rollout, by before_gradients
        self._scalars: dict[str, np.ndarray] = {}  # flat advantages, returns, values_old of the valid steps
        self._batch: Minibatch | None = None  # built on first use (EpochPlan)
        self._sequences: tuple[int | None, SequenceBatch] | None = None  # (sequence_length, batch), on first use
        self._moments = Moments(0, 0.0, 0.0)
        self._gamma = config.gamma  # the gamma of the last before_gradients

    # ------------------------------------------------------------------ CWorker side
    @property
    def step(self) -> int:
        """Rows filled since the last :meth:`get_data`."""
        return self._buffer.step

    @property
    def full(self) -> bool:
        return self._buffer.full

    def insert(self, obs: np.ndarray | Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray,
               extras: Mapping[str, np.ndarray]) -> None:
        """Write one step (each argument ``[N, ...]``); ``extras`` holds ``logp`` and ``values`` = V(obs).
        ``valid`` is False for the autoreset step right after an episode end."""
        self._buffer.insert(obs, actions, rewards, terminated, truncated, valid, extras)

    def finish(self, last_obs: np.ndarray | Mapping[str, np.ndarray], bootstrap: Mapping[str, np.ndarray]) -> None:
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
        _, flat = flat_rollout(self.layout, data)  # a Dict observation: one array per "obs/<key>"
        self._rollouts.append(flat)
        self._num_samples += int(np.count_nonzero(flat["valid"]))
        self._unprepare()  # the batches no longer cover all data

    def before_gradients(self) -> dict[str, float]:
        """GAE per rollout with the current gamma/gae_lambda, and its statistics over the valid steps.

        The batches themselves are built when the plan asks for them (:meth:`batches`): flat ``[B, ...]``
        tensors without the invalid steps, or time-major sequences.
        Returns ``{"num_samples", "explained_variance", "value_mean", "advantage_mean"}``.
        """
        gamma, lam = self.config.gamma, self.config.gae_lambda
        self._unprepare()
        self._gamma = gamma
        self._gae = [generalized_advantage_estimate(data["rewards"], data["values"], data["terminated"],
                                                    data["truncated"], data["valid"], gamma, lam)
                     for data in self._rollouts]
        masks = [data["valid"] for data in self._rollouts]
        f32 = np.dtype(np.float32)
        self._scalars = {
            "advantages": _gather([adv for adv, _ in self._gae], masks, (), f32),
            "returns": _gather([ret for _, ret in self._gae], masks, (), f32),
            "values_old": _gather([data["values"][:-1] for data in self._rollouts], masks, (), f32)}
        self._moments = Moments.of(self._scalars["advantages"])
        return self._info(self._scalars)

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

    def batches(self, plan: EpochPlan | SequencePlan, generator: torch.Generator | None = None,
                advantage_moments: Moments | None = None) -> Iterator[Minibatch] | Iterator[SequenceBatch]:
        """The round's batches for an on-policy ``plan``: :meth:`generate_batches` (``EpochPlan``) or
        :meth:`generate_sequences` (``SequencePlan``)."""
        if isinstance(plan, SequencePlan):
            return self.generate_sequences(plan.num_epochs, plan.minibatch_size, plan.sequence_length, generator,
                                           advantage_moments)
        if not isinstance(plan, EpochPlan):
            raise TypeError(f"rollout storage takes an EpochPlan (epochs x minibatches) or a SequencePlan "
                            f"(epochs x time-major batches), got {plan!r}")
        return self.generate_batches(plan.num_epochs, plan.minibatch_size, generator, advantage_moments)

    def after_gradients(self, batch: Minibatch | SequenceBatch, result: GradientResult) -> None:
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
        batch = self._flat_batch()
        if num_epochs < 0 or minibatch_size < 1:
            raise ValueError(f"need num_epochs >= 0 and minibatch_size >= 1, got {num_epochs}, {minibatch_size}")
        size = len(batch.returns)
        if size == 0:
            return
        num_minibatches = max(1, round(size / minibatch_size))
        stats = self._stats(advantage_moments)
        tensors = batch.tensors()
        for _ in range(num_epochs):
            for indices in torch.tensor_split(torch.randperm(size, generator=generator), num_minibatches):
                yield Minibatch(*(_take(tensor, indices) for tensor in tensors),
                                advantage_stats=stats)

    def generate_sequences(self, num_epochs: int, minibatch_size: int, sequence_length: int | None = None,
                           generator: torch.Generator | None = None,
                           advantage_moments: Moments | None = None) -> Iterator[SequenceBatch]:
        """Yield time-major batches of whole columns: per epoch a fresh permutation of the C columns
        (never of the time axis) split into ``max(1, round(C x L / minibatch_size))`` groups (at most C).

        The columns are each rollout's envs (L = the longest rollout of the round), or with
        ``sequence_length`` each env's chunks of that many steps; shorter columns are padded with
        invalid steps (:class:`SequenceBatch`). Batches without a valid step are skipped; nothing
        is yielded for an empty round.
        """
        if num_epochs < 0 or minibatch_size < 1 or (sequence_length is not None and sequence_length < 1):
            raise ValueError(f"need num_epochs >= 0, minibatch_size >= 1 and sequence_length None or >= 1, "
                             f"got {num_epochs}, {minibatch_size}, {sequence_length}")
        batch = self._sequence_batch(sequence_length)
        length, columns = batch.rewards.shape[:2]
        if batch.num_samples == 0:
            return
        num_batches = min(columns, max(1, round(columns * length / minibatch_size)))
        stats = self._stats(advantage_moments)
        tensors = batch.tensors()
        for _ in range(num_epochs):
            for indices in torch.tensor_split(torch.randperm(columns, generator=generator), num_batches):
                count = int(torch.count_nonzero(batch.valid[:, indices]))
                if count:
                    yield SequenceBatch(*(_take(tensor, (slice(None), indices)) for tensor in tensors),
                                        num_samples=count,
                                        gamma=batch.gamma, advantage_stats=stats,
                                        extras={k: v[:, indices] for k, v in (batch.extras or {}).items()})

    def _stats(self, advantage_moments: Moments | None) -> tuple[float, float]:
        moments = advantage_moments if advantage_moments is not None else self._moments
        return moments.mean, moments.std

    def _flat_batch(self) -> Minibatch:
        """The valid steps of every rollout as one flat ``[B, ...]`` batch (built once per round)."""
        if self._gae is None:
            raise RuntimeError("call before_gradients() after the last add_data()")
        if self._batch is None:
            masks = [data["valid"] for data in self._rollouts]
            fields = {key: key for key in self.obs_keys} | {"actions": "actions", "logp_old": "logp"}
            # _gather returns fresh writable arrays: torch.from_numpy shares them without a copy or warning.
            arrays = {field: torch.from_numpy(_gather([data[key][:len(data["valid"])] for data in self._rollouts],
                                                      masks, *self.layout[key][:2]))
                      for field, key in fields.items()}
            self._batch = Minibatch(**unflatten_tree(arrays),  # "obs/<key>" -> obs[key]
                                    **{field: torch.from_numpy(array) for field, array in self._scalars.items()})
        return self._batch

    def _sequence_batch(self, sequence_length: int | None) -> SequenceBatch:
        """Every rollout's columns (or chunks of ``sequence_length`` steps) side by side, time-major,
        padded to one length L with invalid steps (built once per round and length)."""
        if self._gae is None:
            raise RuntimeError("call before_gradients() after the last add_data()")
        if self._sequences is not None and self._sequences[0] == sequence_length:
            return self._sequences[1]
        steps = [len(data["valid"]) for data in self._rollouts]
        length = sequence_length or max(1, *steps)  # 1 for a round without steps (nothing is yielded)
        # (rollout, first step, steps) of every chunk; each chunk is N_i columns
        chunks = [(i, start, min(length, t - start)) for i, t in enumerate(steps) for start in range(0, t, length)]
        columns = sum(self._rollouts[i]["valid"].shape[1] for i, _, _ in chunks)
        # the observation ("obs", or "obs/<key>" per key of a Dict space: nested again below), then the rest
        fields: dict[str, str | None] = {key: key for key in self.obs_keys}
        fields |= {"actions": "actions", "rewards": "rewards", "terminated": "terminated",
                   "truncated": "truncated", "valid": "valid", "logp_old": "logp", "values_old": "values",
                   "advantages": None, "returns": None}
        # the other extras the policy declared (e.g. a recurrent policy's state), under their own names
        other = [key for key in self.layout
                 if key not in BASE_KEYS and not is_obs_key(key) and key not in ("logp", "values")]
        fields.update({key: key for key in other})
        out = {}
        for field, key in fields.items():
            trailing, dtype, extra = self.layout[key] if key is not None else ((), np.dtype(np.float32), 0)
            out[field] = np.zeros((length + extra, columns, *trailing), dtype=dtype)  # padding: zeros, False
        col = 0
        for i, start, n in chunks:
            data, (advantages, returns) = self._rollouts[i], self._gae[i]
            cols = slice(col, col + data["valid"].shape[1])
            for field, key in fields.items():
                source = {"advantages": advantages, "returns": returns}[field] if key is None else data[key]
                long = field == "values_old" or is_obs_key(field)  # T+1-row arrays: their next row too
                rows = n + (1 if long else 0)
                out[field][:rows, cols] = source[start:start + rows]
                if long:  # padding repeats the last real next observation
                    out[field][rows:, cols] = source[start + rows - 1]
            col = cols.stop
        tensors = unflatten_tree({field: torch.from_numpy(array) for field, array in out.items()})
        extras = {key: tensors.pop(key) for key in other}
        batch = SequenceBatch(**tensors, num_samples=int(np.count_nonzero(out["valid"])), gamma=self._gamma,
                              extras=extras)
        self._sequences = (sequence_length, batch)
        return batch

    def _unprepare(self) -> None:
        self._gae, self._scalars, self._batch, self._sequences = None, {}, None, None

    def clear(self) -> None:
        """Drop the GWorker-side rollouts and batch (the CWorker-side buffers are untouched)."""
        self._rollouts, self._num_samples = [], 0
        self._unprepare()
        self._moments = Moments(0, 0.0, 0.0)

    def update_parameter(self, name: str, value: Any) -> None:
        """Change a runtime parameter (``gamma``, ``gae_lambda``); it applies at the next :meth:`before_gradients`.

        Raises :class:`~colonyrl.config.ConfigError` for an unknown or fixed name or a bad value,
        changing nothing.
        """
        self.config = self.config.check_parameter(name, value)
