"""Recurrent IMPALA: the V-trace actor-critic (Espeholt et al. 2018, agents/impala.py) on a GRU or
LSTM actor-critic (agents/recurrent.py); the paper's agents are recurrent (Figure 3: an LSTM before
the policy and value heads).

The learner unrolls the core over each time-major batch (``SequencePlan``: whole env columns, or
chunks of ``sequence_length`` steps) from the state the actor had at each column's first step,
resetting it where an episode starts, and evaluates the policy and the value function at all L + 1
observations (agents/recurrent.py ``unroll_columns``); from those outputs V-trace over ``[L, C]``
and IMPALA's loss are computed exactly as for the feed-forward network (agents/impala.py
``vtrace_from_outputs``, ``impala_objective``). As in deepmind/scalable_agent
(``experiment.py::build_learner``: ``agent.unroll(..., agent_state)`` from the actor's state at the
start of the unroll), RLlib's IMPALA with ``use_lstm`` (the model run over each ``max_seq_len``
sequence from its sampled ``state_in``) and Sample Factory's recurrent learner.

That first state is the behaviour policy's: V-trace corrects the actions for the lag between mu
and pi, not the state (R2D2, Kapturowski et al. 2019, §3, calls the mismatch representational
drift; ``burn_in`` steps refresh it with the current core first, its remedy); every later state of
a column is recomputed with the current weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym

from colonyrl.agents.impala import (
    IMPALA,
    IMPALAConfig,
    IMPALALoss,
    VTraceEval,
    impala_objective,
    vtrace_from_outputs,
)
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.recurrent import (
    RecurrentActorCritic,
    RecurrentAlgorithmMixin,
    RecurrentConfigMixin,
    check_sequences,
    empty_loss,
    skip_burn_in,
    unroll_columns,
)
from colonyrl.config import param

__all__ = ["RecurrentIMPALAConfig", "RecurrentIMPALA", "recurrent_impala_loss", "recurrent_vtrace"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentIMPALAConfig(RecurrentConfigMixin, IMPALAConfig):
    """IMPALA's hyperparameters; ``sequence_length`` (None: whole rollouts) is how long each
    unroll of the core is."""

    #: Steps at the start of each sequence that only refresh the stored state (no loss, no
    #: gradient; agents/recurrent.py ``skip_burn_in``): V-trace and the loss run over the rest.
    burn_in: int = param(0, ge=0)
    name: ClassVar[str] = "recurrent-impala"

    def _check(self) -> None:
        super()._check()
        check_sequences(self)

    def build(self, observation_space: gym.Space, action_space: gym.Space,
              network: ActorCriticConfig) -> RecurrentIMPALA:
        return RecurrentIMPALA(self, self.build_actor(observation_space, action_space, network))


def recurrent_vtrace(actor: RecurrentActorCritic, batch: Any, rho_bar: float | None, c_bar: float | None,
                     pg_rho_bar: float | None, lam: float = 1.0, burn_in: int = 0) -> VTraceEval:
    """agents/impala.py ``evaluate_vtrace`` with the core unrolled over the batch's columns, after
    ``burn_in`` steps that only refresh the stored state (agents/recurrent.py ``skip_burn_in``)."""
    batch, state = skip_burn_in(actor, batch, burn_in)
    out = unroll_columns(actor, batch, state)
    return vtrace_from_outputs(actor, out.params, out.values, batch, rho_bar, c_bar, pg_rho_bar, lam)


def recurrent_impala_loss(actor: RecurrentActorCritic, batch: Any, cfg: Any) -> IMPALALoss:
    """IMPALA's loss terms (agents/impala.py ``impala_objective``) from :func:`recurrent_vtrace`."""
    ev = recurrent_vtrace(actor, batch, cfg.rho_bar, cfg.c_bar, cfg.pg_rho_bar, cfg.vtrace_lambda, cfg.burn_in)
    if ev.values.numel() == 0:  # every valid step is in the burn-in: nothing to learn from here
        return empty_loss(IMPALALoss, ev.values)
    return impala_objective(ev, cfg)


class RecurrentIMPALA(RecurrentAlgorithmMixin, IMPALA):
    """IMPALA (RMSProp or Adam, gradient clipping, checkpoints, runtime parameters) on a
    :class:`RecurrentActorCritic`, learning from time-major sequences."""

    sequence_loss = staticmethod(recurrent_impala_loss)
