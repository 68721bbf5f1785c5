"""Actor-critic MLPs (model: SB3 ``MlpPolicy`` and CleanRL's ``Agent`` in cleanrl/ppo.py).

By default the policy and the value function are two separate MLPs (SB3's default for
on-policy algorithms); ``shared_trunk=True`` puts both heads on one MLP. Initialization follows
CleanRL / "The 37 Implementation Details of PPO" (Huang et al., ICLR blog track 2022, details 2
and 3, https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/): orthogonal
weights with gain sqrt(2) on hidden layers, 0.01 on the policy head, 1.0 on the value head, zero
biases; Box actions use a state-independent log-std parameter (detail 5 of the continuous part).

Observations go through an encoder chosen from the observation space (agents/encoders.py:
flattened Box, one-hot Discrete, the Nature CNN on uint8 images, one encoder per key of a Dict),
shared by the policy and the value function (SB3's ``share_features_extractor=True`` default,
CleanRL ppo_atari.py's one ``network``); ``hidden_sizes`` are the MLP layers on its features
(``()`` on an image: CleanRL's and SB3's Atari layout, linear heads on the CNN's 512 features).

``PolicyExport`` turns a trained actor into a plain ``torch.export`` program: obs -> env action
(obs a tensor, or a dict of tensors for a Dict space; uint8 images as uint8).
``ActorCriticBase`` holds what the recurrent actor-critics (agents/recurrent.py) share with it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from colonyrl.agents.distributions import (
    Categorical,
    DiagGaussian,
    Distribution,
    SquashedDiagGaussian,
    clip_action,
    squash_action,
)
from colonyrl.agents.encoders import EncoderKind, Obs, make_encoder
from colonyrl.agents.mlp import MLP
from colonyrl.config import Config, ConfigError, param

__all__ = ["ActorCriticConfig", "ActorCriticBase", "ActorCritic", "PolicyExport", "example_batch", "export_module",
           "export_policy"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActorCriticConfig(Config):
    hidden_sizes: tuple[int, ...] = (64, 64)  # () = linear policy and value
    activation: Literal["tanh", "relu"] = "tanh"
    shared_trunk: bool = False  # False: separate policy and value MLPs (SB3 MlpPolicy)
    ortho_init: bool = True  # CleanRL layer_init: orthogonal, gains sqrt(2) / 0.01 / 1.0
    log_std_init: float = 0.0  # initial log-std of Box actions (SB3 default 0.0)
    squash: bool = False  # Box: tanh-squash to the bounds instead of clipping the sample
    #: A recurrent core between the MLP encoder (``hidden_sizes``) and the heads (agents/recurrent.py):
    #: None = feed-forward. Only algorithms that declare ``recurrent = True`` (the recurrent-* ones) take it.
    recurrent: Literal["gru", "lstm"] | None = None
    #: Units of each recurrent core. The state per env is [K, hidden_state_size]: K = 1 (h) for a GRU,
    #: 2 (h, c) for an LSTM, twice that with ``shared_trunk=False`` (policy and value cores apart).
    hidden_state_size: int = param(64, ge=1)
    #: The observation encoder (agents/encoders.py): "auto" picks it from the space (the Nature CNN
    #: for uint8 images of at least 36x36, flattened otherwise, one per key of a Dict); "mlp"
    #: flattens every Box; "cnn" puts the CNN on every 3-D Box. Every algorithm's networks use it.
    encoder: EncoderKind = "auto"
    #: Features of the CNN's dense layer (512 in Mnih et al. 2015).
    cnn_features_dim: int = param(512, ge=1)

    def _check(self) -> None:
        if any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError("ActorCriticConfig.hidden_sizes", self.hidden_sizes, "a tuple of integers > 0")

    def build(self, observation_space: gym.Space, action_space: gym.Space) -> ActorCritic:
        """The feed-forward actor-critic (a recurrent one: agents/recurrent.py ``RecurrentActorCritic``)."""
        if self.recurrent is not None:
            raise ConfigError("ActorCriticConfig.recurrent", self.recurrent,
                              "None for a feed-forward algorithm ('gru'/'lstm' need a recurrent-* algo: "
                              "recurrent-ppo, recurrent-pg, recurrent-a2c, recurrent-impala, recurrent-appo)")
        return ActorCritic(self, observation_space, action_space)


def _linear(n_in: int, n_out: int, gain: float, ortho: bool) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    if ortho:  # CleanRL's layer_init(layer, std, bias_const=0.0)
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.constant_(layer.bias, 0.0)
    return layer


def _mlp(n_in: int, cfg: ActorCriticConfig, n_out: int | None, out_gain: float) -> MLP:
    """Hidden layers with activations, then an output layer unless ``n_out`` is None."""
    layers: list[nn.Module] = []
    for h in cfg.hidden_sizes:
        layers += [_linear(n_in, h, math.sqrt(2.0), cfg.ortho_init), _ACTIVATIONS[cfg.activation]()]
        n_in = h
    if n_out is not None:
        layers.append(_linear(n_in, n_out, out_gain, cfg.ortho_init))
    return MLP(*layers)


class ActorCriticBase(nn.Module):
    """What every actor-critic shares, feed-forward or recurrent (agents/recurrent.py): the
    observation encoder (agents/encoders.py), the action layout with its distribution
    (Categorical, DiagGaussian with a state-independent log-std, tanh-squashed) and the mapping
    from stored actions to env actions. ``n_out`` is the size the policy head must output."""

    def __init__(self, config: ActorCriticConfig, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__()
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self._setup_obs(observation_space)
        self.n_out = self._setup_actions(action_space, config)

    # -- construction -------------------------------------------------------------------------
    def _setup_obs(self, space: gym.Space) -> None:
        """The encoder (agents/encoders.py) and its feature size ``obs_dim``; registered first, so a
        parameterless one (flat Box, Discrete) leaves the parameter order of a plain MLP."""
        self.encoder = make_encoder(space, self.config.encoder, self.config.cnn_features_dim, self.config.ortho_init)
        self.obs_dim = self.encoder.dim

    def _setup_actions(self, space: gym.Space, config: ActorCriticConfig) -> int:
        """Set the action layout; return the size of the policy head's output."""
        self.is_discrete = isinstance(space, gym.spaces.Discrete)
        if self.is_discrete:
            self.action_shape: tuple[int, ...] = ()
            self._action_start = int(space.start)
            return int(space.n)
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError("ActorCritic.action_space", space, "a Discrete or a Box")
        low, high = (torch.as_tensor(np.asarray(b, np.float32)) for b in (space.low, space.high))
        if config.squash and not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError("ActorCriticConfig.squash", True, "False for a Box with infinite bounds")
        self.action_shape = tuple(space.shape)
        self.register_buffer("low", low, persistent=False)  # constants: not part of the weights
        self.register_buffer("high", high, persistent=False)
        self.log_std = nn.Parameter(torch.full(self.action_shape, float(config.log_std_init)))
        self._log_scale = float(torch.log(0.5 * (high - low)).sum()) if config.squash else 0.0
        return int(np.prod(self.action_shape))

    # -- forward ------------------------------------------------------------------------------
    def preprocess(self, obs: Obs) -> torch.Tensor:
        """Obs [B, *obs_shape] (any dtype; a dict of them for a Dict space) -> float32 [B, obs_dim]:
        the encoder's features (Box flattened, Discrete one-hot, uint8 images / 255 through the CNN)."""
        return self.encoder(obs)

    def _shape_params(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.is_discrete or len(self.action_shape) == 1 else out.view(-1, *self.action_shape)

    def make_distribution(self, params: torch.Tensor) -> Distribution:
        if self.is_discrete:
            return Categorical(params)
        if self.config.squash:
            return SquashedDiagGaussian(params, self.log_std, self._log_scale)
        return DiagGaussian(params, self.log_std)

    def to_env_action(self, action: torch.Tensor) -> torch.Tensor:
        """Stored action -> what env.step gets (Discrete: + start; Box: clipped or squashed)."""
        if self.is_discrete:
            return action + self._action_start if self._action_start else action
        return (squash_action if self.config.squash else clip_action)(action, self.low, self.high)


class ActorCritic(ActorCriticBase):
    """Policy and value function. Batch API: every method takes obs [B, *obs_shape]."""

    def __init__(self, config: ActorCriticConfig, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__(config, observation_space, action_space)
        n_out = self.n_out
        last = config.hidden_sizes[-1] if config.hidden_sizes else self.obs_dim
        if config.shared_trunk:
            self.trunk: nn.Module | None = _mlp(self.obs_dim, config, None, 1.0)
            self.pi: nn.Module = _linear(last, n_out, 0.01, config.ortho_init)
            self.vf: nn.Module = _linear(last, 1, 1.0, config.ortho_init)
        else:
            self.trunk = None
            self.pi = _mlp(self.obs_dim, config, n_out, 0.01)
            self.vf = _mlp(self.obs_dim, config, 1, 1.0)

    # -- forward ------------------------------------------------------------------------------
    def policy_params(self, obs: Obs) -> torch.Tensor:
        """Logits [B, n] (Discrete) or the Gaussian mean [B, *action_shape] (Box)."""
        x = self.preprocess(obs)
        return self._shape_params(self.pi(x if self.trunk is None else self.trunk(x)))

    def forward(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits or mean, value [B])."""
        x = self.preprocess(obs)
        if self.trunk is not None:
            x = self.trunk(x)
        return self._shape_params(self.pi(x)), self.vf(x).squeeze(-1)

    def value(self, obs: Obs) -> torch.Tensor:
        """V(obs) [B] (only the value path runs when the trunk is not shared)."""
        x = self.preprocess(obs)
        return self.vf(x if self.trunk is None else self.trunk(x)).squeeze(-1)

    def distribution(self, obs: Obs) -> tuple[Distribution, torch.Tensor]:
        params, value = self(obs)
        return self.make_distribution(params), value

    def act(
        self, obs: Obs, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action to store, env action, log-prob [B], value [B]); call under no_grad/inference_mode."""
        dist, value = self.distribution(obs)
        action = dist.mode() if deterministic else dist.sample()
        return action, self.to_env_action(action), dist.log_prob(action), value


class PolicyExport(nn.Module):
    """obs -> deterministic env action (argmax, or the mean clipped/squashed), for ``torch.export``.

    >>> ep = torch.export.export(PolicyExport(ac), (obs,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    >>> torch.export.save(ep, "policy.pt2"); torch.export.load("policy.pt2").module()(obs)
    """

    def __init__(self, actor: ActorCritic) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: Obs) -> torch.Tensor:
        params = self.actor.policy_params(obs)
        mode = params.argmax(-1) if self.actor.is_discrete else params
        return self.actor.to_env_action(mode)


def example_batch(space: gym.Space, batch_size: int) -> Obs:
    """``batch_size`` samples of ``space`` stacked as tensors of its dtype (uint8 stays uint8); a
    dict of them, in the space's key order, for a Dict."""
    if isinstance(space, gym.spaces.Dict):
        return {key: example_batch(sub, batch_size) for key, sub in space.spaces.items()}
    return torch.as_tensor(np.stack([space.sample() for _ in range(batch_size)]))


def _dynamic_batch(example: Obs, batch: torch.export.Dim) -> dict:
    """``torch.export`` dynamic shapes mirroring ``example``: dim 0 of every tensor is ``batch``."""
    if isinstance(example, Mapping):
        return {key: _dynamic_batch(value, batch) for key, value in example.items()}
    return {0: batch}


def export_module(module: nn.Module, observation_space: gym.Space, path: str,
                  batch_size: int = 2) -> torch.export.ExportedProgram:
    """Export ``module`` (obs -> env action) with a dynamic batch dimension and save it to ``path``.

    The file runs with plain torch: ``torch.export.load(path).module()(obs)``; for a Dict space
    ``obs`` is a dict of tensors with the space's keys, in its (sorted) key order, as gymnasium's
    vector envs return them. A module with a ``state_shape`` attribute is a stateful policy's
    (agents/recurrent.py ``RecurrentPolicyExport``): ``(obs, state [B, *state_shape]) -> (env action,
    next state)``, exported with a zero state.
    """
    size = max(batch_size, 2)  # example batch >= 2: torch.export specializes sizes 0 and 1
    example = example_batch(observation_space, size)
    batch = torch.export.Dim("batch")
    state_shape = getattr(module, "state_shape", None)
    inputs: tuple[Obs, ...] = (example,)
    dynamic: tuple[dict, ...] = (_dynamic_batch(example, batch),)
    if state_shape is not None:
        inputs, dynamic = (example, torch.zeros(size, *state_shape)), (dynamic[0], {0: batch})
    with torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM / nn.GRU re-assign their ``_flat_weights`` list while traced: harmless here
        warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights")
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
    torch.export.save(program, path)
    return program


def export_policy(actor: ActorCritic, path: str, batch_size: int = 2) -> torch.export.ExportedProgram:
    """Export ``PolicyExport(actor)`` (:func:`export_module`)."""
    return export_module(PolicyExport(actor), actor.observation_space, path, batch_size)
