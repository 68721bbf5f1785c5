"""Recurrent PPO: PPO's clipped objective on sequences, with a GRU or LSTM actor-critic.

Model: SB3-contrib's ``sb3_contrib/ppo_recurrent/ppo_recurrent.py`` (``RecurrentPPO``) and
CleanRL's cleanrl/ppo_atari_lstm.py. The loss is PPO's (agents/ppo.py ``policy_loss``,
``value_loss``, the optional KL penalty), averaged over the valid steps of time-major sequences;
advantages are the rollout storage's GAE with the collecting policy's values, as for PPO.

Sequences (``SequencePlan``, storage/rollout.py ``SequenceBatch``): each env's rollout cut into
chunks of ``sequence_length`` steps (the last one padded), never shuffled across time; per epoch the
chunks are shuffled as whole columns into minibatches of about ``minibatch_size`` steps. A chunk
may cross episode boundaries: the state is reset where ``episode_start`` is set, step by step.
Each chunk starts from the state its CWorker acted from at its first step (the per-step ``state``
extra the policy declares: stored, not recomputed, as Sample Factory does, so chunks are
independent and cost one unroll of L steps each; recomputing them from the rollout's initial state
would need a sequential pass over the whole rollout with the current weights before each epoch).
That state is the collecting policy's: from the second epoch on it is stale, which ``burn_in``
steps (R2D2's "stored state" with burn-in, Kapturowski et al. 2019, §3) refresh: they run the
current core without gradient from the stored state and are left out of the loss. Chunks do not
overlap, so burnt-in steps are never trained on: keep ``burn_in`` small against ``sequence_length``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym

from colonyrl.agents.base import SequencePlan
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.on_policy import standardized_advantages
from colonyrl.agents.ppo import PPO, LossOut, PPOConfig, kl_penalty, policy_loss, value_loss
from colonyrl.agents.recurrent import (
    RecurrentActorCritic,
    RecurrentAlgorithmMixin,
    RecurrentConfigMixin,
    check_sequences,
    empty_loss,
    valid_steps,
)
from colonyrl.config import param

__all__ = ["RecurrentPPOConfig", "RecurrentPPO", "recurrent_ppo_loss"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentPPOConfig(RecurrentConfigMixin, PPOConfig):
    """PPO's hyperparameters, plus how rollouts are cut into sequences. ``minibatch_size`` counts
    the env steps of a minibatch's sequences (chunks x ``sequence_length``, padding included)."""

    #: L: steps per sequence (each env's rollout cut into chunks; the last one padded); None: whole
    #: rollouts (SB3-contrib's sequences never exceed its ``n_steps`` either).
    sequence_length: int | None = param(None, ge=1)
    #: Steps at the start of each sequence that only refresh the stored state (no loss, no gradient).
    burn_in: int = param(0, ge=0)
    name: ClassVar[str] = "recurrent-ppo"

    def _check(self) -> None:
        super()._check()
        check_sequences(self)

    def build(self, observation_space: gym.Space, action_space: gym.Space,
              network: ActorCriticConfig) -> RecurrentPPO:
        return RecurrentPPO(self, self.build_actor(observation_space, action_space, network))

    def update_plan(self) -> SequencePlan:
        return SequencePlan(self.num_epochs, self.minibatch_size, self.sequence_length)


def recurrent_ppo_loss(actor: RecurrentActorCritic, batch: Any, cfg: RecurrentPPOConfig) -> LossOut:
    """PPO's total loss (agents/ppo.py ``ppo_loss``) over a time-major ``SequenceBatch``: the
    actor unrolled over ``[L, C]`` from each column's stored first-step state, resetting at
    ``episode_start`` (agents/recurrent.py ``valid_steps``); the terms are means over the valid
    steps after the burn-in."""
    s = valid_steps(actor, batch, cfg.burn_in)
    if s.values.numel() == 0:  # every valid step is in the burn-in: nothing to learn from here
        return empty_loss(LossOut, s.values)
    dist = actor.make_distribution(s.params)
    logp = dist.log_prob(s.actions)
    adv = standardized_advantages(s) if cfg.normalize_advantage else s.advantages
    pg_loss, clipfrac, approx_kl = policy_loss(logp, s.logp_old, adv, cfg.clip_range)
    v_loss = value_loss(s.values, s.values_old, s.returns, cfg.clip_range_vf)
    entropy = dist.entropy().mean()
    total = pg_loss + cfg.vf_coef * v_loss
    if cfg.kl_coef > 0:
        total = total + cfg.kl_coef * kl_penalty(logp, s.logp_old)
    if cfg.ent_coef > 0:
        total = total - cfg.ent_coef * entropy
    return LossOut(total, pg_loss, v_loss, entropy, approx_kl, clipfrac)


class RecurrentPPO(RecurrentAlgorithmMixin, PPO):
    """PPO (its gradients, KL early stop, adaptive KL coefficient, optimizer and checkpoints) on a
    :class:`RecurrentActorCritic`, learning from sequences."""

    sequence_loss = staticmethod(recurrent_ppo_loss)
