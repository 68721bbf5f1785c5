"""Proximal Policy Optimization (Schulman et al. 2017, https://arxiv.org/abs/1707.06347).

The update follows CleanRL's cleanrl/ppo.py update block, split in two (model: RLlib's
``Learner.compute_gradients`` / ``apply_gradients``): ``compute_gradients`` runs on a GWorker for
one minibatch; ``apply_gradients`` runs on the Learner, after the gradients of all GWorkers are
averaged, and clips the *global* gradient norm there, so N workers on N minibatches equal one
worker on their union.
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
from colonyrl.agents.tensors import as_tensor, copy_into
from colonyrl.config import Config, from_dict, param

__all__ = ["PPOConfig", "PPO", "PPOPolicy", "LossOut", "policy_loss", "value_loss", "ppo_loss"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOConfig(Config):
    lr: float = param(3e-4, ge=0, runtime=True)  # 0 allowed: schedules anneal to 0 (SB3's lin_ schedules)
    num_epochs: int = param(10, ge=1, runtime=True)  # passes over each rollout (read by the GWorker)
    minibatch_size: int = param(64, ge=1, runtime=True)  # samples per gradient (read by the GWorker)
    clip_range: float = param(0.2, ge=0, runtime=True)  # 0 allowed for annealing, as SB3 does
    clip_range_vf: float | None = param(None, gt=0, runtime=True)  # None: no value clipping
    ent_coef: float = param(0.0, ge=0, runtime=True)
    vf_coef: float = param(0.5, ge=0, runtime=True)
    max_grad_norm: float | None = param(0.5, gt=0, runtime=True)  # None: no clipping
    #: Standardize advantages with the mean/std of the whole round (of every GWorker that started
    #: it together, so N GWorkers equal one on their union); SB3 and CleanRL use each minibatch's.
    normalize_advantage: bool = True
    target_kl: float | None = param(None, gt=0, runtime=True)  # None: no early stop
    adam_eps: float = param(1e-5, gt=0)  # CleanRL / "37 details" #3 (torch default 1e-8)
    name: ClassVar[str] = "ppo"
    #: Runtime parameters acting uses (CWorkers get only these): none, PPO acts with the weights alone.
    acting_parameters: ClassVar[frozenset[str]] = frozenset()
    storage_kind: ClassVar[str] = "rollout"

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig) -> PPO:
        return PPO(self, network.build(observation_space, action_space))

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space,
                     network: ActorCriticConfig) -> PPOPolicy:
        """The acting side: the actor-critic (V(obs) is an extra), no optimizer."""
        return PPOPolicy(network.build(observation_space, action_space))

    def update_plan(self) -> EpochPlan:
        return EpochPlan(self.num_epochs, self.minibatch_size)


class LossOut(NamedTuple):
    """The PPO objective and its named terms (scalar tensors; only ``total`` carries a graph
    through all of them)."""

    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def policy_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate L^CLIP (paper eq. 7), negated; returns (loss, clipfrac, approx_kl)."""
    log_ratio = logp - logp_old
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)).mean()
    with torch.no_grad():
        # k3 estimator of KL(old || new): E[(r - 1) - log r] (http://joschu.net/blog/kl-approx.html)
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_range).float().mean()
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, clip_range_vf: float | None
) -> torch.Tensor:
    """0.5 * MSE to the returns (CleanRL's 0.5 factor). SB3's PPO uses the plain MSE
    (``F.mse_loss`` in stable_baselines3/ppo/ppo.py), so SB3's ``vf_coef=c`` is colonyrl's
    ``vf_coef=2c`` (SB3's default 0.5 is our 1.0; our default 0.5 is CleanRL's); docs/ppo-parity.md.

    With ``clip_range_vf`` the value *change* is clipped, as SB3 does (no max with the unclipped
    loss, unlike CleanRL / baselines' PPO2): ``V = V_old + clamp(V - V_old, -c, c)``.
    """
    if clip_range_vf is not None:
        values = values_old + torch.clamp(values - values_old, -clip_range_vf, clip_range_vf)
    return 0.5 * (returns - values).pow(2).mean()


def ppo_loss(actor: ActorCritic, batch: Any, cfg: PPOConfig) -> LossOut:
    """Total loss = policy loss - ent_coef * entropy + vf_coef * value loss (paper eq. 9)."""
    adv = batch.advantages
    if cfg.normalize_advantage:  # "37 details" #7; statistics of the round, or of the minibatch if none
        stats = getattr(batch, "advantage_stats", None)
        mean, std = stats if stats is not None else (adv.mean(), adv.std())
        adv = (adv - mean) / (std + 1e-8)
    dist, values = actor.distribution(batch.obs)
    pg_loss, clipfrac, approx_kl = policy_loss(dist.log_prob(batch.actions), batch.logp_old, adv, cfg.clip_range)
    v_loss = value_loss(values, batch.values_old, batch.returns, cfg.clip_range_vf)
    entropy = dist.entropy().mean()
    total = pg_loss + cfg.vf_coef * v_loss
    if cfg.ent_coef > 0:  # skipped at 0: saves ~15% of the backward pass (measured)
        total = total - cfg.ent_coef * entropy
    return LossOut(total, pg_loss, v_loss, entropy, approx_kl, clipfrac)


class PPOPolicy:
    """PPO's acting side: samples from the actor-critic and declares log-prob and value as extras
    (the rollout storage needs both for GAE and the clipped ratio)."""

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
        _load_module(self.actor, arrays)

    def update_parameter(self, name: str, value: Any) -> None:
        raise KeyError(f"PPO's policy has no acting parameters (got {name!r})")

    def export_module(self) -> torch.nn.Module:
        return PolicyExport(self.actor)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _load_module(module: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into ``module``'s state in place (read-only arrays are fine)."""
    state = module.state_dict()
    if set(arrays) != set(state):
        raise KeyError(f"weight names differ: missing {set(state) - set(arrays)}, "
                       f"unexpected {set(arrays) - set(state)}")
    with torch.no_grad():
        for name, tensor in state.items():
            copy_into(tensor, arrays[name])


class PPO:
    """PPO on an :class:`ActorCritic`; owns the actor and its Adam optimizer."""

    _INFO_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")

    def __init__(self, config: PPOConfig, actor: ActorCritic) -> None:
        self.config, self.actor = config, actor
        self._params = list(actor.parameters())
        # fused=True measured fastest on CPU: one compute+apply step (B=256, 4-64-64-2 actor +
        # 4-64-64-1 critic, 1 thread) took 1.00 ms vs 1.16 ms (foreach=True) and 1.28 ms (for-loop).
        self.optimizer = torch.optim.Adam(self._params, lr=config.lr, eps=config.adam_eps, fused=True)
        self.policy = PPOPolicy(actor)

    def update_plan(self) -> EpochPlan:
        return self.config.update_plan()

    # -- learning (GWorker computes, Learner applies) -----------------------------------------
    def loss(self, batch: Any) -> LossOut:
        return ppo_loss(self.actor, batch, self.config)

    def compute_gradients(self, batch: Any) -> GradientResult:
        """Gradients of one minibatch, aligned with ``parameters()``; None (and the round ends) on a
        KL early stop."""
        out = self.loss(batch)
        terms = torch.stack([out.policy_loss, out.value_loss, out.entropy, out.approx_kl, out.clipfrac])
        info = dict(zip(self._INFO_KEYS, terms.detach().tolist(), strict=True))  # one sync
        target_kl = self.config.target_kl
        # SB3's rule (stable_baselines3/ppo/ppo.py): stop before the step when KL > 1.5 * target.
        info["early_stop"] = float(target_kl is not None and info["approx_kl"] > 1.5 * target_kl)
        if info["early_stop"]:
            return GradientResult(None, info, stop_round=True)
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        return GradientResult([p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params], info)

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Load ``grads`` into ``.grad`` (unless they already are), clip the global norm, step."""
        if len(grads) != len(self._params):
            raise ValueError(f"got {len(grads)} gradients for {len(self._params)} parameters")
        for p, g in zip(self._params, grads, strict=True):
            if g is not p.grad:
                if p.grad is None:
                    p.grad = torch.empty_like(p)
                copy_into(p.grad, g)
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
        _load_module(self.actor, arrays)

    def acting_weights(self) -> dict[str, np.ndarray]:
        """Acting needs the whole actor-critic (the value is an extra): the same arrays."""
        return self.get_weights()

    def state_dict(self) -> dict:
        """A snapshot (deep copy: torch's state dicts alias the live tensors, and
        ``Optimizer.load_state_dict`` would then share Adam's moment buffers between two owners)."""
        return copy.deepcopy({"actor": self.actor.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "config": dataclasses.asdict(self.config)})

    def load_state_dict(self, state: dict) -> None:
        self.config = from_dict(PPOConfig, state["config"])
        self.actor.load_state_dict(state["actor"])
        self.optimizer.load_state_dict(state["optimizer"])

    def update_parameter(self, name: str, value: Any) -> None:
        """Change a runtime hyperparameter; ConfigError (nothing changed) if the name or value is bad."""
        self.config = self.config.check_parameter(name, value)
        if name == "lr":
            for group in self.optimizer.param_groups:
                group["lr"] = float(value)
