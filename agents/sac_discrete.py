"""SAC for Discrete actions (Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings",
https://arxiv.org/abs/1910.07207; CleanRL's cleanrl/sac_atari.py).

With finitely many actions the policy outputs pi(.|s) and the critics Q(s, .), so every expectation
over actions is an exact sum instead of a reparameterized sample (paper section 4):

* soft state value V(s') = sum_a' pi(a'|s') (min_i Q'_i(s', a') - alpha log pi(a'|s'))   (eq. 10)
* actor loss  E_s[ sum_a pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a)) ]                 (eq. 12)
* alpha loss  -E_s[ log alpha (sum_a pi(a|s) log pi(a|s) + target_entropy) ]            (eq. 11)

with target entropy ``target_entropy_scale * log|A|`` (0.98 in the paper). Built by
``SACConfig.build`` for a Discrete action space; everything else is ``sac.SAC``'s.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.base import ActOut
from colonyrl.agents.distributions import Categorical
from colonyrl.agents.off_policy import (
    OffPolicyPolicy,
    as_tensor,
    grads_of,
    td_target,
    uniform_discrete_actions,
)
from colonyrl.agents.q_networks import ArgmaxExport, DiscreteActor, DiscreteCritic, discrete_action_space
from colonyrl.agents.sac import SAC, SACConfig, SACLoss, ent_coef_loss, twin_q_loss

__all__ = ["DiscreteSAC", "DiscreteSACPolicy", "DiscreteActor", "soft_state_value", "discrete_actor_loss"]


def soft_state_value(probs: torch.Tensor, logp: torch.Tensor, q_min: torch.Tensor,
                     alpha: torch.Tensor | float) -> torch.Tensor:
    """sum_a pi(a|s) (Q(s, a) - alpha log pi(a|s)), [B] (paper eq. 10)."""
    return (probs * (q_min - alpha * logp)).sum(-1)


def discrete_actor_loss(probs: torch.Tensor, logp: torch.Tensor, q_min: torch.Tensor,
                        alpha: torch.Tensor | float, weights: torch.Tensor) -> torch.Tensor:
    """E_s[sum_a pi(a|s) (alpha log pi(a|s) - Q(s, a))] with Q a constant (paper eq. 12)."""
    return (weights * (probs * (alpha * logp - q_min.detach())).sum(-1)).mean()


class DiscreteSACPolicy(OffPolicyPolicy):
    """Samples a ~ pi(.|s) (argmax when deterministic); stores the index, the env gets index + start."""

    def __init__(self, config: SACConfig, actor: DiscreteActor, start: int = 0) -> None:
        super().__init__(config, {"actor": actor})
        self.actor, self.start = actor, int(start)

    @torch.inference_mode()
    def policy_act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        logits = self.actor(as_tensor(obs))
        action = logits.argmax(-1) if deterministic else Categorical(logits).sample()
        return ActOut(action.numpy(), (action + self.start).numpy(), {})

    def random_act(self, n: int) -> ActOut:
        return uniform_discrete_actions(self.actor.n_actions, self.start, n)

    def export_module(self) -> torch.nn.Module:
        return ArgmaxExport(self.actor, self.start)


class DiscreteSAC(SAC):
    """SAC-Discrete; ``parameters()`` = actor, critics, then log_alpha (when learned)."""

    def _build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> None:
        space = discrete_action_space(action_space, "SACConfig.action_space")
        self.n_actions = int(space.n)
        self.actor = DiscreteActor(observation_space, self.n_actions, network)
        self.critic = DiscreteCritic(observation_space, self.n_actions, network, n_critics=2)
        self.policy = DiscreteSACPolicy(self.config, self.actor, int(space.start))

    def target_entropy(self) -> float:
        t = self.config.target_entropy
        return self.config.target_entropy_scale * math.log(self.n_actions) if t is None else t

    def losses_and_grads(self, batch: Any) -> tuple[SACLoss, list[torch.Tensor]]:
        """As SAC's, in one go on one thread whatever ``loss_threads``: one critic forward Q(s, .)
        feeds both the critic's loss and the actor's expectation over actions."""
        out = self.loss(batch)
        grads = grads_of(out.actor_loss, self._groups["actor"]) + grads_of(out.critic_loss, self._groups["critic"])
        if out.ent_coef_loss is not None:
            grads += grads_of(out.ent_coef_loss, self._groups["ent_coef"])
        return out, grads

    def loss(self, batch: Any) -> SACLoss:
        w, alpha = batch.weights, self.alpha()
        with torch.no_grad():
            next_probs, next_logp = self.actor.probs(batch.next_obs)
            next_v = soft_state_value(next_probs, next_logp, self.critic_target(batch.next_obs).amin(0), alpha)
            y = td_target(batch.rewards, batch.discounts, batch.terminated, next_v)
        q_all = self.critic(batch.obs)  # [2, B, n]
        index = batch.actions.long().reshape(1, -1, 1).expand(q_all.shape[0], -1, 1)
        q = q_all.gather(-1, index).squeeze(-1)
        c_loss, td_abs = twin_q_loss(q, y, w)
        probs, logp = self.actor.probs(batch.obs)
        a_loss = discrete_actor_loss(probs, logp, q_all.amin(0), alpha, w)
        expected_logp = (probs * logp).sum(-1)  # -H(pi(.|s))
        e_loss = None if self.ent_coef is None else ent_coef_loss(
            self.ent_coef.log_alpha, expected_logp, self.target_entropy(), w)
        return SACLoss(c_loss, a_loss, e_loss, td_abs, q.detach().mean(), -expected_logp.detach().mean(), alpha)
