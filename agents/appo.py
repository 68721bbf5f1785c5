"""APPO: asynchronous PPO, PPO's clipped surrogate on V-trace advantages.

As in Sample Factory (Petrenko et al. 2020, https://arxiv.org/abs/2006.11751;
``sample_factory/algo/learning/learner.py::_calculate_losses`` with ``with_vtrace``) and RLlib's
APPO: the rollouts come from lagging policies mu, so the advantages and value targets are V-trace's
(Espeholt et al. 2018, ``storage/vtrace.py``), computed on each time-major batch with the current
policy and value function; the policy loss is PPO's clipped surrogate (Schulman et al. 2017,
eq. 7) of the ratio pi/mu, and the value loss PPO's (optionally clipped) to the V-trace targets.
Both losses are ``agents/ppo.py``'s; the V-trace evaluation is IMPALA's (``agents/impala.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import torch

from colonyrl.agents.base import SequencePlan
from colonyrl.agents.impala import VTraceEval, evaluate_vtrace, rho_stats
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig
from colonyrl.agents.on_policy import ActorCriticConfigMixin, OnPolicyAlgorithm
from colonyrl.agents.ppo import policy_loss, value_loss
from colonyrl.config import Config, param

__all__ = ["APPOConfig", "APPO", "APPOLoss", "appo_loss", "appo_objective"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class APPOConfig(ActorCriticConfigMixin, Config):
    lr: float = param(5e-4, ge=0, runtime=True)
    #: Passes over each round (Sample Factory's and RLlib's APPO default: 1).
    num_epochs: int = param(1, ge=1, runtime=True)
    #: Env steps per batch (whole env columns of the round: ``SequencePlan``).
    minibatch_size: int = param(512, ge=1, runtime=True)
    #: Cut each rollout's columns into sequences of this many steps (None: whole rollouts).
    sequence_length: int | None = param(None, ge=1)
    clip_range: float = param(0.2, ge=0, runtime=True)
    clip_range_vf: float | None = param(None, gt=0, runtime=True)  # None: no value clipping
    ent_coef: float = param(0.0, ge=0, runtime=True)
    vf_coef: float = param(0.5, ge=0, runtime=True)
    max_grad_norm: float | None = param(0.5, gt=0, runtime=True)  # None: no clipping
    #: Standardize the V-trace advantages over each batch's valid steps (Sample Factory does).
    normalize_advantage: bool = True
    #: V-trace's clips (``IMPALAConfig``): rho_bar, c_bar and the pg advantage's rho clip.
    rho_bar: float | None = param(1.0, gt=0, runtime=True)
    c_bar: float | None = param(1.0, gt=0, runtime=True)
    pg_rho_bar: float | None = param(1.0, gt=0, runtime=True)
    #: lambda of the traces, c_s = lambda min(c_bar, rho_s) (paper §4.1; 1: the paper's experiments).
    #: On-policy, v_s is then the TD(lambda) return (GAE(lambda)'s, storage/gae.py).
    vtrace_lambda: float = param(1.0, ge=0, le=1, runtime=True)
    adam_eps: float = param(1e-5, gt=0)
    name: ClassVar[str] = "appo"

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig) -> APPO:
        return APPO(self, network.build(observation_space, action_space))


    def update_plan(self) -> SequencePlan:
        return SequencePlan(self.num_epochs, self.minibatch_size, self.sequence_length)


class APPOLoss(NamedTuple):
    """The APPO objective and its named terms (scalar tensors)."""

    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor  # KL(mu || pi), k3 estimator
    clipfrac: torch.Tensor  # share of steps whose ratio pi/mu left [1 - clip, 1 + clip]
    rho_mean: torch.Tensor  # mean pi/mu: 1 on-policy
    rho_clipped_mean: torch.Tensor  # mean min(rho_bar, pi/mu)


def appo_loss(actor: ActorCritic, batch: Any, cfg: APPOConfig) -> APPOLoss:
    """Total = L^CLIP(pi/mu, A^V-trace) + vf_coef * 0.5 E[(v_s - V)^2] - ent_coef * entropy."""
    return appo_objective(evaluate_vtrace(actor, batch, cfg.rho_bar, cfg.c_bar, cfg.pg_rho_bar, cfg.vtrace_lambda), cfg)


def appo_objective(ev: VTraceEval, cfg: Any) -> APPOLoss:
    """:func:`appo_loss` from a V-trace evaluation (agents/impala.py ``evaluate_vtrace``, or the
    recurrent one of agents/recurrent_impala.py); ``cfg`` has APPO's loss coefficients."""
    adv = ev.targets.pg_advantages
    if cfg.normalize_advantage and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss, clipfrac, approx_kl = policy_loss(ev.logp, ev.logp_old, adv, cfg.clip_range)
    v_loss = value_loss(ev.values, ev.values_old, ev.targets.vs, cfg.clip_range_vf)
    entropy = ev.entropy.mean()
    total = pg_loss + cfg.vf_coef * v_loss
    if cfg.ent_coef > 0:
        total = total - cfg.ent_coef * entropy
    rho_mean, rho_clipped_mean, _ = rho_stats(ev, cfg.rho_bar)
    return APPOLoss(total, pg_loss, v_loss, entropy, approx_kl, clipfrac, rho_mean, rho_clipped_mean)


class APPO(OnPolicyAlgorithm):
    """APPO on an :class:`ActorCritic`; owns the actor and its Adam optimizer."""

    def __init__(self, config: APPOConfig, actor: ActorCritic) -> None:
        super().__init__(config, actor, torch.optim.Adam(actor.parameters(), lr=config.lr, eps=config.adam_eps,
                                                         foreach=True))

    def loss(self, batch: Any) -> APPOLoss:
        return appo_loss(self.actor, batch, self.config)
