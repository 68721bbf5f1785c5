"""IMPALA: the V-trace actor-critic (Espeholt et al. 2018, https://arxiv.org/abs/1802.01561).

Actors (CWorkers) collect with a policy mu that lags behind the learner's pi; the learner
corrects for it with V-trace (``storage/vtrace.py``), computed here on each time-major batch with
the CURRENT policy and value function, as the paper's learner does (§4.2):

* value loss: 0.5 (v_s - V(x_s))^2, towards the V-trace target v_s;
* policy gradient: rho_s (r_s + gamma v_{s+1} - V(x_s)) grad log pi(a_s|x_s), rho clipped at
  ``pg_rho_bar``;
* an entropy bonus.

Reference: deepmind/scalable_agent ``experiment.py::build_learner`` (losses as sums there, means
over the valid steps here, so the gradients of N GWorkers average to those of their union);
RLlib's IMPALA defaults (``vtrace_clip_rho_threshold`` 1, grad clip 40, entropy 0.01).
``compute_gradients`` runs on a GWorker; ``apply_gradients`` on the Learner clips the global
gradient norm and steps the optimizer (``agents/on_policy.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal, NamedTuple

import gymnasium as gym
import torch

from colonyrl.agents.base import SequencePlan
from colonyrl.agents.networks import ActorCritic, ActorCriticBase, ActorCriticConfig
from colonyrl.agents.on_policy import ActorCriticConfigMixin, OnPolicyAlgorithm
from colonyrl.agents.ppo import value_loss
from colonyrl.agents.tensors import map_obs
from colonyrl.config import Config, param
from colonyrl.storage.vtrace import VTraceReturns, vtrace

__all__ = ["IMPALAConfig", "IMPALA", "IMPALALoss", "VTraceEval", "evaluate_vtrace", "vtrace_from_outputs", "impala_loss",
           "impala_objective", "make_optimizer"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class IMPALAConfig(ActorCriticConfigMixin, Config):
    lr: float = param(6e-4, ge=0, runtime=True)
    #: Passes over each round (1: every step is learned from once, as the paper's learner does).
    num_epochs: int = param(1, ge=1, runtime=True)
    #: Env steps per batch (whole env columns of the round: ``SequencePlan``).
    minibatch_size: int = param(512, ge=1, runtime=True)
    #: Cut each rollout's columns into sequences of this many steps (None: whole rollouts).
    sequence_length: int | None = param(None, ge=1)
    vf_coef: float = param(0.5, ge=0, runtime=True)
    ent_coef: float = param(0.01, ge=0, runtime=True)
    max_grad_norm: float | None = param(40.0, gt=0, runtime=True)  # None: no clipping
    #: rho_bar: clip of the importance weights in the V-trace temporal differences (None: none).
    rho_bar: float | None = param(1.0, gt=0, runtime=True)
    #: c_bar: clip of the trace coefficients (None: none).
    c_bar: float | None = param(1.0, gt=0, runtime=True)
    #: Clip of rho in the policy-gradient advantage (scalable_agent's ``clip_pg_rho_threshold``).
    pg_rho_bar: float | None = param(1.0, gt=0, runtime=True)
    #: lambda of the traces, c_s = lambda min(c_bar, rho_s) (paper §4.1; 1: the paper's experiments).
    #: On-policy, v_s is then the TD(lambda) return (GAE(lambda)'s, storage/gae.py).
    vtrace_lambda: float = param(1.0, ge=0, le=1, runtime=True)
    #: The paper trains with RMSProp (decay 0.99, epsilon 0.01, no momentum).
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    #: The optimizer's epsilon (torch adds it outside the square root).
    eps: float = param(0.01, gt=0)
    rmsprop_alpha: float = param(0.99, gt=0, lt=1)
    name: ClassVar[str] = "impala"

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig) -> IMPALA:
        return IMPALA(self, network.build(observation_space, action_space))


    def update_plan(self) -> SequencePlan:
        return SequencePlan(self.num_epochs, self.minibatch_size, self.sequence_length)


class VTraceEval(NamedTuple):
    """The current networks on a time-major batch, with the V-trace targets; every tensor is over
    the batch's B valid steps (flat, in time-major order)."""

    logp: torch.Tensor  # [B] log pi(a_s|x_s), with gradient
    entropy: torch.Tensor  # [B] entropy of pi(.|x_s), with gradient
    values: torch.Tensor  # [B] V(x_s), with gradient
    logp_old: torch.Tensor  # [B] log mu(a_s|x_s), the behaviour policy's
    values_old: torch.Tensor  # [B] V(x_s) when collected
    targets: VTraceReturns  # vs, pg_advantages, rhos: each [B], no gradient


def evaluate_vtrace(actor: ActorCritic, batch: Any, rho_bar: float | None, c_bar: float | None,
                    pg_rho_bar: float | None, lam: float = 1.0) -> VTraceEval:
    """One forward pass over ``batch.obs`` ``[L+1, C, ...]`` (the last row gives V(x_L), the
    bootstrap), then :func:`vtrace_from_outputs`."""
    steps, columns = batch.rewards.shape
    params, values = actor(map_obs(lambda o: o.flatten(0, 1), batch.obs))  # [L+1, C, ...] -> [(L+1) C, ...]
    return vtrace_from_outputs(actor, params.view(steps + 1, columns, *params.shape[1:]),
                               values.view(steps + 1, columns), batch, rho_bar, c_bar, pg_rho_bar, lam)


def vtrace_from_outputs(actor: ActorCriticBase, params: torch.Tensor, values: torch.Tensor, batch: Any,
                        rho_bar: float | None, c_bar: float | None, pg_rho_bar: float | None,
                        lam: float = 1.0) -> VTraceEval:
    """V-trace over ``[L, C]`` with the batch's gamma, from the current networks' outputs at the
    batch's L + 1 observations: ``params`` ``[L+1, C, ...]`` (logits or means; the last row is not
    read) and ``values`` ``[L+1, C]`` (the last row: the bootstrap V(x_L)); then the valid steps
    only. A recurrent network's outputs come from its core unrolled over the batch
    (agents/recurrent_impala.py); the targets are computed the same way from them."""
    steps, columns = batch.rewards.shape
    dist = actor.make_distribution(params[:steps].reshape(steps * columns, *params.shape[2:]))
    logp = dist.log_prob(batch.actions.reshape(steps * columns, *batch.actions.shape[2:])).view(steps, columns)
    targets = vtrace(batch.logp_old, logp.detach(), batch.rewards, values[:-1].detach(), values[-1].detach(),
                     batch.terminated, batch.truncated, batch.valid, batch.gamma, rho_bar, c_bar, pg_rho_bar, lam)
    mask = batch.valid
    return VTraceEval(logp[mask], dist.entropy().view(steps, columns)[mask], values[:-1][mask], batch.logp_old[mask],
                      batch.values_old[:-1][mask], VTraceReturns(*(t[mask] for t in targets)))


class IMPALALoss(NamedTuple):
    """The IMPALA objective and its named terms (scalar tensors)."""

    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    rho_mean: torch.Tensor  # mean pi/mu over the valid steps: 1 on-policy
    rho_clipped_mean: torch.Tensor  # mean min(rho_bar, pi/mu): how much weight the clip takes off
    approx_kl: torch.Tensor  # KL(mu || pi), k3 estimator (http://joschu.net/blog/kl-approx.html)


def impala_loss(actor: ActorCritic, batch: Any, cfg: IMPALAConfig) -> IMPALALoss:
    """Total = -E[A^V-trace log pi] + vf_coef * 0.5 E[(v_s - V)^2] - ent_coef * entropy (§4.2)."""
    return impala_objective(evaluate_vtrace(actor, batch, cfg.rho_bar, cfg.c_bar, cfg.pg_rho_bar, cfg.vtrace_lambda),
                            cfg)


def impala_objective(ev: VTraceEval, cfg: Any) -> IMPALALoss:
    """:func:`impala_loss` from a V-trace evaluation (``cfg`` has ``vf_coef``, ``ent_coef``, ``rho_bar``)."""
    pg_loss = -(ev.targets.pg_advantages * ev.logp).mean()
    v_loss = value_loss(ev.values, ev.values, ev.targets.vs, None)  # 0.5 MSE (no clipping: no old values)
    entropy = ev.entropy.mean()
    total = pg_loss + cfg.vf_coef * v_loss
    if cfg.ent_coef > 0:
        total = total - cfg.ent_coef * entropy
    return IMPALALoss(total, pg_loss, v_loss, entropy, *rho_stats(ev, cfg.rho_bar))


def rho_stats(ev: VTraceEval, rho_bar: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean rho, mean clipped rho, KL(mu || pi)) over the valid steps: how off-policy the batch was."""
    rhos = ev.targets.rhos
    log_rhos = (ev.logp - ev.logp_old).detach()
    clipped = rhos if rho_bar is None else torch.clamp(rhos, max=rho_bar)
    return rhos.mean(), clipped.mean(), ((rhos - 1.0) - log_rhos).mean()


def make_optimizer(params: Any, kind: str, lr: float, eps: float, alpha: float = 0.99) -> torch.optim.Optimizer:
    """RMSProp (the paper's, decay ``alpha``, no momentum) or Adam, both with epsilon ``eps``."""
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, foreach=True)
    return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


class IMPALA(OnPolicyAlgorithm):
    """IMPALA on an :class:`ActorCritic`; owns the actor and its optimizer."""

    def __init__(self, config: IMPALAConfig, actor: ActorCritic) -> None:
        super().__init__(config, actor, make_optimizer(actor.parameters(), config.optimizer, config.lr, config.eps,
                                                       config.rmsprop_alpha))

    def loss(self, batch: Any) -> IMPALALoss:
        return impala_loss(self.actor, batch, self.config)
