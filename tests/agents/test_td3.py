"""TD3: target policy smoothing, the clipped double-Q target, the delayed actor and target
updates, and the Algorithm / Policy contracts."""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import ReplayPlan
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.td3 import TD3Config, deterministic_actor_loss, smoothed_target_action
from colonyrl.config import ConfigError

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


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
                 torch.as_tensor((rng.random(n) < 0.3).astype(np.float32)), torch.full((n,), 0.99),
                 torch.as_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)), torch.arange(n))


def build(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return TD3Config(**kw).build(OBS, BOX, NET)


def arrays(algo, prefix: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in algo.get_weights().items() if k.startswith(prefix)}


def changed(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


def test_smoothed_target_action_clips_noise_then_action(monkeypatch):
    a = torch.tensor([[0.9, -0.2]])
    assert torch.equal(smoothed_target_action(a, 0.0, 0.5), a)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.tensor([[10.0, -10.0]]))
    # noise 0.2 * [10, -10] = [2, -2] -> clipped to [0.5, -0.5]; 0.9 + 0.5 -> clipped to 1
    torch.testing.assert_close(smoothed_target_action(a, 0.2, 0.5), torch.tensor([[1.0, -0.7]]))


def test_deterministic_actor_loss():
    assert deterministic_actor_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])).item() == pytest.approx(-2.5)


def test_critic_loss_uses_min_of_target_critics_and_terminal_mask():
    algo, batch = build(target_policy_noise=0.0), make_batch()
    with torch.no_grad():
        next_a = algo.actor_target(batch.next_obs)
        q1, q2 = algo.critic_target(batch.next_obs, next_a)
        y = batch.rewards + batch.discounts * (1 - batch.terminated) * torch.minimum(q1, q2)
        unit = 2 * (batch.actions - torch.as_tensor(BOX.low)) / torch.as_tensor(BOX.high - BOX.low) - 1
        c1, c2 = algo.critic(batch.obs, unit)
        expected = (batch.weights * (c1 - y) ** 2).mean() + (batch.weights * (c2 - y) ** 2).mean()
    out = algo.loss(batch)
    assert out.critic_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(out.td_abs.numpy(), torch.maximum((c1 - y).abs(), (c2 - y).abs()).numpy(), rtol=1e-5)


def test_actor_moves_only_every_policy_delay_applies():
    algo, batch = build(policy_delay=3, tau=0.5), make_batch()
    for step in range(1, 7):
        actor, critic = arrays(algo, "actor."), arrays(algo, "critic.")
        targets = {**arrays(algo, "actor_target."), **arrays(algo, "critic_target.")}
        metrics = algo.apply_gradients(algo.compute_gradients(batch).grads)
        actor_step = step % 3 == 0
        assert changed(critic, arrays(algo, "critic."))
        assert changed(actor, arrays(algo, "actor.")) == actor_step, step
        assert changed(targets, {**arrays(algo, "actor_target."), **arrays(algo, "critic_target.")}) == actor_step
        assert metrics["actor_updated"] == float(actor_step)
    assert algo.n_updates == 6


def test_targets_move_by_tau_on_actor_steps():
    algo = build(policy_delay=1, tau=0.25)
    before = algo.get_weights()
    algo.apply_gradients(algo.compute_gradients(make_batch()).grads)
    after = algo.get_weights()
    for net in ("actor", "critic"):
        for key in (k for k in before if k.startswith(net + ".")):
            target = f"{net}_target.{key[len(net) + 1:]}"
            np.testing.assert_allclose(after[target], 0.75 * before[target] + 0.25 * after[key], rtol=1e-5, atol=1e-7)


def test_half_batch_gradients_average_to_the_full_batch_gradient(monkeypatch):
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.full_like(x, 0.7))
    algo, batch = build(), make_batch()
    full = algo.compute_gradients(batch)
    first = algo.compute_gradients(Batch(*(t[:5] for t in batch)))
    second = algo.compute_gradients(Batch(*(t[5:] for t in batch)))
    for g, g1, g2 in zip(full.grads, first.grads, second.grads, strict=True):
        torch.testing.assert_close(g, (5 * g1 + 3 * g2) / 8, atol=1e-6, rtol=1e-5)
    assert len(full.grads) == len(algo.parameters())


def test_actor_gradients_do_not_leak_into_the_critic():
    algo, batch = build(), make_batch()
    torch.manual_seed(3)
    out = algo.loss(batch)
    critic_params = list(algo.critic.parameters())
    critic_only = torch.autograd.grad(out.critic_loss, critic_params)
    torch.manual_seed(3)
    grads = algo.compute_gradients(batch).grads
    n_actor = len(list(algo.actor.parameters()))
    for g, expected in zip(grads[n_actor:], critic_only, strict=True):
        torch.testing.assert_close(g, expected)
    assert all(g.abs().sum() > 0 for g in grads[:n_actor:2])  # the actor does get its gradient


def test_acting_weights_and_exploration_noise():
    algo = build(action_noise=0.3)
    acting = algo.acting_weights()
    assert acting and all(k.startswith("actor.") for k in acting)
    policy = TD3Config(action_noise=0.3, learning_starts=0).build_policy(OBS, BOX, NET)
    policy.set_weights(acting)
    obs = make_batch().obs.numpy()
    greedy = policy.act(obs, deterministic=True)
    np.testing.assert_array_equal(greedy.env_action, algo.policy.act(obs, deterministic=True).env_action)
    noisy = policy.act(obs)
    assert not np.array_equal(noisy.env_action, greedy.env_action)
    assert (noisy.env_action >= BOX.low).all() and (noisy.env_action <= BOX.high).all()
    np.testing.assert_array_equal(noisy.action, noisy.env_action)
    assert noisy.action.dtype == np.float32 and noisy.action.shape == (8, 2)
    policy.update_parameter("action_noise", 0.0)
    np.testing.assert_array_equal(policy.act(obs).env_action, greedy.env_action)
    assert policy.state_dict() == {"parameters": {"action_noise": 0.0}, "warmup_left": 0}
    with pytest.raises(ConfigError):
        policy.update_parameter("lr", 1e-3)
    with pytest.raises(ConfigError):
        policy.update_parameter("action_noise", -0.1)


def test_algorithm_update_parameter_reaches_the_policy():
    algo = build()
    algo.update_parameter("action_noise", 0.25)
    assert algo.policy.config.action_noise == 0.25 and algo.config.action_noise == 0.25
    algo.update_parameter("lr", 3e-4)
    assert all(g["lr"] == 3e-4 for opt in algo.optimizers.values() for g in opt.param_groups)
    assert algo.update_plan() == ReplayPlan(256, 100, 1.0)
    assert TD3Config.acting_parameters == frozenset({"action_noise"}) and TD3Config.storage_kind == "replay"


def test_state_dict_round_trip_keeps_the_delay_phase():
    algo, batch = build(seed=1), make_batch()
    algo.apply_gradients(algo.compute_gradients(batch).grads)  # n_updates = 1: the next apply steps the actor
    state = algo.state_dict()
    restored = build(seed=2)
    restored.load_state_dict(state)
    for a in (algo, restored):
        torch.manual_seed(5)
        for _ in range(3):
            a.apply_gradients(a.compute_gradients(batch).grads)
    for k, v in algo.get_weights().items():
        np.testing.assert_array_equal(v, restored.get_weights()[k], err_msg=k)


def test_export_with_dynamic_batch():
    policy = build().policy
    program = torch.export.export(policy.export_module(), (make_batch(n=2).obs,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    obs = make_batch(n=5, seed=3).obs
    with torch.no_grad():
        exported = program.module()(obs).numpy()
    np.testing.assert_allclose(exported, policy.act(obs.numpy(), deterministic=True).env_action, rtol=1e-6)


def test_discrete_action_space_raises_config_error():
    with pytest.raises(ConfigError, match="TD3Config.action_space"):
        TD3Config().build(OBS, gym.spaces.Discrete(3), NET)
    with pytest.raises(ConfigError, match="TD3Config.action_space"):
        TD3Config().build_policy(OBS, gym.spaces.Discrete(3), NET)



def test_loss_threads_is_one_or_two():
    with pytest.raises(ConfigError, match="TD3Config.loss_threads"):
        TD3Config(loss_threads=0)
