"""``MLP``: an ``nn.Sequential`` of Linear layers and activations that runs them as functional calls.

Why: acting steps one observation at a time, where the work of a (64, 64) MLP is tiny and the
per-module call is most of its cost: on HalfCheetah-v5's 17 inputs one ``nn.Sequential`` of 5
modules took ~27 us per call here, the same layers as ``F.linear`` / ``torch.tanh`` calls ~14 us
(PyTorch's ``Module.__call__`` goes through its hook dispatch for every layer; see
``torch/nn/modules/module.py``, ``_call_impl``). The parameters, the state-dict keys
(``0.weight``, ``0.bias``, ...) and autograd are those of the ``nn.Sequential`` it replaces, so
checkpoints, weights on the wire and exported programs are unchanged. A layer of another kind
is called as a module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            kind = type(layer)
            if kind is nn.Linear:
                x = F.linear(x, layer.weight, layer.bias)
            elif kind is nn.Tanh:
                x = torch.tanh(x)
            elif kind is nn.ReLU:
                x = torch.relu(x)
            else:
                x = layer(x)
        return x
