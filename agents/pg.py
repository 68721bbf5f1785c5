"""Vanilla policy gradient with a learned baseline: REINFORCE (Williams 1992, "Simple statistical
gradient-following algorithms for connectionist reinforcement learning", the baseline of §4),
https://doi.org/10.1007/BF00992696.

    grad J = E[ grad log pi(a_t | s_t) * (G_t - V(s_t)) ]

with G_t the discounted return-to-go and V a learned state-value baseline, regressed to G_t. The
returns are the rollout storage's GAE with ``gae_lambda=1`` (storage/gae.py): the Monte-Carlo
return inside the round, bootstrapped with V where an episode was truncated (a time limit is not
a terminal state) and where the round cuts it, never at a termination; so ``advantages`` are
G_t - V_old(s_t) and ``returns`` G_t. (The preset sets ``gae_lambda=1``; below 1 the same loss
uses GAE advantages, Schulman et al. 2016.)

One gradient over the whole round per round by default (an ``EpochPlan`` of one epoch, one
minibatch), as OpenAI Spinning Up's VPG takes one policy step per epoch
(spinup/algos/pytorch/vpg/vpg.py, which also standardizes the advantages), with Adam. With N
GWorkers each sends the gradient of its round and the Learner averages them weighted by sample
count: the gradient of the union of the rounds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import torch

from colonyrl.agents.base import EpochPlan
from colonyrl.agents.distributions import Distribution
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig
from colonyrl.agents.on_policy import (
    WHOLE_ROUND,
    ActorCriticConfigMixin,
    OnPolicyAlgorithm,
    standardized_advantages,
)
from colonyrl.agents.ppo import value_loss
from colonyrl.config import Config, param

__all__ = ["PGConfig", "PG", "PGLossOut", "reinforce_loss", "pg_loss", "pg_objective"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGConfig(ActorCriticConfigMixin, Config):
    lr: float = param(1e-3, ge=0, runtime=True)
    #: Passes over each round. More than one, or minibatches, reuse data collected by an older
    #: policy without a correction (PPO's ratio is that correction): 1 is the on-policy gradient.
    num_epochs: int = param(1, ge=1, runtime=True)
    minibatch_size: int | None = param(None, ge=1, runtime=True)  # None: the whole round in one gradient
    #: Weight of the baseline's loss, 0.5 * MSE(V, G) (agents/ppo.py ``value_loss``).
    vf_coef: float = param(0.5, ge=0, runtime=True)
    ent_coef: float = param(0.0, ge=0, runtime=True)
    max_grad_norm: float | None = param(None, gt=0, runtime=True)  # None: no clipping (vanilla)
    #: Standardize G - V with the round's mean/std (Spinning Up's VPG does; Williams has none).
    normalize_advantage: bool = True
    adam_eps: float = param(1e-8, gt=0)  # torch's default
    name: ClassVar[str] = "pg"

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig) -> PG:
        return PG(self, network.build(observation_space, action_space))


    def update_plan(self) -> EpochPlan:
        return EpochPlan(self.num_epochs, self.minibatch_size or WHOLE_ROUND)


class PGLossOut(NamedTuple):
    """The objective and its named terms (scalar tensors; ``total`` carries the graph)."""

    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor


def reinforce_loss(logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """-mean(log pi(a|s) * A): its gradient is minus the REINFORCE estimate (A = G - V(s), a
    constant here: the baseline gets no gradient through the policy term)."""
    return -(logp * adv.detach()).mean()


def pg_loss(actor: ActorCritic, batch: Any, cfg: Any) -> PGLossOut:
    """Total = policy loss + vf_coef * value loss - ent_coef * entropy; ``cfg`` has ``vf_coef``,
    ``ent_coef`` and ``normalize_advantage`` (A2C uses this loss too, agents/a2c.py)."""
    return pg_objective(*actor.distribution(batch.obs), batch, cfg)


def pg_objective(dist: Distribution, values: torch.Tensor, batch: Any, cfg: Any) -> PGLossOut:
    """:func:`pg_loss` given the current policy's distribution and values ``[B]`` at the batch's
    B samples (the recurrent variants' come from an unrolled core: agents/recurrent_pg.py)."""
    adv = standardized_advantages(batch) if cfg.normalize_advantage else batch.advantages
    pg = reinforce_loss(dist.log_prob(batch.actions), adv)
    v_loss = value_loss(values, batch.values_old, batch.returns, None)
    entropy = dist.entropy().mean()
    total = pg + cfg.vf_coef * v_loss
    if cfg.ent_coef > 0:
        total = total - cfg.ent_coef * entropy
    return PGLossOut(total, pg, v_loss, entropy)


class PG(OnPolicyAlgorithm):
    """REINFORCE with a learned baseline on an :class:`ActorCritic`, with Adam."""

    def __init__(self, config: PGConfig, actor: ActorCritic) -> None:
        super().__init__(config, actor, torch.optim.Adam(actor.parameters(), lr=config.lr, eps=config.adam_eps,
                                                         fused=True))

    def loss(self, batch: Any) -> PGLossOut:
        return pg_loss(self.actor, batch, self.config)
