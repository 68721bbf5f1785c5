"""What the actor-critic on-policy algorithms (PPO, A2C, vanilla PG) share: the acting side, which
declares log-prob and value as extras for the rollout storage, and the plumbing of the
``Algorithm`` contract over one :class:`ActorCritic` and one optimizer (apply with a global
gradient-norm clip, weights, checkpoints, the runtime ``lr``). Each algorithm adds its loss and
``compute_gradients`` (model: SB3's ``OnPolicyAlgorithm``, which its PPO and A2C subclass).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.base import ActOut, EpochPlan, ExtraSpec, GradientResult
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport
from colonyrl.agents.tensors import as_tensor, copy_into, load_grads
from colonyrl.config import from_dict

__all__ = ["ActorCriticConfigMixin", "ActorCriticPolicy", "OnPolicyAlgorithm", "WHOLE_ROUND", "load_module", "standardized_advantages"]

#: ``EpochPlan.minibatch_size`` that makes the whole round one minibatch (the rollout storage cuts
#: a round of B samples into ``max(1, round(B / minibatch_size))`` minibatches): A2C's and PG's one
#: gradient per round.
WHOLE_ROUND = 2**62


def standardized_advantages(batch: Any) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` ("37 details" #7) with the statistics of the whole round (of
    every GWorker that started it together: ``batch.advantage_stats``), else of the batch itself."""
    adv = batch.advantages
    stats = getattr(batch, "advantage_stats", None)
    mean, std = stats if stats is not None else (adv.mean(), adv.std())
    return (adv - mean) / (std + 1e-8)


def load_module(module: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into ``module``'s state in place (read-only arrays are fine)."""
    state = module.state_dict()
    if set(arrays) != set(state):
        raise KeyError(f"weight names differ: missing {set(state) - set(arrays)}, "
                       f"unexpected {set(arrays) - set(state)}")
    with torch.no_grad():
        for name, tensor in state.items():
            copy_into(tensor, arrays[name])


class ActorCriticConfigMixin:
    """For the configs of the algorithms above: they learn from the rollout storage, act with the
    weights alone (no acting parameters), and act through :class:`ActorCriticPolicy`."""

    storage_kind: ClassVar[str] = "rollout"
    #: Runtime parameters acting uses (CWorkers get only these): none.
    acting_parameters: ClassVar[frozenset[str]] = frozenset()

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space,
                     network: ActorCriticConfig) -> ActorCriticPolicy:
        """The acting side: the actor-critic (log-prob and V(obs) are its extras), no optimizer."""
        return ActorCriticPolicy(network.build(observation_space, action_space))


class ActorCriticPolicy:
    """The acting side: samples from the actor-critic and declares log-prob and value as extras
    (the rollout storage needs both: the value for GAE, the log-prob for PPO's ratio)."""

    extras: ClassVar[dict[str, ExtraSpec]] = {"logp": ExtraSpec((), "float32"),
                                              "values": ExtraSpec((), "float32", bootstrap=True)}

    def __init__(self, actor: ActorCritic) -> None:
        self.actor = actor

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        action, env_action, logp, value = self.actor.act(as_tensor(obs), deterministic)
        return ActOut(action.numpy(), env_action.numpy(), {"logp": logp.numpy(), "values": value.numpy()})

    @torch.inference_mode()
    def bootstrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"values": self.actor.value(as_tensor(obs)).numpy()}

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        load_module(self.actor, arrays)

    def update_parameter(self, name: str, value: Any) -> None:
        raise KeyError(f"this policy has no acting parameters (got {name!r}): it acts with the weights alone")

    def export_module(self) -> torch.nn.Module:
        return PolicyExport(self.actor)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class OnPolicyAlgorithm:
    """An :class:`ActorCritic` and its optimizer; ``config`` has ``lr``, ``max_grad_norm`` and
    ``update_plan()``. Subclasses define ``loss(batch)`` (a NamedTuple: ``total``, then the named
    scalar terms reported as info) and may override ``compute_gradients``."""

    def __init__(self, config: Any, actor: ActorCritic, optimizer: torch.optim.Optimizer) -> None:
        self.config, self.actor, self.optimizer = config, actor, optimizer  # optimizer over actor.parameters()
        self._params = list(actor.parameters())
        self.policy = ActorCriticPolicy(actor)

    def update_plan(self) -> EpochPlan:
        return self.config.update_plan()

    # -- learning (GWorker computes, Learner applies) -----------------------------------------
    def loss(self, batch: Any) -> Any:
        raise NotImplementedError

    def compute_gradients(self, batch: Any) -> GradientResult:
        """Gradients of one minibatch, aligned with ``parameters()``."""
        out = self.loss(batch)
        return GradientResult(self._backward(out.total), self._info(out))

    @staticmethod
    def _info(out: NamedTuple) -> dict[str, float]:
        """The loss's named terms (every field but ``total``) as floats, in one device sync."""
        return dict(zip(out._fields[1:], torch.stack(out[1:]).detach().tolist(), strict=True))

    def _backward(self, total: torch.Tensor) -> list[torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Load ``grads`` into ``.grad`` (unless they already are), clip the global norm, step."""
        load_grads(self._params, grads)
        if self.config.max_grad_norm is not None:  # "37 details" #11; returns the pre-clip norm
            norm = torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm, foreach=True)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in self._params]))
        self.optimizer.step()
        return {"grad_norm": float(norm)}

    def parameters(self) -> list[torch.Tensor]:
        return list(self._params)

    # -- weights, checkpoints, runtime hyperparameters ----------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.actor.state_dict().items()}

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy ``arrays`` into the actor in place (accepts read-only arrays; optimizer untouched)."""
        load_module(self.actor, arrays)

    def acting_weights(self) -> dict[str, np.ndarray]:
        """Acting needs the whole actor-critic (the value is an extra): the same arrays."""
        return self.get_weights()

    def state_dict(self) -> dict:
        """A snapshot (deep copy: torch's state dicts alias the live tensors, and
        ``Optimizer.load_state_dict`` would then share the optimizer's buffers between two owners)."""
        return copy.deepcopy({"actor": self.actor.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "config": dataclasses.asdict(self.config)})

    def load_state_dict(self, state: dict) -> None:
        self.config = from_dict(type(self.config), state["config"])
        self.actor.load_state_dict(state["actor"])
        self.optimizer.load_state_dict(state["optimizer"])

    def update_parameter(self, name: str, value: Any) -> None:
        """Change a runtime hyperparameter; ConfigError (nothing changed) if the name or value is bad."""
        self.config = self.config.check_parameter(name, value)
        if name == "lr":
            for group in self.optimizer.param_groups:
                group["lr"] = float(value)
