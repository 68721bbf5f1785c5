"""agents/mlp.py: ``MLP`` computes what ``nn.Sequential`` of the same layers computes, with the same
state-dict keys and gradients, and calls a layer of another kind as a module."""

from __future__ import annotations

import torch
from torch import nn

from colonyrl.agents.mlp import MLP


def _layers(activation: type[nn.Module]) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(5, 8), activation(), nn.Linear(8, 8), activation(), nn.Linear(8, 3)]


def test_mlp_matches_sequential_outputs_gradients_and_state_dict_keys() -> None:
    for activation in (nn.Tanh, nn.ReLU):
        layers = _layers(activation)
        fast, plain = MLP(*layers), nn.Sequential(*layers)  # the very same parameters
        assert list(fast.state_dict()) == list(plain.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                                       "4.weight", "4.bias"]
        x = torch.randn(7, 5)
        out_fast, out_plain = fast(x), plain(x)
        assert torch.equal(out_fast, out_plain)
        g_fast = torch.autograd.grad(out_fast.square().sum(), list(fast.parameters()))
        g_plain = torch.autograd.grad(out_plain.square().sum(), list(plain.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(g_fast, g_plain, strict=True))


def test_mlp_calls_a_layer_of_another_kind_as_a_module() -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(4, 6), nn.ELU(), nn.LayerNorm(6), nn.Linear(6, 2)]
    x = torch.randn(3, 4)
    assert torch.equal(MLP(*layers)(x), nn.Sequential(*layers)(x))
    assert not torch.equal(MLP(*layers)(x), MLP(layers[0], layers[3])(x))  # the ELU and LayerNorm did act
