"""The contracts every algorithm meets; the engine (``scheme/``) reads only these.

Two sides (DESIGN: Contracts; model: RLlib's ``Learner.compute_gradients`` / ``apply_gradients``,
tmrl's ``ActorModule`` for the acting side):

* A :class:`Policy` acts: CWorkers hold one, built by ``AlgorithmConfig.build_policy`` with the
  acting weights only (no optimizer, no critic or target nets unless acting needs them). It
  returns the env action, the action to store and the per-step *extras* it declares in
  ``extras`` (PPO: log-prob and value; SAC/TD3/DDPG/DQN: none), from which storage derives its
  layout.
* An :class:`Algorithm` learns: GWorkers call ``compute_gradients`` on a batch; the Learner (or,
  decentralized, every replica) calls ``apply_gradients`` with the combined gradients, which
  steps *every* optimizer the algorithm has and updates its target networks, so N GWorkers equal
  one. Gradients travel as one array per tensor of ``parameters()``, in that fixed order.
  ``update_plan()`` says what the GWorker's loop (fill -> batch -> gradients) means for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

__all__ = ["ExtraSpec", "ActOut", "EpochPlan", "ReplayPlan", "UpdatePlan", "GradientResult", "Batch", "Policy",
           "Algorithm", "AlgorithmConfig"]


class ExtraSpec(NamedTuple):
    """One per-step extra a policy returns with each action (stored beside the transition)."""

    shape: tuple[int, ...]  # trailing shape per env, () for a scalar
    dtype: str  # numpy dtype name, e.g. "float32"
    #: True: one more row, for the observation after the last step (PPO's V(s_T) bootstrap),
    #: which ``Policy.bootstrap`` returns.
    bootstrap: bool = False


class ActOut(NamedTuple):
    """What ``Policy.act`` returns for a batch of N observations (all numpy)."""

    action: np.ndarray  # stored: int64 [N] (Discrete), float32 [N, *shape] (Box; raw sample for PPO)
    env_action: np.ndarray  # sent to env.step (clipped, squashed or offset as the policy needs)
    extras: dict[str, np.ndarray]  # name -> [N, *ExtraSpec.shape], one entry per declared extra


class EpochPlan(NamedTuple):
    """On-policy: every round is used up in ``num_epochs`` passes of minibatches, then dropped."""

    num_epochs: int
    minibatch_size: int


class ReplayPlan(NamedTuple):
    """Off-policy: sample ``batch_size`` transitions from the memory once it holds
    ``learning_starts``; ``updates_per_step`` gradient steps per transition stored (the
    update-to-data ratio, a cap as tmrl's ``max_training_steps_per_env_step``: SB3's
    ``gradient_steps / train_freq``)."""

    batch_size: int
    learning_starts: int
    updates_per_step: float


UpdatePlan = EpochPlan | ReplayPlan


class GradientResult(NamedTuple):
    """What ``compute_gradients`` returns (typed: no control signals inside ``info``)."""

    grads: list[torch.Tensor] | None  # aligned with parameters(); None = no update from this batch
    info: dict[str, float]  # loss terms and statistics, for metrics only
    #: New sampling priorities of the batch's transitions (prioritized replay: |TD error|), set by
    #: algorithms that compute them; the storage that sampled the batch uses them.
    priorities: np.ndarray | None = None
    #: The algorithm asks to end the round here (PPO's target_kl early stop).
    stop_round: bool = False


@runtime_checkable
class Batch(Protocol):
    """Any batch of B samples: its first field is the observations [B, ...]."""

    obs: torch.Tensor


@runtime_checkable
class Policy(Protocol):
    """The acting side (a CWorker's, or the algorithm's own for evaluation and export)."""

    extras: Mapping[str, ExtraSpec]

    def act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut: ...

    def bootstrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """The ``bootstrap=True`` extras for the observation after the last step ({} if none)."""
        ...

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy acting weights (``Algorithm.acting_weights()``) in place."""
        ...

    def update_parameter(self, name: str, value: Any) -> None:
        """Change an acting parameter (``AlgorithmConfig.acting_parameters``, e.g. DQN's epsilon)."""
        ...

    def export_module(self) -> torch.nn.Module:
        """obs [B, ...] -> deterministic env action [B, ...], for ``torch.export``."""
        ...

    def state_dict(self) -> dict:
        """Acting state beyond the weights (e.g. exploration noise), for checkpoints."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class Algorithm(Protocol):
    """The learning side, on GWorkers and the Learner."""

    config: Any
    #: The acting view of this algorithm's own networks (shared, not a copy).
    policy: Policy

    def update_plan(self) -> UpdatePlan: ...

    def compute_gradients(self, batch: Any) -> GradientResult: ...

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Step every optimizer with ``grads`` and update target networks; returns metrics."""
        ...

    def parameters(self) -> list[torch.Tensor]: ...

    def get_weights(self) -> dict[str, np.ndarray]:
        """Everything a replica needs to compute gradients (networks and target networks)."""
        ...

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    def acting_weights(self) -> dict[str, np.ndarray]:
        """What ``Policy.set_weights`` takes (a subset of ``get_weights``)."""
        ...

    def state_dict(self) -> dict:
        """Weights, optimizers, counters and config, deep-copied (tensors and primitives only)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def update_parameter(self, name: str, value: Any) -> None: ...


class AlgorithmConfig(Protocol):
    """An algorithm's config dataclass (one per algorithm; tyro subcommand ``name``)."""

    name: ClassVar[str]
    #: Runtime parameters acting uses: CWorkers get only these.
    acting_parameters: ClassVar[frozenset[str]]
    #: The storage config type this algorithm learns from (RolloutConfig, ReplayConfig).
    storage_kind: ClassVar[str]

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> Algorithm: ...

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> Policy: ...
