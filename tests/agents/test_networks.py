"""ActorCritic construction, shapes, init, validation, and the torch.export path."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport, export_policy
from colonyrl.config import ConfigError

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
PENDULUM = (gym.spaces.Box(-8.0, 8.0, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))


def _obs(space: gym.Space, n: int, seed: int = 0) -> torch.Tensor:
    space.seed(seed)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


@pytest.mark.parametrize("shared", [False, True])
def test_discrete_shapes_and_dtypes(shared: bool) -> None:
    ac = ActorCriticConfig(shared_trunk=shared).build(*CARTPOLE)
    obs = torch.randn(8, 4)
    logits, value = ac(obs)
    assert logits.shape == (8, 2) and value.shape == (8,)
    action, env_action, logp, v = ac.act(obs)
    assert action.dtype == torch.int64 and action.shape == (8,)
    assert torch.equal(action, env_action) and logp.shape == (8,) and torch.equal(v, value)
    det = ac.act(obs, deterministic=True)[0]
    assert torch.equal(det, logits.argmax(-1))
    torch.testing.assert_close(ac.value(obs), value)


def test_separate_trunks_by_default() -> None:
    ac = ActorCriticConfig().build(*CARTPOLE)
    assert ac.trunk is None
    assert isinstance(ac.pi, torch.nn.Sequential) and isinstance(ac.vf, torch.nn.Sequential)
    sizes = [tuple(p.shape) for p in ac.parameters()]
    assert sizes == [(64, 4), (64,), (64, 64), (64,), (2, 64), (2,),
                     (64, 4), (64,), (64, 64), (64,), (1, 64), (1,)]


def test_orthogonal_init_gains() -> None:
    """CleanRL layer_init: orthogonal rows scaled by the gain, zero bias."""
    ac = ActorCriticConfig().build(*CARTPOLE)
    for layer, gain in ((ac.pi[2], math.sqrt(2)), (ac.pi[4], 0.01), (ac.vf[4], 1.0)):
        w = layer.weight.detach().double()
        torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(w.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
        assert not layer.bias.any()


def test_box_clip_and_squash_actions() -> None:
    for squash in (False, True):
        ac = ActorCriticConfig(squash=squash, log_std_init=2.0).build(*PENDULUM)
        action, env_action, logp, value = ac.act(torch.randn(256, 3))
        assert action.shape == env_action.shape == (256, 1) and action.dtype == torch.float32
        assert bool(((env_action >= -2) & (env_action <= 2)).all())
        assert bool((action.abs() > 2).any())  # the stored action is the raw, unclipped sample
        assert logp.shape == value.shape == (256,)
        assert ac.log_std.tolist() == [2.0]


def test_multi_dim_box_action_and_image_obs() -> None:
    obs_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
    ac = ActorCriticConfig(hidden_sizes=(16,), activation="relu").build(obs_space, act_space)
    action, env_action, logp, value = ac.act(_obs(obs_space, 5))
    assert action.shape == (5, 2, 2) and logp.shape == (5,) and value.shape == (5,)


def test_discrete_obs_is_one_hot() -> None:
    ac = ActorCriticConfig(hidden_sizes=(8,)).build(gym.spaces.Discrete(6, start=1), gym.spaces.Discrete(3, start=-1))
    obs = torch.tensor([1, 6, 3])
    assert torch.equal(ac.preprocess(obs), torch.eye(6)[[0, 5, 2]])
    action, env_action, _, _ = ac.act(obs)
    assert torch.equal(env_action, action - 1)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"hidden_sizes": (64, 0)}, "hidden_sizes"), ({"activation": "gelu"}, "activation"),
     ({"log_std_init": float("nan")}, "log_std_init")],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ActorCriticConfig(**kwargs)


def test_unsupported_spaces_raise_config_error() -> None:
    cfg = ActorCriticConfig()
    with pytest.raises(ConfigError, match="action_space"):
        cfg.build(CARTPOLE[0], gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ConfigError, match="observation_space"):
        cfg.build(gym.spaces.Dict({"a": CARTPOLE[0]}), CARTPOLE[1])
    with pytest.raises(ConfigError, match="squash"):
        ActorCriticConfig(squash=True).build(CARTPOLE[0], gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))


@pytest.mark.parametrize("spaces", [CARTPOLE, PENDULUM], ids=["cartpole", "pendulum"])
@pytest.mark.parametrize("squash", [False, True])
def test_export_save_load_run(tmp_path, spaces: tuple[gym.Space, gym.Space], squash: bool) -> None:
    ac: ActorCritic = ActorCriticConfig(squash=squash).build(*spaces)
    path = str(tmp_path / "policy.pt2")
    export_policy(ac, path)
    loaded = torch.export.load(path).module()  # plain torch: no colonyrl needed to run it
    for n in (1, 7, 300):
        obs = _obs(spaces[0], n, seed=n)
        out = loaded(obs)
        expected = PolicyExport(ac)(obs)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        torch.testing.assert_close(out, expected)
        if isinstance(spaces[1], gym.spaces.Box):
            assert bool(((out >= -2) & (out <= 2)).all())


def test_torch_export_directly() -> None:
    ac = ActorCriticConfig().build(*CARTPOLE)
    obs = torch.randn(4, 4)
    ep = torch.export.export(PolicyExport(ac), (obs,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.testing.assert_close(ep.module()(obs), ac(obs)[0].argmax(-1))
