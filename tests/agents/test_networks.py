"""ActorCritic construction, shapes, init, validation, and the torch.export path."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.encoders import DictEncoder, FlattenEncoder, NatureCNN, OneHotEncoder, make_encoder
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport, export_policy
from colonyrl.agents.q_networks import ContinuousCritic, QNetwork
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
        cfg.build(gym.spaces.Tuple((CARTPOLE[0], CARTPOLE[0])), CARTPOLE[1])  # a Dict is taken, a Tuple not
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


# -- observation encoders (agents/encoders.py): the Nature CNN on uint8 images, Dict observations ------
ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)  # a frame stack of 4, channel-first
SMALL_IMAGE = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)  # the smallest the Nature CNN takes
DICT_OBS = gym.spaces.Dict({"image": SMALL_IMAGE, "vec": gym.spaces.Box(-1.0, 1.0, (5,), np.float32),
                            "level": gym.spaces.Discrete(3)})


def _batch(space: gym.Space, n: int, seed: int = 0):
    """``n`` samples of ``space`` as tensors of its dtype (a dict of them for a Dict)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, gym.spaces.Dict):
        return {key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in space.spaces}
    return torch.as_tensor(np.stack(samples))


def test_nature_cnn_on_84x84x4_uint8_frames() -> None:
    ac = ActorCriticConfig(hidden_sizes=()).build(ATARI, gym.spaces.Discrete(6))
    assert isinstance(ac.encoder, NatureCNN) and ac.obs_dim == 512
    convs = [m for m in ac.encoder.cnn if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                         (64, (3, 3), (1, 1))]
    assert ac.encoder.linear[0].in_features == 64 * 7 * 7  # 84 -> 20 -> 9 -> 7 (Mnih et al. 2015)
    obs = _batch(ATARI, 3)
    assert obs.dtype == torch.uint8
    features = ac.preprocess(obs)
    assert features.shape == (3, 512) and features.dtype == torch.float32
    logits, value = ac(obs)
    assert logits.shape == (3, 6) and value.shape == (3,)
    # channel-last frames take the same CNN, transposed inside the network
    last = ActorCriticConfig(hidden_sizes=()).build(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(6))
    last.load_state_dict(ac.state_dict())
    torch.testing.assert_close(last(obs.permute(0, 2, 3, 1))[0], logits)


def test_uint8_pixels_are_divided_by_255_inside_the_network() -> None:
    encoder = make_encoder(SMALL_IMAGE)
    obs = _batch(SMALL_IMAGE, 4)
    expected = encoder.linear(encoder.cnn(obs.float() / 255.0))
    torch.testing.assert_close(encoder(obs), expected)
    # a float image under encoder="cnn" is taken as it is (only uint8 is scaled)
    floats = gym.spaces.Box(0.0, 1.0, (3, 36, 36), np.float32)
    encoder = make_encoder(floats, "cnn")
    x = _batch(floats, 2)
    torch.testing.assert_close(encoder(x), encoder.linear(encoder.cnn(x)))


def test_auto_flattens_images_too_small_for_the_cnn_and_flat_boxes() -> None:
    assert isinstance(make_encoder(gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)), FlattenEncoder)
    assert isinstance(make_encoder(CARTPOLE[0]), FlattenEncoder)
    assert isinstance(make_encoder(SMALL_IMAGE, "mlp"), FlattenEncoder)
    # the MLP actor-critic of a flat Box has no encoder parameters: the SB3 parity layout is unchanged
    ac = ActorCriticConfig().build(*CARTPOLE)
    assert not list(ac.encoder.parameters()) and [n for n, _ in ac.named_parameters()][0] == "pi.0.weight"


def test_dict_encoder_concatenates_one_encoder_per_key() -> None:
    encoder = make_encoder(DICT_OBS, "auto", 64)
    assert isinstance(encoder, DictEncoder) and encoder.keys == ("image", "level", "vec")  # gymnasium sorts keys
    assert isinstance(encoder.encoders["image"], NatureCNN) and isinstance(encoder.encoders["level"], OneHotEncoder)
    assert isinstance(encoder.encoders["vec"], FlattenEncoder)
    assert encoder.dim == 64 + 3 + 5
    obs = _batch(DICT_OBS, 6)
    out = encoder(obs)
    assert out.shape == (6, 72)
    torch.testing.assert_close(out, torch.cat([encoder.encoders[k](obs[k]) for k in ("image", "level", "vec")], 1))
    ac = ActorCriticConfig(cnn_features_dim=64).build(DICT_OBS, gym.spaces.Discrete(2))
    assert ac.obs_dim == 72 and ac(obs)[0].shape == (6, 2)


@pytest.mark.parametrize(
    ("space", "kwargs", "match"),
    [(CARTPOLE[0], {"encoder": "cnn"}, "ActorCriticConfig.encoder"),
     (gym.spaces.Box(0, 255, (3, 20, 20), np.uint8), {"encoder": "cnn"}, "ActorCriticConfig.encoder"),
     (gym.spaces.Dict({"a.b": CARTPOLE[0]}), {}, "observation_space")],
)
def test_encoder_choices_that_do_not_fit_the_space_name_the_field(space: gym.Space, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ActorCriticConfig(**kwargs).build(space, gym.spaces.Discrete(2))


def test_encoder_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="encoder"):
        ActorCriticConfig(encoder="resnet")
    with pytest.raises(ConfigError, match="cnn_features_dim"):
        ActorCriticConfig(cnn_features_dim=0)


def test_off_policy_networks_take_the_encoders() -> None:
    net = ActorCriticConfig(hidden_sizes=(), cnn_features_dim=32, ortho_init=False)
    q = QNetwork(DICT_OBS, 4, net)
    assert isinstance(q.encoder, DictEncoder) and q(_batch(DICT_OBS, 3)).shape == (3, 4)
    critic = ContinuousCritic(SMALL_IMAGE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), net)
    assert isinstance(critic.encoder, NatureCNN) and critic(_batch(SMALL_IMAGE, 3), torch.zeros(3, 2)).shape == (2, 3)


def test_export_of_a_dict_observation_policy_acts_as_the_framework_policy(tmp_path) -> None:
    ac = ActorCriticConfig(hidden_sizes=(16,), cnn_features_dim=32).build(DICT_OBS, gym.spaces.Discrete(3))
    path = str(tmp_path / "policy.pt2")
    export_policy(ac, path)
    loaded = torch.export.load(path).module()
    for n in (1, 5):
        obs = _batch(DICT_OBS, n, seed=n)
        assert obs["image"].dtype == torch.uint8  # the exported program takes the uint8 frames themselves
        with torch.no_grad():
            expected = ac.act(obs, deterministic=True)[1]
        out = loaded(obs)
        assert out.dtype == expected.dtype and torch.equal(out, expected)
