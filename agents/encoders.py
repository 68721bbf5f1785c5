"""Observation encoders: observations ``[B, ...]`` (a tensor, or a dict of tensors for a Dict space)
-> float32 features ``[B, dim]``, what every network's MLP reads. Chosen from the observation space
(model: SB3's ``FlattenExtractor`` / ``NatureCNN`` / ``CombinedExtractor`` and ``is_image_space``,
stable_baselines3/common/torch_layers.py and preprocessing.py):

* a Box that is not an image: flattened and cast to float32, nothing learned, no scaling (an MLP
  policy's numerics are those of a plain MLP, as before encoders existed);
* a Discrete: one-hot;
* an image, a 3-D uint8 Box, channel-first ``[C, H, W]`` or channel-last ``[H, W, C]`` (the
  smallest side is the channels, SB3's ``is_image_space_channels_first``): the Nature-DQN CNN (Mnih
  et al. 2015, "Human-level control through deep reinforcement learning", Nature 518, Methods:
  32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1, a dense layer of 512, ReLU after each;
  CleanRL's dqn_atari.py and ppo_atari.py). It divides uint8 pixels by 255 itself, so observations
  stay uint8 (a quarter of float32's bytes) on the wire, in rollout storage and in replay, and only
  the network sees floats;
* a Dict: one encoder per key by the same rules, their features concatenated in the space's key
  order (SB3's ``CombinedExtractor``).

``kind`` (``ActorCriticConfig.encoder``): ``"auto"`` as above, an image needing at least
:data:`MIN_CNN_SIDE` pixels a side (smaller ones are flattened, as before); ``"mlp"`` flattens every
Box; ``"cnn"`` puts the CNN on every 3-D Box (any dtype; only uint8 is divided by 255).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colonyrl.config import ConfigError

__all__ = ["EncoderKind", "MIN_CNN_SIDE", "Encoder", "FlattenEncoder", "OneHotEncoder", "NatureCNN",
           "DictEncoder", "make_encoder", "is_image_space", "channels_first"]

EncoderKind = Literal["auto", "mlp", "cnn"]
#: The smallest image side the Nature CNN takes: (36 - 8) / 4 + 1 = 8, (8 - 4) / 2 + 1 = 3, 3 - 3 + 1 = 1.
MIN_CNN_SIDE = 36

Obs = torch.Tensor | Mapping[str, "Obs"]


def is_image_space(space: gym.Space) -> bool:
    """A 3-D uint8 Box (SB3's ``is_image_space`` without its bounds check: a frame stack of
    0..255 pixels is an image whatever bounds a wrapper declares)."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D image shape is ``[C, H, W]``: its smallest side comes first (SB3's rule)."""
    return int(np.argmin(shape)) == 0


class Encoder(nn.Module):
    """An encoder: ``dim`` output features per observation."""

    dim: int

    def forward(self, obs: Obs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class FlattenEncoder(Encoder):
    """Box obs ``[B, *shape]`` (any dtype) -> float32 ``[B, prod(shape)]``."""

    def __init__(self, space: gym.spaces.Box) -> None:
        super().__init__()
        self.dim = int(np.prod(space.shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if obs.dim() == 2 else obs.reshape(obs.shape[0], -1)
        return x.float()  # a no-op for float32


class OneHotEncoder(Encoder):
    """Discrete obs ``[B]`` (from ``start``) -> float32 one-hot ``[B, n]``."""

    def __init__(self, space: gym.spaces.Discrete) -> None:
        super().__init__()
        self.dim, self.start = int(space.n), int(space.start)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return F.one_hot(obs.long().reshape(-1) - self.start, self.dim).float()


def _layer(layer: nn.Conv2d | nn.Linear, ortho: bool) -> nn.Module:
    if ortho:  # CleanRL ppo_atari.py layer_init: orthogonal, gain sqrt(2), zero bias (SB3 the same)
        nn.init.orthogonal_(layer.weight, math.sqrt(2.0))
        nn.init.constant_(layer.bias, 0.0)
    return layer


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class NatureCNN(Encoder):
    """The Nature-DQN torso (module docstring) on image obs ``[B, C, H, W]`` or ``[B, H, W, C]``
    -> float32 ``[B, features_dim]``; uint8 pixels are divided by 255 here."""

    def __init__(self, space: gym.spaces.Box, features_dim: int = 512, ortho_init: bool = True,
                 where: str = "ActorCriticConfig.encoder") -> None:
        super().__init__()
        if len(space.shape) != 3:
            raise ConfigError(where, "cnn", f"'auto' or 'mlp' for observations of shape {space.shape} (the CNN "
                              "takes 3-D images [C, H, W] or [H, W, C])")
        self.first = channels_first(tuple(space.shape))
        c, h, w = space.shape if self.first else (space.shape[2], space.shape[0], space.shape[1])
        if min(h, w) < MIN_CNN_SIDE:
            raise ConfigError(where, "cnn", f"'mlp' for {h}x{w} images (the Nature CNN needs at least "
                              f"{MIN_CNN_SIDE}x{MIN_CNN_SIDE})")
        self.scale = bool(space.dtype == np.uint8)
        self.dim = int(features_dim)
        self.cnn = nn.Sequential(
            _layer(nn.Conv2d(c, 32, 8, stride=4), ortho_init), nn.ReLU(),
            _layer(nn.Conv2d(32, 64, 4, stride=2), ortho_init), nn.ReLU(),
            _layer(nn.Conv2d(64, 64, 3, stride=1), ortho_init), nn.ReLU(),
            nn.Flatten())
        oh, ow = (_conv_out(_conv_out(_conv_out(s, 8, 4), 4, 2), 3, 1) for s in (h, w))
        self.linear = nn.Sequential(_layer(nn.Linear(64 * oh * ow, self.dim), ortho_init), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if self.scale:
            x = x / 255.0  # CleanRL: self.network(x / 255.0)
        if not self.first:
            x = x.permute(0, 3, 1, 2)
        return self.linear(self.cnn(x))


class DictEncoder(Encoder):
    """Dict obs ``{key: [B, ...]}`` -> the concatenated features of one encoder per key, in the
    space's key order (SB3's ``CombinedExtractor``)."""

    def __init__(self, space: gym.spaces.Dict, kind: EncoderKind = "auto", features_dim: int = 512,
                 ortho_init: bool = True, where: str = "ActorCriticConfig.encoder") -> None:
        super().__init__()
        for key in space.spaces:
            # nn.ModuleDict refuses '.', the wire and the storage join nested keys with '/'
            if not isinstance(key, str) or not key or "." in key or "/" in key:
                raise ConfigError("observation_space", space, "a Dict whose keys are non-empty strings without "
                                  f"'.' or '/' (got key {key!r})")
        self.keys = tuple(space.spaces)
        self.encoders = nn.ModuleDict({key: make_encoder(sub, kind, features_dim, ortho_init, where, nested=True)
                                       for key, sub in space.spaces.items()})
        self.dim = sum(encoder.dim for encoder in self.encoders.values())

    def forward(self, obs: Mapping[str, Obs]) -> torch.Tensor:
        return torch.cat([self.encoders[key](obs[key]) for key in self.keys], dim=1)


def make_encoder(space: gym.Space, kind: EncoderKind = "auto", features_dim: int = 512, ortho_init: bool = True,
                 where: str = "ActorCriticConfig.encoder", nested: bool = False) -> Encoder:
    """The encoder for ``space`` (module docstring). ``where`` names the config field in errors;
    ``nested``: a Dict's entry, where ``"cnn"`` flattens what is not 3-D instead of refusing it."""
    if isinstance(space, gym.spaces.Dict):
        return DictEncoder(space, kind, features_dim, ortho_init, where)
    if isinstance(space, gym.spaces.Discrete):
        return OneHotEncoder(space)
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError("observation_space", space, "a Box, a Discrete or a Dict of them")
    if kind == "cnn" and (len(space.shape) == 3 or not nested):
        return NatureCNN(space, features_dim, ortho_init, where)
    if kind == "auto" and is_image_space(space):
        sides = space.shape[1:] if channels_first(tuple(space.shape)) else space.shape[:2]
        if min(sides) >= MIN_CNN_SIDE:
            return NatureCNN(space, features_dim, ortho_init, where)
    return FlattenEncoder(space)
