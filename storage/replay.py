"""Replay memory for off-policy algorithms: CWorkers send rollouts, each GWorker keeps one memory.

Data path: the CWorker side is the shared :class:`~colonyrl.storage.layout.RolloutBuffer`
(``insert -> finish -> get_data``), exactly as on-policy; the GWorker calls :meth:`ReplayMemory.add_data`
for every rollout it receives, :meth:`~ReplayMemory.before_gradients`, then iterates
:meth:`~ReplayMemory.batches` once per round and hands each batch's new priorities back through
:meth:`~ReplayMemory.after_gradients`.

Models: SB3 ``stable_baselines3/common/buffers.py::ReplayBuffer`` (preallocated numpy ring,
``ReplayBufferSamples`` NamedTuple, uniform sampling with replacement); PER as Schaul et al. 2016,
https://arxiv.org/abs/1511.05952 (proportional, stratified over B segments, IS weights normalised
by the largest weight), as SB3-contrib and OpenAI baselines implement it; tmrl's
``sample_preprocessor`` (augmentation on sampled batches) and its update-to-data cap
``max_training_steps_per_env_step``. n-step targets: :mod:`colonyrl.storage.nstep`. Hindsight
experience replay (``ReplayConfig.her``, 1-step targets only; uniform or prioritized):
:mod:`colonyrl.storage.her`, goals relabelled when this memory samples.

Update-to-data credit (SB3's ``gradient_steps / train_freq``): transitions stored since the last
:meth:`~ReplayMemory.batches` call are credited in that call, ``credit += updates_per_step * added``,
only if the memory then holds ``learning_starts`` transitions (earlier ones are dropped, so no
backlog of catch-up updates when learning starts; the round that reaches ``learning_starts`` is
credited in full, as SB3 trains on the first rollout past it). ``floor(credit)`` batches are
drawn and the fractional rest carries over. The credit is taken when ``batches`` is called, so a
round stopped early does not pile up a backlog either.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from colonyrl.config import Config, ConfigError, import_callable, param
from colonyrl.storage.her import EpisodeIndex, EpisodeTracker, HERConfig, relabel
from colonyrl.storage.layout import (
    Layout,
    RolloutBuffer,
    flat_rollout,
    flatten_tree,
    make_layout,
    observation_keys,
    tree_map,
    unflatten_tree,
)
from colonyrl.storage.nstep import join_tail, nstep_returns, split_tail, stream_breaks
from colonyrl.storage.rollout import Moments
from colonyrl.storage.sum_tree import SumTree

if TYPE_CHECKING:  # colonyrl.agents imports colonyrl.storage: types only, no import cycle
    from colonyrl.agents.base import GradientResult, ReplayPlan

__all__ = ["ReplayConfig", "HERConfig", "ReplayMemory", "ReplayBatch", "MemoryPart", "ReplayCorruptionError", "DATASET_KEYS",
           "write_dataset", "load_dataset", "transition_crc"]

#: The 1-step transitions of an offline dataset (``.npz``), one row each, in insertion order.
DATASET_KEYS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
#: transition_crc's argument order, by 1-step field
_CRC_ORDER = ("obs", "actions", "rewards", "terminated", "truncated", "next_obs")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(Config):
    """Replay memory parameters; ``gamma``, ``alpha`` and ``beta`` may change while training runs."""

    num_steps: int = param(1, ge=1)
    """T: env steps per sub-env per collection round, what a CWorker collects before sending (SB3's train_freq)."""
    memory_size: int = param(1_000_000, ge=1)
    """Capacity in transitions of each memory (one per GWorker)."""
    gamma: float = param(0.99, ge=0.0, le=1.0, runtime=True)
    """Discount of the n-step returns; a change applies to transitions stored afterwards."""
    n_step: int = param(1, ge=1)
    """Lookahead of the stored targets (1: one-step TD)."""
    prioritized: bool = False
    """Prioritized experience replay (Schaul et al. 2016, proportional)."""
    alpha: float = param(0.6, ge=0.0, runtime=True)
    """Priority exponent, p_i = (|delta_i| + epsilon)**alpha; a change applies to priorities set afterwards."""
    beta: float = param(0.4, ge=0.0, le=1.0, runtime=True)
    """Importance-sampling exponent; applies from the next batch."""
    priority_epsilon: float = param(1e-6, gt=0.0)
    """Added to |delta| so that no transition gets priority 0."""
    sample_preprocessor: str | None = None
    """"package.module:function" applied to every sampled ReplayBatch (augmentation, as tmrl's)."""
    dataset_path: str | None = None
    """An .npz dataset (write_dataset) that initialises the memory; requires n_step == 1."""
    crc_debug: bool = False
    """CWorkers checksum every transition; sampled ones are verified (ReplayCorruptionError)."""
    her: HERConfig | None = None
    """Hindsight experience replay of goal-conditioned Dict observations (storage/her.py); n_step 1."""
    #: Runtime parameters the collecting side uses (CWorkers get only these): none.
    collection_parameters: ClassVar[frozenset[str]] = frozenset()
    kind: ClassVar[str] = "replay"

    def _check(self) -> None:
        if self.sample_preprocessor is not None and not _IMPORT_PATH.fullmatch(self.sample_preprocessor):
            raise ConfigError("ReplayConfig.sample_preprocessor", self.sample_preprocessor,
                              "an import path 'package.module:function'")
        if self.dataset_path is not None:
            if not os.path.isfile(self.dataset_path):
                raise ConfigError("ReplayConfig.dataset_path", self.dataset_path,
                                  "an existing .npz file (see write_dataset)")
            if self.n_step > 1:
                # a dataset holds 1-step rows of interleaved streams: the sequences n-step needs are lost
                raise ConfigError("ReplayConfig.n_step", self.n_step, "1 when dataset_path is set")
        if self.her is not None:
            if self.n_step > 1:
                # a relabelled n-step return needs every intermediate reward recomputed for the new goal
                raise ConfigError("ReplayConfig.n_step", self.n_step, "1 when her is set")
            if self.dataset_path is not None:  # datasets hold single-array observations, HER needs a Dict
                raise ConfigError("ReplayConfig.dataset_path", self.dataset_path, "None when her is set")

    def check_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Raise :class:`ConfigError` unless this memory fits the spaces (HER: a goal Dict); the
        Learner calls it before any worker starts."""
        del action_space  # any action space is stored
        if self.her is not None:
            self.her.check_space(observation_space)

    def build(self, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
              extras: Mapping[str, tuple] | None = None) -> ReplayMemory:
        """A memory for ``num_envs`` sub-envs with these *single-env* spaces (extras: name -> ExtraSpec)."""
        preprocessor = None if self.sample_preprocessor is None else import_callable(
            "ReplayConfig.sample_preprocessor", self.sample_preprocessor, "a callable ReplayBatch -> ReplayBatch")
        return ReplayMemory(self, observation_space, action_space, num_envs, extras or {}, preprocessor)


class ReplayBatch(NamedTuple):
    """B sampled transitions, torch tensors on the CPU (model: SB3 ``ReplayBufferSamples``).

    TD target: ``rewards + discounts * (1 - terminated) * Q(next_obs)``.
    """

    #: [B, *obs_shape], the space's dtype (uint8 stays uint8); a dict of them for a Dict space
    obs: torch.Tensor | dict[str, torch.Tensor]
    actions: torch.Tensor  # [B, *act_shape] int64 (Discrete) or float32 (Box)
    rewards: torch.Tensor  # [B] float32, sum_{k<n'} gamma**k r_{t+k}
    #: [B, *obs_shape], obs n' steps later (the real final one after an episode end), as ``obs``
    next_obs: torch.Tensor | dict[str, torch.Tensor]
    terminated: torch.Tensor  # [B] float32, 1.0: a termination within the n' steps, no bootstrap
    discounts: torch.Tensor  # [B] float32, gamma**n'
    weights: torch.Tensor  # [B] float32, importance-sampling weights (ones when uniform)
    indices: torch.Tensor  # [B] int64, memory slots (for update_priorities)


class ReplayCorruptionError(RuntimeError):
    """A stored transition no longer matches the checksum its CWorker computed (``crc_debug``)."""


def _obs_parts(obs: Any) -> list[np.ndarray]:
    """An observation's arrays in order: itself, or a Dict observation's values (a dict, nested
    ones too, or a list of its arrays)."""
    if isinstance(obs, Mapping):
        obs = list(obs.values())
    if isinstance(obs, list | tuple):
        return [part for value in obs for part in _obs_parts(value)]
    return [obs]


def transition_crc(obs: np.ndarray | Mapping[str, np.ndarray] | list[np.ndarray], action: np.ndarray, reward: Any,
                   terminated: Any, truncated: Any,
                   next_obs: np.ndarray | Mapping[str, np.ndarray] | list[np.ndarray]) -> int:
    """``zlib.crc32`` over the bytes of one transition (reward float32, flags bool, as stored); a
    Dict observation's arrays in the order given (the layout's)."""
    crc = 0
    for part in (*_obs_parts(obs), action, np.float32(reward), np.bool_(terminated), np.bool_(truncated),
                 *_obs_parts(next_obs)):
        crc = zlib.crc32(np.ascontiguousarray(part).tobytes(), crc)
    return crc


class ReplayMemory:
    """Both sides of replay: a CWorker's rollout buffer and a GWorker's ring buffer (built lazily).

    Slots ``[0, num_samples)`` are filled; the ring then overwrites the oldest. Build it with
    :meth:`ReplayConfig.build`; ``config`` holds the current :class:`ReplayConfig`. Observations
    keep their dtype (uint8 frames stay uint8, a quarter of float32's memory); a Dict observation
    has one ring per key (fields ``obs/<key>``, ``next_obs/<key>``) and is sampled as a dict of
    tensors. Offline datasets take Box and Discrete observations only. With ``config.her`` every slot
    also holds its episode id and step (``her_episode``, ``her_step``) and sampled goals are
    relabelled (:mod:`colonyrl.storage.her`).
    """

    on_policy: ClassVar[bool] = False

    def __init__(self, config: ReplayConfig, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int, extras: Mapping[str, tuple] | None = None,
                 preprocessor: Callable[[ReplayBatch], ReplayBatch] | None = None) -> None:
        self.config, self.num_envs = config, num_envs
        self.layout: Layout = make_layout(observation_space, action_space, extras or {})
        self._buffer = RolloutBuffer(self.layout, config.num_steps, num_envs)
        self._preprocessor = preprocessor
        self._row_steps = np.zeros(config.num_steps, np.int64)
        self._env_steps = 0  # CWorker side: vector-env steps inserted so far (crc_debug step_index)
        # GWorker side, allocated by the first add_data (CWorkers never allocate it)
        self._arrays: dict[str, np.ndarray] = {}
        self._tree: SumTree | None = None
        self._cursor = self._size = self._uncredited = 0
        self._credit, self._max_priority = 0.0, 1.0
        self._pending: dict[str, dict[str, np.ndarray]] = {}  # source -> carried tail rows (n_step > 1)
        self._sources: list[str] = []  # crc_debug: source id -> name
        self._her_index: EpisodeIndex | None = None  # HER: built when sampling after the ring changed
        #: the layout's observation names: ["obs"], or "obs/<key>" per key of a Dict space, whose
        #: slot fields are "obs/<key>" and "next_obs/<key>" (the observation keeps its dtype)
        self.obs_keys = observation_keys(self.layout)
        self._obs_suffixes = [key[len("obs"):] for key in self.obs_keys]  # "" for a Box, else "/<key>"
        self.dict_obs = self.obs_keys != ["obs"]
        if self.dict_obs and config.dataset_path is not None:
            raise ConfigError("ReplayConfig.dataset_path", config.dataset_path,
                              "None for a Dict observation space (a dataset holds one 'obs' array)")
        act_shape, act_dtype, _ = self.layout["actions"]
        f32, b = np.dtype(np.float32), np.dtype(np.bool_)
        #: slot field -> (trailing shape, dtype)
        self.fields: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            **self._obs_fields("obs"), "actions": (act_shape, act_dtype), "rewards": ((), f32),
            "terminated": ((), b), "discounts": ((), f32), **self._obs_fields("next_obs"),
            "truncated": ((), b)}
        #: the 1-step transition's fields (crc, datasets): the n-step ones when n == 1
        self.one_step = {"obs": "obs", "actions": "actions", "rewards": "rewards", "terminated": "terminated",
                         "truncated": "truncated", "next_obs": "next_obs"}
        if config.n_step > 1:
            self.fields |= {"rewards_1": ((), f32), "terminated_1": ((), b)}
            self.one_step |= {"rewards": "rewards_1", "terminated": "terminated_1"}
            if config.crc_debug:  # a second copy of observations: only when it is checked
                self.fields |= self._obs_fields("next_obs_1")
                self.one_step["next_obs"] = "next_obs_1"
        if config.crc_debug:
            self.fields |= {"crc": ((), np.dtype(np.uint32)), "source": ((), np.dtype(np.int32)),
                            "env": ((), np.dtype(np.int32)), "step_index": ((), np.dtype(np.int64))}
        self._her_functions = self._episodes = None
        if config.her is not None:
            config.her.check_space(observation_space)
            self._her_functions = config.her.functions()
            self._episodes = EpisodeTracker(self.obs_keys)
            self.fields |= {"her_episode": ((), np.dtype(np.int64)), "her_step": ((), np.dtype(np.int64))}

    def _obs_fields(self, name: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The slot fields of one observation column: ``name``, or ``name/<key>`` per Dict key."""
        return {name + suffix: self.layout["obs" + suffix][:2] for suffix in self._obs_suffixes}

    def _obs_slots(self, name: str, index: Any) -> Any:
        """``name``'s observation at slots ``index``: an array, or a dict of them (Dict space)."""
        if not self.dict_obs:
            return self._arrays[name][index]
        return unflatten_tree({name + suffix: self._arrays[name + suffix][index]
                               for suffix in self._obs_suffixes})[name]

    # ------------------------------------------------------------------ CWorker side
    @property
    def step(self) -> int:
        return self._buffer.step

    @property
    def full(self) -> bool:
        return self._buffer.full

    def insert(self, obs: np.ndarray | Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray,
               extras: Mapping[str, np.ndarray] | None = None) -> None:
        """Write one vector-env step (each argument ``[N, ...]``); ``valid`` False for the autoreset step."""
        self._buffer.insert(obs, actions, rewards, terminated, truncated, valid, extras or {})
        self._row_steps[self._buffer.step - 1] = self._env_steps
        self._env_steps += 1

    def finish(self, last_obs: np.ndarray | Mapping[str, np.ndarray],
               bootstrap: Mapping[str, np.ndarray] | None = None) -> None:
        self._buffer.finish(last_obs, bootstrap or {})

    def get_data(self) -> dict[str, np.ndarray]:
        """The rollout (:mod:`colonyrl.storage.layout`); with ``crc_debug`` also ``crc [T, N] uint32`` (per
        transition, :func:`transition_crc` of obs[t], actions[t], rewards[t], terminated[t],
        truncated[t], obs[t+1]) and ``step_index [T] int64`` (this CWorker's env-step count at row t)."""
        data = self._buffer.get_data()
        if self.config.crc_debug:
            steps, envs = data["rewards"].shape
            flat, crc = flatten_tree(data), np.empty((steps, envs), np.uint32)
            obs = [flat[key] for key in self.obs_keys]  # a Dict observation's arrays in layout order
            for t in range(steps):
                for e in range(envs):
                    crc[t, e] = transition_crc([o[t, e] for o in obs], data["actions"][t, e], data["rewards"][t, e],
                                               data["terminated"][t, e], data["truncated"][t, e],
                                               [o[t + 1, e] for o in obs])
            data["crc"], data["step_index"] = crc, self._row_steps[:steps].copy()
        return data

    # ------------------------------------------------------------------ GWorker side
    @property
    def num_samples(self) -> int:
        """Transitions held."""
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def advantage_moments(self) -> Moments:
        return Moments(0, 0.0, 0.0)  # no advantages in replay

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The filled slots of every field (views, for inspection)."""
        return {name: array[:self._size] for name, array in self._arrays.items()}

    @property
    def priorities(self) -> np.ndarray | None:
        """Prioritized: the sampling priorities p_i of the filled slots (read-only), else None."""
        return None if self._tree is None else self._tree.priorities[:self._size]

    def start_round(self) -> None:
        """Nothing: the memory persists across rounds."""

    def add_data(self, data: Mapping[str, np.ndarray], source: str) -> None:
        """Store every valid transition of a rollout from ``source`` (a CWorker's name).

        With ``n_step > 1`` a transition is stored once its n-step lookahead is known: the last
        ``n - 1`` rows wait, per source, to be prepended to that source's next rollout (streams
        are per (source, sub-env); sources may arrive in any order). If the next rollout does not
        continue the stream (its ``obs[0]`` differs from the carried last observation: a restarted
        CWorker), the waiting transitions are cut there, as by a time limit. Extras (none for
        off-policy algorithms) are checked with the layout but not stored.
        """
        steps, flat = flat_rollout(self.layout, data)  # a Dict observation: one array per "obs/<key>"
        piece = {key: flat[key] for key in (*self.obs_keys, "actions", "rewards", "terminated", "truncated", "valid")}
        if self.config.crc_debug:
            envs = data["rewards"].shape[1]
            for key, shape, dtype in (("crc", (steps, envs), np.uint32), ("step_index", (steps,), np.int64)):
                array = data.get(key)
                if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
                    raise ValueError(f"crc_debug: rollout[{key!r}] must be a {np.dtype(dtype)} array of shape "
                                     f"{shape}, got {getattr(array, 'dtype', type(array).__name__)} {np.shape(array)}")
                piece[key] = array
            if source not in self._sources:
                self._sources.append(source)
        self._ensure_allocated()
        if self._episodes is not None:  # HER: episode id and step of every row, per stream
            piece["her_episode"], piece["her_step"] = self._episodes.assign(source, piece)
        needed = np.ones(piece["valid"].shape, bool)  # rows not stored yet
        tail = self._pending.pop(source, None)
        if tail is not None:
            if tail["valid"].shape[1] != needed.shape[1]:
                raise ValueError(f"source {source!r} sent {needed.shape[1]} sub-envs, before {tail['valid'].shape[1]}")
            broken = np.zeros(needed.shape[1], bool)
            for key in self.obs_keys:  # any array of a Dict observation that does not continue
                broken |= stream_breaks(tail[key][-1], piece[key][0])
            if broken.any():  # end those streams at the tail's last row
                cut = np.zeros(tail["valid"].shape, bool)
                cut[-1] = broken
                self._store(tail, tail["needed"] & broken, source, cut=cut)
                tail["needed"] = tail["needed"] & ~broken
            piece, needed = join_tail(tail, piece)
        complete = self._store(piece, needed, source)
        tail = split_tail(piece, needed & piece["valid"] & ~complete, self.config.n_step)
        if tail is not None:
            self._pending[source] = tail

    def _store(self, piece: Mapping[str, np.ndarray], needed: np.ndarray, source: str,
               cut: np.ndarray | None = None) -> np.ndarray:
        """Write the ``needed`` valid rows of ``piece`` whose n-step target is complete; return ``complete``.
        ``cut`` ends episodes for the n-step sums only (the stored 1-step flags stay as sent)."""
        truncated = piece["truncated"] if cut is None else piece["truncated"] | cut
        returns, offset, discounts, done, complete = nstep_returns(
            piece["rewards"], piece["terminated"], truncated, piece["valid"], self.config.gamma, self.config.n_step)
        ts, es = np.nonzero(needed & piece["valid"] & complete)
        columns = {"actions": piece["actions"][ts, es], "rewards": returns[ts, es],
                   "terminated": done[ts, es], "discounts": discounts[ts, es], "truncated": piece["truncated"][ts, es]}
        if self.config.n_step > 1:
            columns |= {"rewards_1": piece["rewards"][ts, es], "terminated_1": piece["terminated"][ts, es]}
        if self._episodes is not None:
            columns |= {"her_episode": piece["her_episode"][ts, es], "her_step": piece["her_step"][ts, es]}
        for suffix in self._obs_suffixes:  # "" for a Box; "/<key>" for each array of a Dict observation
            obs = piece["obs" + suffix]
            columns["obs" + suffix] = obs[ts, es]
            columns["next_obs" + suffix] = obs[ts + offset[ts, es], es]
            if "next_obs_1" + suffix in self.fields:
                columns["next_obs_1" + suffix] = obs[ts + 1, es]
        if self.config.crc_debug:
            columns |= {"crc": piece["crc"][ts, es], "step_index": piece["step_index"][ts], "env": es,
                        "source": np.full(len(ts), self._sources.index(source))}
        self._uncredited += self._write(columns)
        return complete

    def _write(self, columns: Mapping[str, np.ndarray]) -> int:
        """Append rows to the ring (the oldest are overwritten); new rows get the max priority."""
        count, capacity = len(columns["actions"]), self.config.memory_size
        if count == 0:
            return 0
        slots = (self._cursor + np.arange(count)) % capacity
        keep = slice(max(count - capacity, 0), count)  # more rows than slots: the last ones win
        for name, array in self._arrays.items():
            array[slots[keep]] = columns[name][keep]
        if self._tree is not None:
            self._tree.update(slots[keep], np.full(len(slots[keep]), self._max_priority ** self.config.alpha))
        self._cursor = int((self._cursor + count) % capacity)
        self._size = min(self._size + count, capacity)
        self._her_index = None
        return count

    def _ensure_allocated(self) -> None:
        if not self._arrays:
            self._allocate()
            if self.config.dataset_path is not None:
                self._add_dataset(self.config.dataset_path)

    def _allocate(self) -> None:
        """``np.empty``: pages map on first write, so a large ``memory_size`` costs what is filled."""
        size = self.config.memory_size
        self._arrays = {name: np.empty((size, *shape), dtype) for name, (shape, dtype) in self.fields.items()}
        self._tree = SumTree(size) if self.config.prioritized else None

    def _add_dataset(self, path: str) -> None:
        """Initialise from an offline dataset: counts toward ``learning_starts``, earns no update credit."""
        self.add_transitions(load_dataset(path, self.layout), f"dataset:{path}")

    def add_transitions(self, data: Mapping[str, np.ndarray], source: str) -> None:
        """Store 1-step transitions (``DATASET_KEYS`` columns, oldest first), as an offline dataset:
        they count toward ``learning_starts`` and earn no update credit (saved memories resumed onto
        other worker counts go through :meth:`seed` instead). Only for ``n_step == 1`` memories (the
        streams n-step targets need are not in the columns)."""
        if self.config.n_step != 1:
            raise ValueError(f"add_transitions needs n_step == 1 (this memory: {self.config.n_step})")
        if self.dict_obs:
            raise ValueError("add_transitions (offline datasets) needs a Box or Discrete observation space, "
                             f"this memory's is a Dict ({self.obs_keys})")
        if not self._arrays:
            self._allocate()
        rows = len(data["obs"])
        if rows == 0:
            return
        columns = {**{key: data[key] for key in DATASET_KEYS}, "discounts": np.full(rows, self.config.gamma, np.float32)}
        if self.config.crc_debug:
            name = source
            self._sources.append(name)
            crc = [transition_crc(*(data[key][i] for key in _CRC_ORDER)) for i in range(rows)]
            columns |= {"crc": np.array(crc, np.uint32),
                        "source": np.full(rows, self._sources.index(name)), "env": np.zeros(rows, np.int32),
                        "step_index": np.arange(rows)}
        self._write(columns)

    def before_gradients(self) -> dict[str, float]:
        """Statistics after the round's adds; the credit itself is taken by :meth:`batches`."""
        self._ensure_allocated()
        return {"memory_size": float(self._size), "transitions_added": float(self._uncredited),
                "transitions_waiting": float(sum(int(c["needed"].sum()) for c in self._pending.values()))}

    def batches(self, plan: ReplayPlan, generator: torch.Generator | None = None,
                advantage_moments: Moments | None = None) -> Iterator[ReplayBatch]:
        """``floor(credit)`` batches of ``plan.batch_size`` once the memory holds ``plan.learning_starts``
        (credit semantics: module docstring). Call it once per round, after :meth:`before_gradients`."""
        del advantage_moments  # replay has no advantages
        if plan.learning_starts > self.config.memory_size:
            raise ValueError(f"learning_starts={plan.learning_starts} exceeds memory_size="
                             f"{self.config.memory_size}: learning would never start")
        self._ensure_allocated()
        added, self._uncredited = self._uncredited, 0
        if self._size == 0 or self._size < plan.learning_starts:
            return iter(())
        self._credit += plan.updates_per_step * added
        count = math.floor(self._credit + 1e-9)  # 1e-9: 10 x 0.1 is one update, not 0.999... of one
        self._credit -= count
        return (self.sample(plan.batch_size, generator) for _ in range(count))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """One batch: uniform with replacement, or stratified proportional to the priorities."""
        if self._size == 0:
            raise RuntimeError("the replay memory is empty")
        if self._tree is not None:
            # one draw in each of B equal segments of [0, total) (Schaul et al. 2016, appendix B.2.1)
            uniform = torch.rand(batch_size, generator=generator, dtype=torch.float64).numpy()
            indices = self._tree.find((np.arange(batch_size) + uniform) * (self._tree.total / batch_size))
            # w_i = (N P(i))**-beta / max_j w_j = (p_i / min_j p_j)**-beta
            weights = (self._tree[indices] / self._tree.min) ** -self.config.beta
        else:
            indices = torch.randint(self._size, (batch_size,), generator=generator).numpy()
            weights = np.ones(batch_size)
        if self.config.crc_debug:
            self._verify(indices)
        a = self._arrays
        batch = ReplayBatch(obs=tree_map(torch.from_numpy, self._obs_slots("obs", indices)),
                            actions=torch.from_numpy(a["actions"][indices]),
                            rewards=torch.from_numpy(a["rewards"][indices]),
                            next_obs=tree_map(torch.from_numpy, self._obs_slots("next_obs", indices)),
                            terminated=torch.from_numpy(a["terminated"][indices].astype(np.float32)),
                            discounts=torch.from_numpy(a["discounts"][indices]),
                            weights=torch.from_numpy(weights.astype(np.float32)),
                            indices=torch.from_numpy(indices.astype(np.int64)))
        if self.config.her is not None:
            batch = relabel(self.config.her, self._her_functions, batch, indices, a, self._episode_index(), generator)
        return batch if self._preprocessor is None else self._preprocessor(batch)

    def _episode_index(self) -> EpisodeIndex:
        if self._her_index is None:
            self._her_index = EpisodeIndex(self._arrays["her_episode"][:self._size], self._arrays["her_step"][:self._size])
        return self._her_index

    def _verify(self, indices: np.ndarray) -> None:
        a, one = self._arrays, self.one_step
        for i in np.unique(indices):
            crc = transition_crc(*(self._obs_slots(one[key], i) if key in ("obs", "next_obs") else a[one[key]][i]
                                   for key in _CRC_ORDER))
            if crc != a["crc"][i]:
                source = int(a["source"][i])
                name = self._sources[source] if 0 <= source < len(self._sources) else f"<unknown id {source}>"
                raise ReplayCorruptionError(
                    f"replay slot {i}: the transition from worker {name!r}, sub-env {a['env'][i]}, "
                    f"step_index {a['step_index'][i]} fails its CRC32 (sent {a['crc'][i]:08x}, "
                    f"now {crc:08x}): corrupted in transit or in memory")

    def after_gradients(self, batch: ReplayBatch, result: GradientResult) -> None:
        """Prioritized: the batch's new priorities (``result.priorities``, e.g. |TD error|)."""
        if self.config.prioritized and result.priorities is not None:
            priorities = result.priorities
            if isinstance(priorities, torch.Tensor):
                priorities = priorities.detach().cpu().numpy()
            self.update_priorities(batch.indices.cpu().numpy(), priorities)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """p_i = (|priority_i| + epsilon)**alpha. A slot overwritten since it was sampled gets the
        old transition's priority (as SB3-contrib and baselines: at most one round stale)."""
        if self._tree is None:
            raise RuntimeError("update_priorities needs prioritized=True (and a first add_data)")
        indices = np.asarray(indices, np.int64).reshape(-1)
        raw = np.abs(np.asarray(priorities, np.float64)).reshape(-1) + self.config.priority_epsilon
        if raw.shape != indices.shape or not np.all(np.isfinite(raw)):
            raise ValueError(f"need {indices.size} finite priorities, got {np.shape(priorities)}")
        if indices.size and (indices.min() < 0 or indices.max() >= self._size):
            raise IndexError(f"indices must be filled slots [0, {self._size})")
        self._tree.update(indices, raw ** self.config.alpha)
        self._max_priority = max(self._max_priority, float(raw.max(initial=0.0)))

    def update_parameter(self, name: str, value: Any) -> None:
        """Change ``gamma`` (new n-step targets), ``alpha`` (priorities set afterwards) or ``beta``
        (next batch). Raises :class:`~colonyrl.config.ConfigError`, changing nothing, if invalid."""
        self.config = self.config.check_parameter(name, value)

    # ------------------------------------------------------------------ checkpoints and datasets
    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the filled memory and every counter: tensors and primitives only
        (``torch.load(weights_only=True)`` reads it)."""
        def tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
            return {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}
        return {"memory_size": self.config.memory_size, "n_step": self.config.n_step,
                "prioritized": self.config.prioritized,
                "allocated": bool(self._arrays), "cursor": self._cursor, "size": self._size,
                "credit": self._credit, "uncredited": self._uncredited, "max_priority": self._max_priority,
                "env_steps": self._env_steps, "sources": list(self._sources), "arrays": tensors(self.arrays),
                "priorities": None if self._tree is None else torch.from_numpy(self.priorities.copy()),
                "pending": {source: tensors(carry) for source, carry in self._pending.items()},
                "her": None if self._episodes is None else self._episodes.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` exactly (the dataset is not read again: the state holds it)."""
        for key in ("memory_size", "n_step", "prioritized"):
            if state[key] != getattr(self.config, key):
                raise ValueError(f"state has {key}={state[key]}, this memory {getattr(self.config, key)}")
        if state["allocated"] and set(state["arrays"]) != set(self.fields):
            raise ValueError(f"state holds fields {sorted(state['arrays'])}, this memory {sorted(self.fields)} "
                             "(crc_debug or her differs?)")
        if (state.get("her") is None) != (self._episodes is None):
            raise ValueError(f"state has her={state.get('her') is not None}, this memory {self._episodes is not None}")
        self._arrays, self._tree, size, self._her_index = {}, None, int(state["size"]), None
        if state["allocated"]:
            self._allocate()
            for name, tensor in state["arrays"].items():
                self._arrays[name][:size] = tensor.numpy()
            if self._tree is not None:
                self._tree.update(np.arange(size), state["priorities"].numpy())
        self._cursor, self._size, self._uncredited = int(state["cursor"]), size, int(state["uncredited"])
        self._credit, self._max_priority = float(state["credit"]), float(state["max_priority"])
        self._env_steps, self._sources = int(state["env_steps"]), list(state["sources"])
        self._pending = {source: {key: tensor.numpy().copy() for key, tensor in carry.items()}
                         for source, carry in state["pending"].items()}
        if self._episodes is not None:
            self._episodes.load_state_dict(state["her"])

    @staticmethod
    def redistribute(memories: list[ReplayMemory], parts: int) -> list[MemoryPart]:
        """The stored transitions of ``memories`` dealt into ``parts`` groups, for a resume onto
        ``parts`` GWorkers (:meth:`seed` takes one each): each memory's slots, oldest first, split in
        ``parts`` contiguous chunks, chunk i of every memory to group i. The slots go as stored (the
        n-step returns, discounts and lookahead observations, the crc columns) with their priorities,
        so no stored transition is lost unless a group exceeds ``memory_size`` (its newest are kept).

        Not carried, with ``n_step > 1``: each source's waiting tail (the transitions of its last
        ``n - 1`` steps per sub-env, whose n-step targets were not known yet; the
        ``transitions_waiting`` metric), since no new CWorker continues the old env streams.
        """
        sources = [name for memory in memories for name in memory._sources]  # crc_debug: ids into one list
        groups: list[list[tuple[dict[str, np.ndarray], np.ndarray | None]]] = [[] for _ in range(parts)]
        offset = episodes = 0
        for memory in memories:
            order = memory._oldest_first()
            columns = {name: array[order] for name, array in memory._arrays.items()}
            if "source" in columns:
                columns["source"] = columns["source"] + offset
            offset += len(memory._sources)
            if "her_episode" in columns:  # HER: episode ids of different memories must not meet
                columns["her_episode"] = columns["her_episode"] + episodes
                episodes += memory._episodes.next_episode
            priorities = None if memory._tree is None else memory._tree.priorities[order]
            bounds = np.linspace(0, len(order), parts + 1).astype(int)
            for group, lo, hi in zip(groups, bounds[:-1], bounds[1:], strict=True):
                if hi > lo:
                    group.append(({name: array[lo:hi] for name, array in columns.items()},
                                  None if priorities is None else priorities[lo:hi]))
        max_priority = max(memory._max_priority for memory in memories)
        out = []
        for group in groups:
            if not group:  # nothing stored for it: it starts empty
                out.append(MemoryPart({}, None, max_priority, sources))
                continue
            columns = {name: np.concatenate([c[name] for c, _ in group]) for name in group[0][0]}
            priorities = None if group[0][1] is None else np.concatenate([p for _, p in group])
            out.append(MemoryPart(columns, priorities, max_priority, sources))
        return out

    def seed(self, part: MemoryPart) -> None:
        """Start with one part of :meth:`redistribute` (before any rollout): its transitions count
        toward ``learning_starts`` and earn no update credit, as a dataset's."""
        if not part.columns:
            return
        if set(part.columns) != set(self.fields):
            raise ValueError(f"the part holds fields {sorted(part.columns)}, this memory {sorted(self.fields)}")
        if not self._arrays:
            self._allocate()
        keep = slice(max(len(part.columns["rewards"]) - self.config.memory_size, 0), None)  # the newest fit
        columns = {name: array[keep] for name, array in part.columns.items()}
        if "source" in columns:  # crc_debug: ids into this memory's list of source names
            columns["source"] = columns["source"] + len(self._sources)
        if self._episodes is not None and len(columns["her_episode"]):  # apart from this memory's own
            columns["her_episode"] = columns["her_episode"] + self._episodes.next_episode
            self._episodes.next_episode = int(columns["her_episode"].max()) + 1
        self._sources.extend(part.sources)
        start = self._cursor
        count = self._write(columns)
        if self._tree is not None and part.priorities is not None and count:
            self._tree.update((start + np.arange(count)) % self.config.memory_size, part.priorities[keep])
            self._max_priority = max(self._max_priority, part.max_priority)

    def _oldest_first(self) -> np.ndarray:
        """Slot indices of the stored transitions, oldest first (the ring wraps once full)."""
        order = np.arange(self._size if self._arrays else 0)
        if self._size == self.config.memory_size:
            order = (order + self._cursor) % self._size
        return order

    def transitions(self) -> dict[str, np.ndarray]:
        """The stored 1-step transitions (``DATASET_KEYS``), oldest first (copies)."""
        if self.dict_obs:  # DATASET_KEYS hold one "obs" array
            raise ValueError(f"a memory of Dict observations ({self.obs_keys}) has no single-array transitions")
        if self.config.n_step > 1 and self.one_step["next_obs"] == "next_obs":
            raise ValueError("an n_step > 1 memory keeps the 1-step next observations only with crc_debug=True")
        if not self._arrays:  # never allocated: empty columns of the right shapes
            return {key: np.empty((0, *self.fields[key][0]), self.fields[key][1]) for key in DATASET_KEYS}
        return {key: self._arrays[self.one_step[key]][self._oldest_first()] for key in DATASET_KEYS}


class MemoryPart(NamedTuple):
    """One GWorker's share of saved memories (:meth:`ReplayMemory.redistribute`), oldest first."""

    columns: dict[str, np.ndarray]  # every slot field as stored (``ReplayMemory.fields``); {}: nothing
    priorities: np.ndarray | None  # prioritized: the sum tree's p_i (already ``** alpha``)
    max_priority: float  # the largest raw priority seen: new transitions get it
    sources: list[str]  # crc_debug: the names the ``source`` column indexes


def write_dataset(memory: ReplayMemory, path: str | os.PathLike) -> None:
    """Write ``memory``'s 1-step transitions to ``path`` as an ``.npz`` (no pickled objects)."""
    if memory.dict_obs:
        raise ValueError(f"datasets hold one 'obs' array: a memory of Dict observations ({memory.obs_keys}) "
                         "cannot be written as one")
    with open(path, "wb") as file:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(file, **memory.transitions())


def load_dataset(path: str | os.PathLike, layout: Layout | None = None) -> dict[str, np.ndarray]:
    """Read and validate an ``.npz`` dataset (``DATASET_KEYS``; against ``layout`` when given)."""
    try:
        with np.load(path, allow_pickle=False) as file:
            missing = [key for key in DATASET_KEYS if key not in file.files]
            if missing:
                raise ValueError(f"dataset {path}: missing keys {missing}; expected {DATASET_KEYS}")
            data = {}
            for key in DATASET_KEYS:
                try:
                    data[key] = file[key]
                except ValueError as error:  # e.g. an object array: it would need pickle
                    raise ValueError(f"dataset {path}: {key!r} cannot be read without pickle ({error})") from error
    except (OSError, EOFError) as error:
        raise ValueError(f"dataset {path}: not a readable .npz file ({error})") from error
    rows = len(data["obs"]) if data["obs"].ndim else 0
    expected = {"rewards": ((), np.dtype(np.float32)), "terminated": ((), np.dtype(np.bool_)),
                "truncated": ((), np.dtype(np.bool_)), "next_obs": (data["obs"].shape[1:], data["obs"].dtype)}
    if layout is not None:
        expected |= {key: layout[key][:2] for key in ("obs", "actions")} | {"next_obs": layout["obs"][:2]}
    for key in DATASET_KEYS:
        array = data[key]
        if array.ndim == 0 or len(array) != rows:
            raise ValueError(f"dataset {path}: {key!r} has shape {array.shape}, expected {rows} rows as 'obs'")
        if key in expected and (array.shape[1:], array.dtype) != expected[key]:
            shape, dtype = expected[key]
            raise ValueError(f"dataset {path}: {key!r} must be {dtype} [{rows}, *{shape}], got "
                             f"{array.dtype} {array.shape}")
    return data
