"""Recurrent APPO: PPO's clipped surrogate on V-trace advantages (agents/appo.py) with a GRU or
LSTM actor-critic (agents/recurrent.py).

Sample Factory's default agent is recurrent (Petrenko et al. 2020; ``use_rnn=True``, a GRU core);
its learner (``sample_factory/algo/learning/learner.py``) runs the core over each
``recurrence``-step trajectory from the state stored at its first step, then computes V-trace and
the losses; RLlib's APPO takes ``use_lstm`` the same way. Here the core is unrolled over each
time-major batch of columns as for recurrent IMPALA (agents/recurrent_impala.py
``recurrent_vtrace``: from each column's stored first state, reset where an episode starts,
V-trace over ``[L, C]`` from the outputs at the L + 1 observations), and APPO's loss terms are
computed from that evaluation exactly as for the feed-forward network (agents/appo.py
``appo_objective``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym

from colonyrl.agents.appo import APPO, APPOConfig, APPOLoss, appo_objective
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.recurrent import (
    RecurrentActorCritic,
    RecurrentAlgorithmMixin,
    RecurrentConfigMixin,
    check_sequences,
    empty_loss,
)
from colonyrl.agents.recurrent_impala import recurrent_vtrace
from colonyrl.config import param

__all__ = ["RecurrentAPPOConfig", "RecurrentAPPO", "recurrent_appo_loss"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentAPPOConfig(RecurrentConfigMixin, APPOConfig):
    """APPO's hyperparameters; ``sequence_length`` (None: whole rollouts) is how long each unroll
    of the core is (Sample Factory's ``recurrence``)."""

    #: Steps at the start of each sequence that only refresh the stored state (no loss, no
    #: gradient; agents/recurrent.py ``skip_burn_in``): V-trace and the loss run over the rest.
    burn_in: int = param(0, ge=0)
    name: ClassVar[str] = "recurrent-appo"

    def _check(self) -> None:
        super()._check()
        check_sequences(self)

    def build(self, observation_space: gym.Space, action_space: gym.Space,
              network: ActorCriticConfig) -> RecurrentAPPO:
        return RecurrentAPPO(self, self.build_actor(observation_space, action_space, network))


def recurrent_appo_loss(actor: RecurrentActorCritic, batch: Any, cfg: Any) -> APPOLoss:
    """APPO's loss terms (agents/appo.py ``appo_objective``) from the recurrent V-trace evaluation."""
    ev = recurrent_vtrace(actor, batch, cfg.rho_bar, cfg.c_bar, cfg.pg_rho_bar, cfg.vtrace_lambda, cfg.burn_in)
    if ev.values.numel() == 0:  # every valid step is in the burn-in: nothing to learn from here
        return empty_loss(APPOLoss, ev.values)
    return appo_objective(ev, cfg)


class RecurrentAPPO(RecurrentAlgorithmMixin, APPO):
    """APPO (Adam, gradient clipping, checkpoints, runtime parameters) on a
    :class:`RecurrentActorCritic`, learning from time-major sequences."""

    sequence_loss = staticmethod(recurrent_appo_loss)
