"""Recurrent A2C: advantage actor-critic (Mnih et al. 2016, agents/a2c.py) on a GRU or LSTM
actor-critic (agents/recurrent.py), as the paper's "A3C LSTM" agent adds an LSTM after the last
hidden layer of its feed-forward one.

A2C's loss is PG's on n-step advantages, so recurrent A2C's is recurrent PG's (agents/recurrent_pg.py
``recurrent_pg_loss``: agents/pg.py ``pg_objective`` at the valid steps of the core unrolled over
the round); its optimizer, defaults and one gradient per round are A2C's. The round of
``num_steps = t_max`` steps per env is one time-major batch (``SequencePlan``): each env's rollout
a column (or chunks of ``sequence_length`` steps), unrolled from the state its CWorker acted from
at its first step and reset where episodes start. The rollouts carry the state across rounds, so
the core remembers beyond the t_max steps it backpropagates through (as A3C's LSTM agent carries
its state across its t_max-step updates).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import gymnasium as gym

from colonyrl.agents.a2c import A2C, A2CConfig
from colonyrl.agents.base import SequencePlan
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.on_policy import WHOLE_ROUND
from colonyrl.agents.recurrent import (
    RecurrentAlgorithmMixin,
    RecurrentConfigMixin,
    check_sequences,
)
from colonyrl.agents.recurrent_pg import recurrent_pg_loss
from colonyrl.config import param

__all__ = ["RecurrentA2CConfig", "RecurrentA2C"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentA2CConfig(RecurrentConfigMixin, A2CConfig):
    """A2C's hyperparameters (SB3's defaults), plus how each round is cut into sequences."""

    #: L: each env's rollout cut into chunks of this many steps (the last one padded); None: whole
    #: rollouts (A2C's are short: ``num_steps`` = t_max).
    sequence_length: int | None = param(None, ge=1)
    #: Steps at the start of each sequence that only refresh the stored state (no loss, no
    #: gradient; agents/recurrent.py ``skip_burn_in``): for data older than the weights (async
    #: collection, several epochs); 0 on-policy, where the stored states are exact.
    burn_in: int = param(0, ge=0)
    name: ClassVar[str] = "recurrent-a2c"

    def _check(self) -> None:
        super()._check()
        check_sequences(self)

    def build(self, observation_space: gym.Space, action_space: gym.Space,
              network: ActorCriticConfig) -> RecurrentA2C:
        return RecurrentA2C(self, self.build_actor(observation_space, action_space, network))

    def update_plan(self) -> SequencePlan:
        """One gradient over the whole round, in time order."""
        return SequencePlan(1, WHOLE_ROUND, self.sequence_length)


class RecurrentA2C(RecurrentAlgorithmMixin, A2C):
    """A2C (RMSprop or Adam, one gradient per round) on a :class:`RecurrentActorCritic`."""

    sequence_loss = staticmethod(recurrent_pg_loss)
