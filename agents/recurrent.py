"""GRU and LSTM actor-critics: policies with memory, for partially observed tasks.

Layout (CleanRL's cleanrl/ppo_atari_lstm.py ``Agent``; SB3-contrib's
``sb3_contrib/common/recurrent/policies.py::RecurrentActorCriticPolicy``):

    obs -> MLP encoder (``hidden_sizes``) -> one-layer GRU / LSTM (``hidden_state_size``) -> linear
    policy and value heads

By default the policy and the value function each have their own encoder and core (SB3-contrib's
``enable_critic_lstm=True``); ``shared_trunk=True`` shares one (CleanRL). The state of a batch of B
envs is one float32 tensor ``[B, *state_shape]`` = ``[B, K, H]``: K is 1 (h) for a GRU and 2 (h, c)
for an LSTM, twice that with two cores. Where an episode starts the state is reset by multiplying it
by ``1 - episode_start`` before the core reads it, step by step inside a sequence too (CleanRL's
``get_states``, SB3-contrib's ``_process_sequence``), so a sequence may cross episode boundaries.

Initialization follows CleanRL: orthogonal core weights (gain 1) and zero biases; the encoder and
the heads as agents/networks.py (gains sqrt(2), 0.01 for the policy head, 1 for the value head).

:class:`RecurrentActorCriticPolicy` is the acting side (a ``StatefulPolicy``, agents/base.py): it
declares, beside log-prob and value, the per-step extras ``state`` (the state it acted from, before
that step's reset) and ``episode_start``, so every rollout carries the state of each of its steps,
the first row being the rollout's initial state: a sequence cut anywhere starts from the state the
CWorker had there (Sample Factory stores per-step states the same way). :class:`RecurrentPolicyExport`
is the exported program: ``(obs, state) -> (env action, next state)``.

What the recurrent algorithms share (recurrent-ppo, -pg, -a2c, -impala, -appo, each its own module):
their configs' :class:`RecurrentConfigMixin`; :func:`valid_steps`, the network unrolled over a
time-major ``SequenceBatch`` and cut to its valid steps, on which the GAE-based losses (PPO's, PG's,
A2C's) run as on a flat minibatch; :func:`unroll_columns`, the same over the L + 1 observations
V-trace needs (IMPALA, APPO), after which V-trace runs over ``[L, C]`` as for the feed-forward
network. So each recurrent variant computes the same named loss terms as its feed-forward one
(the layout of Sample Factory's recurrent learner and of RLlib's IMPALA with an LSTM: unroll the
core over the time-major batch, then the unchanged loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from colonyrl.agents.base import ActOut, ExtraSpec
from colonyrl.agents.networks import ActorCriticBase, ActorCriticConfig, _linear, _mlp
from colonyrl.agents.on_policy import load_module
from colonyrl.agents.tensors import as_tensor, map_obs
from colonyrl.config import ConfigError

__all__ = ["RecurrentActorCritic", "RecurrentActorCriticPolicy", "RecurrentConfigMixin", "RecurrentPolicyExport",
           "Unroll", "ValidSteps", "check_sequences", "core_step", "core_unroll", "empty_loss", "recurrent_actor",
           "require_sequences", "reset_state", "skip_burn_in", "state_shape", "unroll_columns", "valid_steps"]


def state_shape(kind: str, size: int, towers: int = 1) -> tuple[int, ...]:
    """The per-env state shape ``(towers x slots, size)`` of ``towers`` ``kind`` ("gru" / "lstm")
    cores of ``size`` units: a GRU has one slot (h), an LSTM two (h, c)."""
    return (towers * (1 if kind == "gru" else 2), size)


def reset_state(state: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
    """``state * (1 - episode_start)``: state ``[B, ...]``, episode_start ``[B]`` (bool or float)
    -> the state with the rows of starting episodes zeroed."""
    keep = 1.0 - episode_start.to(state.dtype)
    return state * keep.view(-1, *([1] * (state.dim() - 1)))


def _run_core(core: nn.Module, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused one-layer ``nn.GRU`` / ``nn.LSTM`` over x ``[T, B, D]`` from state ``[B, slots, H]``,
    without resets -> (outputs ``[T, B, H]``, the state after step T-1, ``[B, slots, H]``)."""
    hx = state.transpose(0, 1).contiguous()  # [slots, B, H], torch's layout
    if isinstance(core, nn.LSTM):
        out, (h, c) = core(x, (hx[0:1], hx[1:2]))
        return out, torch.cat((h, c)).transpose(0, 1)
    out, h = core(x, hx)
    return out, h.transpose(0, 1)


def core_step(core: nn.Module, x: torch.Tensor, state: torch.Tensor,
              episode_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a core: x ``[B, D]``, state ``[B, slots, H]``, episode_start ``[B]`` (None: no
    reset) -> (output h ``[B, H]``, next state). The state is reset (:func:`reset_state`) first."""
    if episode_start is not None:
        state = reset_state(state, episode_start)
    out, state = _run_core(core, x.unsqueeze(0), state)
    return out[0], state


def core_unroll(core: nn.Module, x: torch.Tensor, state: torch.Tensor,
                episode_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`core_step` at every step of a time-major sequence, the reset step by step: x
    ``[L, C, D]``, state ``[C, slots, H]`` (before the first step's reset), episode_starts
    ``[L, C]`` -> (outputs ``[L, C, H]``, the state after step L-1).

    The same as looping over :func:`core_step`, but the fused core runs over each stretch of steps
    in which no column resets, and the resets are applied where the stretches meet (SB3-contrib's
    ``_process_sequence`` takes the fused path when a sequence has no episode start; measured on
    CPU, L=32, C=8, H=64, forward and backward: ~2.5 ms fused against ~60 ms in a Python loop)."""
    steps = x.shape[0]
    cuts = (torch.nonzero(episode_starts[1:].any(dim=1)).flatten() + 1).tolist()
    bounds = [0, *cuts, steps]
    outputs = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=False):
        out, state = _run_core(core, x[start:stop], reset_state(state, episode_starts[start]))
        outputs.append(out)
    return (torch.cat(outputs) if len(outputs) > 1 else outputs[0]), state


def _core(kind: str, n_in: int, size: int, ortho: bool) -> nn.Module:
    core = (nn.GRU if kind == "gru" else nn.LSTM)(n_in, size)  # one layer, time-major
    if ortho:  # CleanRL ppo_atari_lstm.py: orthogonal weights (gain 1), zero biases
        for name, param in core.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.constant_(param, 0.0)
    return core


class Unroll(NamedTuple):
    """:meth:`RecurrentActorCritic.unroll` over L steps of C sequences."""

    params: torch.Tensor  # [L, C, n] logits (Discrete) or [L, C, *action_shape] Gaussian means (Box)
    values: torch.Tensor  # [L, C]
    state: torch.Tensor  # [C, *state_shape], after the last step


class RecurrentActorCritic(ActorCriticBase):
    """Encoder, recurrent core, policy and value heads; every method takes the state explicitly.

    ``shared_trunk=False`` (the default, as for the feed-forward actor-critic): the policy and the
    value function each have their own encoder and core (SB3-contrib's ``enable_critic_lstm=True``),
    their states side by side in one state tensor; ``True``: one encoder and core under both heads
    (CleanRL's layout).
    """

    def __init__(self, config: ActorCriticConfig, observation_space: gym.Space, action_space: gym.Space) -> None:
        if config.recurrent is None:
            raise ConfigError("ActorCriticConfig.recurrent", None, "'gru' or 'lstm' for a recurrent actor-critic")
        super().__init__(config, observation_space, action_space)
        towers, size = (1 if config.shared_trunk else 2), config.hidden_state_size
        n_in = config.hidden_sizes[-1] if config.hidden_sizes else self.obs_dim
        # hidden layers with activations, no output layer; then the core
        self.encoders = nn.ModuleList(_mlp(self.obs_dim, config, None, 1.0) for _ in range(towers))
        self.cores = nn.ModuleList(_core(config.recurrent, n_in, size, config.ortho_init) for _ in range(towers))
        self.pi = _linear(size, self.n_out, 0.01, config.ortho_init)
        self.vf = _linear(size, 1, 1.0, config.ortho_init)
        self.state_shape = state_shape(config.recurrent, size, towers)
        self._slots = self.state_shape[0] // towers

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zeros ``[batch, *state_shape]``."""
        return torch.zeros(batch, *self.state_shape)

    def _tower_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        return [state[:, i * self._slots:(i + 1) * self._slots] for i in range(len(self.cores))]

    def step(self, obs: torch.Tensor, state: torch.Tensor,
             episode_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs ``[B, *obs_shape]``, state ``[B, *state_shape]``, episode_start ``[B]`` ->
        (logits or mean ``[B, ...]``, value ``[B]``, next state)."""
        x = self.preprocess(obs)
        outs = [core_step(core, encoder(x), s, episode_start)
                for encoder, core, s in zip(self.encoders, self.cores, self._tower_states(state), strict=True)]
        params, value = self._shape_params(self.pi(outs[0][0])), self.vf(outs[-1][0]).squeeze(-1)
        return params, value, torch.cat([s for _, s in outs], dim=1)

    def unroll(self, obs: torch.Tensor, state: torch.Tensor, episode_starts: torch.Tensor) -> Unroll:
        """obs ``[L, C, *obs_shape]``, state ``[C, *state_shape]`` (each sequence's state before its
        first step), episode_starts ``[L, C]``: the encoders and the heads run on all L x C steps
        at once, only the cores step by step (:func:`core_unroll`)."""
        steps, columns = episode_starts.shape
        x = self.preprocess(map_obs(lambda o: o.flatten(0, 1), obs))  # [L, C, ...] -> [L C, ...]
        outs = [core_unroll(core, encoder(x).view(steps, columns, -1), s, episode_starts)
                for encoder, core, s in zip(self.encoders, self.cores, self._tower_states(state), strict=True)]
        params = self._shape_params(self.pi(outs[0][0].reshape(steps * columns, -1)))
        values = self.vf(outs[-1][0]).view(steps, columns)
        return Unroll(params.view(steps, columns, *params.shape[1:]), values, torch.cat([s for _, s in outs], dim=1))

    def act(self, obs: torch.Tensor, state: torch.Tensor, episode_start: torch.Tensor | None = None,
            deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action to store, env action, log-prob [B], value [B], next state); call under inference_mode."""
        params, value, state = self.step(obs, state, episode_start)
        dist = self.make_distribution(params)
        action = dist.mode() if deterministic else dist.sample()
        return action, self.to_env_action(action), dist.log_prob(action), value, state


class RecurrentActorCriticPolicy:
    """The acting side of a recurrent actor-critic (agents/base.py ``StatefulPolicy``): log-prob
    and value as the feed-forward policy's extras, plus ``state`` and ``episode_start`` per step."""

    def __init__(self, actor: RecurrentActorCritic) -> None:
        self.actor = actor
        self.extras: dict[str, ExtraSpec] = {
            "logp": ExtraSpec((), "float32"), "values": ExtraSpec((), "float32", bootstrap=True),
            "state": ExtraSpec(actor.state_shape, "float32"), "episode_start": ExtraSpec((), "bool")}

    def initial_state(self, num_envs: int) -> np.ndarray:
        return np.zeros((num_envs, *self.actor.state_shape), dtype=np.float32)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False, *, state: np.ndarray,
            episode_start: np.ndarray) -> ActOut:
        action, env_action, logp, value, next_state = self.actor.act(
            as_tensor(obs), as_tensor(state), as_tensor(episode_start), deterministic)
        extras = {"logp": logp.numpy(), "values": value.numpy(), "state": state, "episode_start": episode_start}
        return ActOut(action.numpy(), env_action.numpy(), extras, next_state.numpy())

    @torch.inference_mode()
    def bootstrap(self, obs: np.ndarray, *, state: np.ndarray, episode_start: np.ndarray) -> dict[str, np.ndarray]:
        _, value, _ = self.actor.step(as_tensor(obs), as_tensor(state), as_tensor(episode_start))
        return {"values": value.numpy()}

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        load_module(self.actor, arrays)

    def update_parameter(self, name: str, value: Any) -> None:
        raise KeyError(f"this policy has no acting parameters (got {name!r}): it acts with the weights alone")

    def export_module(self) -> torch.nn.Module:
        return RecurrentPolicyExport(self.actor)

    def state_dict(self) -> dict:
        return {}  # the recurrent state is the acting worker's (CWorker checkpoints hold it)

    def load_state_dict(self, state: dict) -> None:
        pass


class RecurrentPolicyExport(nn.Module):
    """``(obs [B, ...], state [B, *state_shape]) -> (deterministic env action, next state)``, for
    ``torch.export`` (agents/networks.py ``export_module``). The caller carries the state and passes
    zeros where an episode starts:

    >>> policy = torch.export.load("policy.pt2").module()
    >>> state = torch.zeros(1, *state_shape)  # at each reset
    >>> action, state = policy(obs, state)
    """

    def __init__(self, actor: RecurrentActorCritic) -> None:
        super().__init__()
        self.actor = actor
        self.state_shape = actor.state_shape

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params, _, state = self.actor.step(obs, state)
        mode = params.argmax(-1) if self.actor.is_discrete else params
        return self.actor.to_env_action(mode), state



# -- learning from time-major sequences: what every recurrent algorithm shares ----------------------------------

def recurrent_actor(observation_space: gym.Space, action_space: gym.Space, network: ActorCriticConfig,
                    algo: str) -> RecurrentActorCritic:
    """``network``'s recurrent actor-critic; a ConfigError naming the field if it asks for no core."""
    if network.recurrent is None:
        raise ConfigError("ActorCriticConfig.recurrent", None, f"'gru' or 'lstm' for algo {algo}")
    return RecurrentActorCritic(network, observation_space, action_space)


class RecurrentConfigMixin:
    """For the configs of the recurrent algorithms (``recurrent-ppo``, ``-pg``, ``-a2c``, ``-impala``,
    ``-appo``), listed before their feed-forward config among the bases: they declare ``recurrent``
    (launch's ``TrainConfig`` checks the actor config against it, by name) and act through
    :class:`RecurrentActorCriticPolicy`."""

    name: ClassVar[str]
    #: Takes a recurrent ``ActorCriticConfig`` (``recurrent="gru"`` or ``"lstm"``), and only that.
    recurrent: ClassVar[bool] = True

    def build_actor(self, observation_space: gym.Space, action_space: gym.Space,
                    network: ActorCriticConfig) -> RecurrentActorCritic:
        return recurrent_actor(observation_space, action_space, network, self.name)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space,
                     network: ActorCriticConfig) -> RecurrentActorCriticPolicy:
        """The acting side: the recurrent actor-critic, no optimizer; the state is the caller's."""
        return RecurrentActorCriticPolicy(self.build_actor(observation_space, action_space, network))


class RecurrentAlgorithmMixin:
    """For the recurrent algorithms, listed before their feed-forward algorithm among the bases: the
    same optimizer, apply, checkpoints and runtime parameters, over a :class:`RecurrentActorCritic`,
    acting through :class:`RecurrentActorCriticPolicy` and learning from time-major sequences with
    ``sequence_loss(actor, batch, config)`` (a ``staticmethod``: the algorithm's named loss terms)."""

    sequence_loss: Callable[[RecurrentActorCritic, Any, Any], Any]
    actor: RecurrentActorCritic
    config: Any

    def __init__(self, config: Any, actor: RecurrentActorCritic) -> None:
        super().__init__(config, actor)  # type: ignore[call-arg]  # the feed-forward algorithm's
        self.policy = RecurrentActorCriticPolicy(actor)

    def loss(self, batch: Any) -> Any:
        return self.sequence_loss(self.actor, require_sequences(batch, self.config.name), self.config)


def require_sequences(batch: Any, algo: str) -> Any:
    """``batch`` if it is time-major with the policy's per-step ``state`` (a ``SequenceBatch`` of a
    ``SequencePlan``, storage/rollout.py), else a TypeError: a flat minibatch has lost time order."""
    if getattr(batch, "extras", None) is None or "state" not in batch.extras:
        raise TypeError(f"{algo} learns from time-major sequences with the policy's per-step 'state' "
                        f"(a SequenceBatch from a SequencePlan), got {type(batch).__name__}")
    return batch


class ValidSteps(NamedTuple):
    """The current network's outputs at the valid steps of a time-major batch (after its burn-in),
    flat ``[B]`` in time-major order, beside what the batch stored for those steps: the fields a
    feed-forward loss reads from a flat minibatch (storage/rollout.py ``Minibatch``), so the
    recurrent algorithms compute their feed-forward counterparts' loss terms on them."""

    params: torch.Tensor  # [B, n] logits or [B, *action_shape] Gaussian means, with gradient
    values: torch.Tensor  # [B] V(x_t), with gradient
    actions: torch.Tensor  # [B] or [B, *action_shape]
    logp_old: torch.Tensor  # [B] log-prob under the collecting policy
    advantages: torch.Tensor  # [B] the storage's GAE
    returns: torch.Tensor  # [B] advantages + values_old
    values_old: torch.Tensor  # [B] V(x_t) under the collecting policy
    #: The round's (mean, std) of the advantages (``standardized_advantages`` reads it), or None.
    advantage_stats: tuple[float, float] | None = None


def skip_burn_in(actor: RecurrentActorCritic, batch: Any, burn_in: int) -> tuple[Any, torch.Tensor]:
    """(the ``SequenceBatch`` without its first ``burn_in`` steps, each column's state after them).

    The burn-in runs the current core without gradient from the stored first-step state (the
    collecting policy's: stale once the weights moved on), so the rest starts from a refreshed one;
    its steps are left out of the loss (R2D2's "stored state" with burn-in, Kapturowski et al.
    2019, §3). At least one step is always kept."""
    state = batch.extras["state"][0]
    burn = max(0, min(burn_in, batch.rewards.shape[0] - 1))
    if not burn:
        return batch, state
    with torch.no_grad():
        burnt = actor.unroll(map_obs(lambda o: o[:burn], batch.obs), state, batch.extras["episode_start"][:burn])
    # every time-major field ([L] or [L+1] rows; obs may be a dict) but the extras, after the burn-in
    fields = {name: map_obs(lambda t: t[burn:], tensor) for name, tensor in zip(batch._fields, batch.tensors(), strict=False)}
    rest = batch._replace(**fields, num_samples=int(torch.count_nonzero(batch.valid[burn:])),
                          extras={key: value[burn:] for key, value in batch.extras.items()})
    return rest, burnt.state


def valid_steps(actor: RecurrentActorCritic, batch: Any, burn_in: int = 0) -> ValidSteps:
    """The actor unrolled over the L steps of a ``SequenceBatch``, each column from the state its
    CWorker acted from at the column's first step (the stored ``state`` extra) and reset where
    ``episode_start`` is set, after the first ``burn_in`` steps (:func:`skip_burn_in`)."""
    batch, state = skip_burn_in(actor, batch, burn_in)
    out = actor.unroll(map_obs(lambda o: o[:-1], batch.obs), state, batch.extras["episode_start"])
    mask = batch.valid  # no padding, no autoreset step
    return ValidSteps(out.params[mask], out.values[mask], batch.actions[mask], batch.logp_old[mask],
                      batch.advantages[mask], batch.returns[mask], batch.values_old[:-1][mask], batch.advantage_stats)


def unroll_columns(actor: RecurrentActorCritic, batch: Any, state: torch.Tensor | None = None) -> Unroll:
    """The actor over all L + 1 observations of a ``SequenceBatch`` (``obs[L]`` gives V(x_L), the
    V-trace bootstrap), from ``state`` (default: each column's stored first-step state), reset where
    episodes start -> :class:`Unroll` over ``[L+1, C]``. The bootstrap row starts an episode where
    step L-1 was an autoreset step (``~valid[L-1]``), as the CWorker's bootstrap did (an episode
    starts on the observation after the autoreset step); a padded column's bootstrap row is never
    read."""
    starts = torch.cat([batch.extras["episode_start"], ~batch.valid[-1:]])
    return actor.unroll(batch.obs, batch.extras["state"][0] if state is None else state, starts)


def empty_loss(loss_type: Any, like: torch.Tensor) -> Any:
    """``loss_type`` (a loss NamedTuple: ``total``, then named terms) of zeros, ``total`` in the
    graph of ``like``: for a batch whose valid steps all fell into the burn-in."""
    zero = like.sum() * 0.0
    return loss_type(zero, *(zero.detach() for _ in loss_type._fields[1:]))


def check_sequences(cfg: Any) -> None:
    """A recurrent config's cross-field rules, each a ConfigError naming its field: ``burn_in``
    must leave steps to learn from in each sequence, and a batch of ``minibatch_size`` env steps
    must hold one whole sequence (the storage never cuts one: it would silently take a larger
    batch than asked for)."""
    length, where = cfg.sequence_length, type(cfg).__name__
    if length is None:
        return
    if getattr(cfg, "burn_in", 0) >= length:
        raise ConfigError(f"{where}.burn_in", cfg.burn_in, f"an integer below sequence_length ({length})")
    size = getattr(cfg, "minibatch_size", None)
    if size is not None and size < length:
        raise ConfigError(f"{where}.minibatch_size", size,
                          f"an integer >= sequence_length ({length}): a batch holds whole sequences")
