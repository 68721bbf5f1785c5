"""Advantage actor-critic, A2C: the synchronous variant of A3C (Mnih et al. 2016, "Asynchronous
Methods for Deep Reinforcement Learning", https://arxiv.org/abs/1602.01783, Algorithm S3).

Each env steps ``t_max`` times with the current policy; the advantage of every step is its n-step
return minus the value, R_t - V(s_t) with R_t = r_t + gamma r_{t+1} + ... + gamma^k V(s_{t+k}),
bootstrapped from the last step of the rollout. Then one gradient of

    -log pi(a_t | s_t) (R_t - V(s_t)) - beta H(pi(. | s_t)) + c (R_t - V(s_t))^2

over the whole batch of N envs x t_max steps, i.e. the policy gradient with a baseline of
agents/pg.py (``pg_loss``) on n-step returns. The n-step return is the rollout storage's GAE with
``gae_lambda=1`` over rounds of ``num_steps = t_max`` (storage/gae.py; it bootstraps at the end of
the round and on truncation, never on termination).

Defaults are SB3's (stable_baselines3/a2c/a2c.py): lr 7e-4, ``n_steps=5``, gamma 0.99,
``gae_lambda=1.0`` (the storage's ``num_steps``, ``gamma`` and ``gae_lambda``: the a2c-cartpole
preset sets them), ent_coef 0.0, vf_coef 0.5, max_grad_norm 0.5, no advantage normalization,
RMSprop(alpha=0.99, eps=1e-5). SB3's value loss is the plain MSE (``F.mse_loss``) and ours is
0.5 * MSE (agents/ppo.py ``value_loss``), so SB3's ``vf_coef=c`` is ``vf_coef=2c`` here: SB3's
0.5 is our default 1.0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch

from colonyrl.agents.base import EpochPlan
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig
from colonyrl.agents.on_policy import (
    WHOLE_ROUND,
    ActorCriticConfigMixin,
    OnPolicyAlgorithm,
)
from colonyrl.agents.pg import PGLossOut, pg_loss
from colonyrl.config import Config, param

__all__ = ["A2CConfig", "A2C", "make_optimizer"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class A2CConfig(ActorCriticConfigMixin, Config):
    lr: float = param(7e-4, ge=0, runtime=True)
    ent_coef: float = param(0.0, ge=0, runtime=True)
    vf_coef: float = param(1.0, ge=0, runtime=True)  # SB3's 0.5 on the plain MSE (module docstring)
    max_grad_norm: float | None = param(0.5, gt=0, runtime=True)  # None: no clipping
    #: Standardize the advantages with the round's mean/std (SB3: off; not in the paper).
    normalize_advantage: bool = False
    #: "rmsprop": the paper's and SB3's (``use_rms_prop=True``); "adam": SB3's ``use_rms_prop=False``.
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    rms_prop_alpha: float = param(0.99, ge=0, lt=1)  # RMSprop's smoothing constant (SB3: alpha=0.99)
    optimizer_eps: float = param(1e-5, gt=0)  # SB3's rms_prop_eps; Adam's eps with optimizer="adam"
    name: ClassVar[str] = "a2c"

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig) -> A2C:
        return A2C(self, network.build(observation_space, action_space))


    def update_plan(self) -> EpochPlan:
        """One gradient over the whole round (SB3: ``rollout_buffer.get(batch_size=None)``)."""
        return EpochPlan(1, WHOLE_ROUND)


def make_optimizer(config: A2CConfig, params: Any) -> torch.optim.Optimizer:
    """torch's ``RMSprop``, as SB3's A2C uses (``th.optim.RMSprop``, alpha 0.99, eps outside the
    square root, the squared-gradient average starting at 0). TensorFlow's RMSProp, which the
    paper and OpenAI baselines' A2C ran with, adds eps inside the root and starts the average at 1;
    SB3 offers stable_baselines3/common/sb2_compat/rmsprop_tf_like.py ``RMSpropTFLike`` for that
    (its A2C docs suggest it where training is unstable or to match SB2's results). We use
    torch's: it is SB3's default, which the RL Zoo's CartPole-v1 setting keeps, and needs no
    optimizer of our own."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.optimizer_eps, fused=True)
    return torch.optim.RMSprop(params, lr=config.lr, alpha=config.rms_prop_alpha, eps=config.optimizer_eps)


class A2C(OnPolicyAlgorithm):
    """A2C on an :class:`ActorCritic` (one gradient per round; the Learner clips and steps)."""

    def __init__(self, config: A2CConfig, actor: ActorCritic) -> None:
        super().__init__(config, actor, make_optimizer(config, actor.parameters()))

    def loss(self, batch: Any) -> PGLossOut:
        """The policy gradient with a baseline (agents/pg.py ``pg_loss``) on n-step advantages."""
        return pg_loss(self.actor, batch, self.config)
