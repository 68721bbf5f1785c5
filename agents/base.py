"""The contract every algorithm meets (DESIGN: the Algorithm owns the actor, target nets, optimizer).

CWorkers call ``acting_step`` and ``value``; GWorkers call ``compute_gradients``; the Learner calls
``apply_gradients`` (model: RLlib's ``Learner.compute_gradients`` / ``apply_gradients``), then
broadcasts ``get_weights``. Gradients travel as one array per tensor of ``parameters()``, in that
fixed order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["ActOut", "Algorithm"]


class ActOut(NamedTuple):
    """What ``acting_step`` returns for a batch of N observations (all numpy)."""

    action: np.ndarray  # stored in the rollout: int64 [N] (Discrete), float32 raw sample [N, *shape] (Box)
    env_action: np.ndarray  # sent to env.step: Box sample clipped to the bounds (or tanh-squashed)
    logp: np.ndarray  # float32 [N], log-probability of ``action``
    value: np.ndarray  # float32 [N], V(obs)


@runtime_checkable
class Algorithm(Protocol):
    """An RL algorithm as the workers see it. ``config.num_epochs`` / ``config.minibatch_size`` are
    read by the GWorker."""

    actor: torch.nn.Module
    config: Any

    def acting_step(self, obs: np.ndarray, deterministic: bool = False) -> ActOut: ...

    def value(self, obs: np.ndarray) -> np.ndarray:
        """float32 [N]: V(obs), for bootstrapping."""
        ...

    def compute_gradients(self, batch: Any) -> tuple[list[torch.Tensor] | None, dict[str, float]]:
        """Gradients aligned with ``parameters()`` (None = skip this update) and loss terms."""
        ...

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]: ...

    def parameters(self) -> list[torch.Tensor]: ...

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def update_parameter(self, name: str, value: Any) -> None: ...
