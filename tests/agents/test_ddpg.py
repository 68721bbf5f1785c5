"""DDPG: TD3's machinery with one critic, no delay and no target smoothing."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.ddpg import DDPGConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.td3 import TD3Config
from colonyrl.config import ConfigError, from_dict

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


def make_batch(n: int = 8, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    OBS.seed(seed)
    BOX.seed(seed)
    obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    next_obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    actions = torch.as_tensor(np.stack([BOX.sample() for _ in range(n)]))
    return Batch(obs, actions, torch.as_tensor(rng.normal(size=n).astype(np.float32)), next_obs,
                 torch.as_tensor(np.array([0, 1] * (n // 2), np.float32)), torch.full((n,), 0.9),
                 torch.as_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)), torch.arange(n))


def build(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return DDPGConfig(**kw).build(OBS, BOX, NET)


def test_one_critic_and_the_plain_bellman_target():
    algo, batch = build(), make_batch()
    assert len(algo.critic.qs) == 1
    with torch.no_grad():
        next_q = algo.critic_target(batch.next_obs, algo.actor_target(batch.next_obs))[0]
        y = batch.rewards + 0.9 * (1 - batch.terminated) * next_q
        q = algo.critic(batch.obs, batch.actions / 2.0)[0]  # [-2, 2] -> [-1, 1]
    out = algo.loss(batch)
    assert out.critic_loss.item() == pytest.approx((batch.weights * (q - y) ** 2).mean().item(), rel=1e-5)
    torch.testing.assert_close(out.td_abs, (q - y).abs())
    terminal = batch.terminated == 1
    torch.testing.assert_close(y[terminal], batch.rewards[terminal])  # no bootstrap after termination


def test_no_target_smoothing_makes_gradients_deterministic():
    algo, batch = build(), make_batch()
    torch.manual_seed(1)
    first = algo.compute_gradients(batch).grads
    torch.manual_seed(2)
    second = algo.compute_gradients(batch).grads
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_actor_and_targets_move_every_apply():
    algo, batch = build(tau=0.5), make_batch()
    for _ in range(3):
        before = algo.get_weights()
        metrics = algo.apply_gradients(algo.compute_gradients(batch).grads)
        after = algo.get_weights()
        for prefix in ("actor.", "critic.", "actor_target.", "critic_target."):
            assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
        assert metrics["actor_updated"] == 1.0


def test_half_batch_gradients_average_to_the_full_batch_gradient():
    algo, batch = build(), make_batch()
    full = algo.compute_gradients(batch)
    first = algo.compute_gradients(Batch(*(t[:6] for t in batch)))
    second = algo.compute_gradients(Batch(*(t[6:] for t in batch)))
    for g, g1, g2 in zip(full.grads, first.grads, second.grads, strict=True):
        torch.testing.assert_close(g, (6 * g1 + 2 * g2) / 8, atol=1e-6, rtol=1e-5)


def test_state_dict_round_trip_and_acting_weights():
    algo, batch = build(seed=1), make_batch()
    algo.apply_gradients(algo.compute_gradients(batch).grads)
    restored = build(seed=2)
    restored.load_state_dict(algo.state_dict())
    for a in (algo, restored):
        a.apply_gradients(a.compute_gradients(batch).grads)
    for k, v in algo.get_weights().items():
        np.testing.assert_array_equal(v, restored.get_weights()[k], err_msg=k)
    assert all(k.startswith("actor.") for k in algo.acting_weights())
    assert isinstance(restored.config, DDPGConfig)


def test_config_identity_and_bad_space():
    assert DDPGConfig.name == "ddpg" and DDPGConfig.acting_parameters == frozenset({"action_noise"})
    fields = {f.name for f in dataclasses.fields(DDPGConfig)}
    assert fields != {f.name for f in dataclasses.fields(TD3Config)}  # a config union tells them apart
    assert from_dict(DDPGConfig, dataclasses.asdict(DDPGConfig(lr=1e-4))) == DDPGConfig(lr=1e-4)
    with pytest.raises(ConfigError, match="DDPGConfig.action_space"):
        DDPGConfig().build(OBS, gym.spaces.Discrete(2), NET)
    with pytest.raises(ConfigError):
        build().update_parameter("policy_delay", 2)  # not a DDPG parameter


def test_export_with_dynamic_batch():
    policy = DDPGConfig().build_policy(OBS, BOX, NET)
    program = torch.export.export(policy.export_module(), (make_batch(n=2).obs,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    obs = make_batch(n=6, seed=4).obs
    with torch.no_grad():
        exported = program.module()(obs).numpy()
    np.testing.assert_allclose(exported, policy.act(obs.numpy(), deterministic=True).env_action, rtol=1e-6)
