"""MLPs of the off-policy algorithms (SAC, TD3, DDPG, DQN): actors, Q critics, Q-networks.

Every network is built from an ``ActorCriticConfig`` (``hidden_sizes``, ``activation``,
``ortho_init``), the MLP spec every algorithm receives. With ``ortho_init=False`` the layers keep
torch's default initialization (what SB3 and CleanRL's off-policy scripts use); with ``True``
hidden layers are orthogonal with gain sqrt(2), policy heads 0.01 and value heads 1.0 (CleanRL's
``layer_init``).

Conventions (as SB3's ``TD3Policy`` / ``SACPolicy``): actors work in the unit box [-1, 1]^A
(tanh output); :class:`ActionScaler` maps that to the env's bounds and back. Critics take the
*unit* action, so replayed env-unit actions are rescaled first. Observations go through
:func:`obs_encoder` (agents/encoders.py: flattened Box, one-hot Discrete, the Nature CNN on uint8
images, one encoder per key of a Dict), as ``ActorCritic.preprocess`` does.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colonyrl.agents.distributions import tanh_log_det_jacobian
from colonyrl.agents.encoders import Encoder, make_encoder
from colonyrl.agents.mlp import MLP
from colonyrl.config import ConfigError

__all__ = ["obs_encoder", "ActionScaler", "mlp", "SquashedGaussianActor", "DeterministicActor",
           "ContinuousCritic", "QNetwork", "DiscreteActor", "DiscreteCritic", "BoxActionExport",
           "ArgmaxExport", "box_action_space", "discrete_action_space"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
# SB3's clamp of the state-dependent log-std (stable_baselines3/sac/policies.py).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def box_action_space(space: gym.Space, where: str) -> gym.spaces.Box:
    """``space`` if it is a Box with finite bounds, else ConfigError naming ``where``."""
    if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise ConfigError(where, space, "a Box action space with finite bounds")
    return space


def discrete_action_space(space: gym.Space, where: str) -> gym.spaces.Discrete:
    if not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(where, space, "a Discrete action space")
    return space


def obs_encoder(space: gym.Space, net: Any) -> Encoder:
    """The observation encoder of one network (agents/encoders.py), from ``net``'s ``encoder``,
    ``cnn_features_dim`` and ``ortho_init``. Each actor and critic gets its own (SB3's off-policy
    ``share_features_extractor=False``; CleanRL's dqn_atari.py QNetwork holds its CNN)."""
    return make_encoder(space, getattr(net, "encoder", "auto"), getattr(net, "cnn_features_dim", 512),
                        net.ortho_init)


class ActionScaler(nn.Module):
    """[-1, 1]^A <-> [low, high] (SB3's ``scale_action`` / ``unscale_action``), on flat actions."""

    def __init__(self, space: gym.spaces.Box) -> None:
        super().__init__()
        low, high = (torch.as_tensor(np.asarray(b, np.float32).reshape(-1)) for b in (space.low, space.high))
        self.register_buffer("low", low, persistent=False)  # constants, not weights
        self.register_buffer("high", high, persistent=False)
        self.shape = tuple(space.shape)

    def to_env(self, unit: torch.Tensor) -> torch.Tensor:
        """[B, A] in [-1, 1] -> [B, *shape] in env units (clamped: float rounding stays in bounds)."""
        env = torch.clamp(self.low + (unit + 1.0) * (0.5 * (self.high - self.low)), self.low, self.high)
        return env.reshape(-1, *self.shape)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """[B, *shape] in env units -> [B, A] in [-1, 1]."""
        return 2.0 * (action.flatten(1).float() - self.low) / (self.high - self.low) - 1.0


def _linear(n_in: int, n_out: int, gain: float, ortho: bool) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    if ortho:  # CleanRL's layer_init(layer, std, bias_const=0.0)
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, net: Any, n_out: int | None, out_gain: float = 1.0,
        hidden: tuple[int, ...] | None = None) -> MLP:
    """``net.hidden_sizes`` (or ``hidden``) Linear+activation layers, then a Linear to ``n_out``
    unless it is None."""
    layers: list[nn.Module] = []
    for h in net.hidden_sizes if hidden is None else hidden:
        layers += [_linear(n_in, h, math.sqrt(2.0), net.ortho_init), _ACTIVATIONS[net.activation]()]
        n_in = h
    if n_out is not None:
        layers.append(_linear(n_in, n_out, out_gain, net.ortho_init))
    return MLP(*layers)


def _last(n_in: int, net: Any) -> int:
    return net.hidden_sizes[-1] if net.hidden_sizes else n_in


class SquashedGaussianActor(nn.Module):
    """SAC's actor (Haarnoja et al. 2018, appendix C; SB3 ``sac.policies.Actor``): a Gaussian with
    state-dependent mean and log-std, squashed by tanh into [-1, 1]^A."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, net: Any) -> None:
        super().__init__()
        self.encoder = obs_encoder(observation_space, net)
        n_act = int(np.prod(action_space.shape))
        self.latent = mlp(self.encoder.dim, net, None)
        self.mu = _linear(_last(self.encoder.dim, net), n_act, 0.01, net.ortho_init)
        self.log_std = _linear(_last(self.encoder.dim, net), n_act, 0.01, net.ortho_init)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-squash Gaussian, [B, A] each."""
        h = self.latent(self.encoder(obs))
        return self.mu(h), torch.clamp(self.log_std(h), LOG_STD_MIN, LOG_STD_MAX)

    def noise(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """eps ~ N(0, I) [n, A] for ``sample``, from torch's global RNG."""
        return torch.randn(n, self.mu.out_features, device=device)

    def sample(self, obs: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample a = tanh(mu + sigma * eps) in [-1, 1]^A and its log-density [B]:
        log N(u; mu, sigma) - sum log(1 - tanh(u)^2) (paper eq. 21). ``eps``: ``noise(B)`` drawn
        by the caller (None: drawn here)."""
        mean, log_std = self(obs)
        eps = torch.randn_like(mean) if eps is None else eps
        raw = mean + log_std.exp() * eps
        logp = (-0.5 * eps.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1) - tanh_log_det_jacobian(raw)
        return torch.tanh(raw), logp

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class DeterministicActor(nn.Module):
    """TD3 / DDPG's actor mu(s) in [-1, 1]^A (tanh output, SB3 ``td3.policies.Actor``)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, net: Any) -> None:
        super().__init__()
        self.encoder = obs_encoder(observation_space, net)
        self.mu = mlp(self.encoder.dim, net, int(np.prod(action_space.shape)), 0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(self.encoder(obs)))

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)


class ContinuousCritic(nn.Module):
    """``n_critics`` independent Q(s, a) MLPs on [obs, unit action] (SB3 ``ContinuousCritic``;
    two for SAC and TD3's clipped double Q, one for DDPG)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, net: Any,
                 n_critics: int = 2) -> None:
        super().__init__()
        self.encoder = obs_encoder(observation_space, net)
        n_in = self.encoder.dim + int(np.prod(action_space.shape))
        self.qs = nn.ModuleList(mlp(n_in, net, 1, 1.0) for _ in range(n_critics))

    def forward(self, obs: torch.Tensor, unit_action: torch.Tensor) -> torch.Tensor:
        """Q values [n_critics, B]."""
        x = torch.cat([self.encoder(obs), unit_action], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])

    def q1(self, obs: torch.Tensor, unit_action: torch.Tensor) -> torch.Tensor:
        """The first critic only, [B] (TD3's actor loss uses Q_theta1, paper Algorithm 1)."""
        return self.qs[0](torch.cat([self.encoder(obs), unit_action], dim=-1)).squeeze(-1)


class QNetwork(nn.Module):
    """Q(s, .) for Discrete actions, [B, n] (Mnih et al. 2015; CleanRL dqn.py's QNetwork).

    ``dueling=True`` (Wang et al. 2016, https://arxiv.org/abs/1511.06581): the hidden layers but the
    last are shared; a value stream and an advantage stream each get the last hidden layer, and
    Q = V + A - mean_a A (paper eq. 9).
    """

    def __init__(self, observation_space: gym.Space, n_actions: int, net: Any, dueling: bool = False) -> None:
        super().__init__()
        self.n_actions = int(n_actions)
        self.encoder = obs_encoder(observation_space, net)
        self.dueling = dueling
        if not dueling:
            self.q = mlp(self.encoder.dim, net, n_actions, 1.0)
            return
        shared, stream = tuple(net.hidden_sizes[:-1]), tuple(net.hidden_sizes[-1:])
        self.trunk = mlp(self.encoder.dim, net, None, hidden=shared)
        n_in = shared[-1] if shared else self.encoder.dim
        self.value = mlp(n_in, net, 1, 1.0, hidden=stream)
        self.advantage = mlp(n_in, net, n_actions, 1.0, hidden=stream)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        if not self.dueling:
            return self.q(x)
        h = self.trunk(x)
        adv = self.advantage(h)
        return self.value(h) + adv - adv.mean(-1, keepdim=True)


class DiscreteActor(nn.Module):
    """SAC-Discrete's policy (Christodoulou 2019, https://arxiv.org/abs/1910.07207): logits [B, n]."""

    def __init__(self, observation_space: gym.Space, n_actions: int, net: Any) -> None:
        super().__init__()
        self.n_actions = int(n_actions)
        self.encoder = obs_encoder(observation_space, net)
        self.logits = mlp(self.encoder.dim, net, n_actions, 0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encoder(obs))

    def probs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pi(.|s), log pi(.|s)), [B, n] each."""
        logp = F.log_softmax(self(obs), dim=-1)
        return logp.exp(), logp


class DiscreteCritic(nn.Module):
    """``n_critics`` Q(s, .) networks for SAC-Discrete: [n_critics, B, n]."""

    def __init__(self, observation_space: gym.Space, n_actions: int, net: Any, n_critics: int = 2) -> None:
        super().__init__()
        self.qs = nn.ModuleList(QNetwork(observation_space, n_actions, net) for _ in range(n_critics))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([q(obs) for q in self.qs])


class BoxActionExport(nn.Module):
    """obs -> deterministic env action [B, *shape] (``actor.mode`` scaled to the bounds)."""

    def __init__(self, actor: nn.Module, scaler: ActionScaler) -> None:
        super().__init__()
        self.actor, self.scaler = actor, scaler

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scaler.to_env(self.actor.mode(obs))


class ArgmaxExport(nn.Module):
    """obs -> argmax_a net(obs) + start, int64 [B] (greedy Q, or the most likely SAC action)."""

    def __init__(self, net: nn.Module, start: int = 0) -> None:
        super().__init__()
        self.net, self.start = net, int(start)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).argmax(-1) + self.start
