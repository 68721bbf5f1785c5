"""Recurrent vanilla PG: REINFORCE with a learned baseline (agents/pg.py) on a GRU or LSTM
actor-critic (agents/recurrent.py), for partially observed tasks.

The loss is PG's, term for term (agents/pg.py ``pg_objective``: ``policy_loss``, ``value_loss``,
``entropy``), on the outputs of the core unrolled over the round; the advantages are the rollout
storage's GAE with the collecting policy's values, as for PG. Recurrent A2C (agents/recurrent_a2c.py)
uses the same loss, as A2C uses PG's.

PG takes one gradient over the whole round; a recurrent policy needs the round in time order, so
the update plan is a ``SequencePlan`` of one time-major batch (storage/rollout.py
``SequenceBatch``): every env's whole rollout a column (``sequence_length=None``), or its chunks of
``sequence_length`` steps. Each column is unrolled from the state its CWorker acted from at its
first step (the per-step ``state`` extra: Sample Factory stores states the same way) and reset
where an episode starts. With one pass over data collected by the weights being differentiated
(sync collection) those stored states are exactly what the current core would recompute, so
``burn_in`` (agents/recurrent.py ``skip_burn_in``) is 0 by default; chunks only truncate
backpropagation through time at their borders (SB3-contrib's ``RecurrentPPO`` likewise never
backpropagates beyond one rollout, Sample Factory beyond its ``recurrence`` steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym

from colonyrl.agents.base import SequencePlan
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.on_policy import WHOLE_ROUND
from colonyrl.agents.pg import PG, PGConfig, PGLossOut, pg_objective
from colonyrl.agents.recurrent import (
    RecurrentActorCritic,
    RecurrentAlgorithmMixin,
    RecurrentConfigMixin,
    check_sequences,
    empty_loss,
    valid_steps,
)
from colonyrl.config import param

__all__ = ["RecurrentPGConfig", "RecurrentPG", "recurrent_pg_loss"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentPGConfig(RecurrentConfigMixin, PGConfig):
    """PG's hyperparameters; ``minibatch_size`` (None: the whole round) counts the env steps of a
    batch's sequences, padding included."""

    #: L: each env's rollout cut into chunks of this many steps (the last one padded); None: whole
    #: rollouts, one column per env.
    sequence_length: int | None = param(None, ge=1)
    #: Steps at the start of each sequence that only refresh the stored state (no loss, no
    #: gradient; agents/recurrent.py ``skip_burn_in``): for data older than the weights (async
    #: collection, several epochs); 0 on-policy, where the stored states are exact.
    burn_in: int = param(0, ge=0)
    name: ClassVar[str] = "recurrent-pg"

    def _check(self) -> None:
        super()._check()
        check_sequences(self)

    def build(self, observation_space: gym.Space, action_space: gym.Space,
              network: ActorCriticConfig) -> RecurrentPG:
        return RecurrentPG(self, self.build_actor(observation_space, action_space, network))

    def update_plan(self) -> SequencePlan:
        return SequencePlan(self.num_epochs, self.minibatch_size or WHOLE_ROUND, self.sequence_length)


def recurrent_pg_loss(actor: RecurrentActorCritic, batch: Any, cfg: Any) -> PGLossOut:
    """PG's loss (agents/pg.py ``pg_objective``) at the valid steps of a time-major
    ``SequenceBatch``, the actor unrolled over it from the stored states after ``cfg.burn_in``
    steps (agents/recurrent.py ``valid_steps``); ``cfg`` has ``vf_coef``, ``ent_coef``,
    ``normalize_advantage`` and ``burn_in``."""
    steps = valid_steps(actor, batch, cfg.burn_in)
    if steps.values.numel() == 0:  # every valid step is in the burn-in: nothing to learn from here
        return empty_loss(PGLossOut, steps.values)
    return pg_objective(actor.make_distribution(steps.params), steps.values, steps, cfg)


class RecurrentPG(RecurrentAlgorithmMixin, PG):
    """PG (Adam, one gradient per round, checkpoints, runtime ``lr``) on a
    :class:`RecurrentActorCritic`, learning from sequences."""

    sequence_loss = staticmethod(recurrent_pg_loss)
