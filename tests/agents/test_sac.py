"""SAC (Box and Discrete): the losses against hand-computed values, and the Algorithm / Policy
contracts (compute -> apply, split batches, targets, weights, checkpoints, export)."""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import Algorithm, Policy, ReplayPlan
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.q_networks import SquashedGaussianActor
from colonyrl.agents.sac import SACConfig, actor_loss, ent_coef_loss, soft_q_target, twin_q_loss
from colonyrl.agents.sac_discrete import discrete_actor_loss, soft_state_value
from colonyrl.config import ConfigError

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
DISCRETE = gym.spaces.Discrete(3, start=1)


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


def make_batch(action_space: gym.Space, n: int = 8, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    OBS.seed(seed)
    action_space.seed(seed)
    obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    next_obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    actions = np.stack([action_space.sample() for _ in range(n)])
    if isinstance(action_space, gym.spaces.Discrete):
        actions = actions.astype(np.int64) - int(action_space.start)
    return Batch(obs, torch.as_tensor(actions), torch.as_tensor(rng.normal(size=n).astype(np.float32)), next_obs,
                 torch.as_tensor((rng.random(n) < 0.3).astype(np.float32)), torch.full((n,), 0.99),
                 torch.as_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)), torch.arange(n))


def build(action_space: gym.Space = BOX, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return SACConfig(**kw).build(OBS, action_space, NET)


def fixed_noise(monkeypatch):
    """The reparameterization noise as a constant, so halves of a batch see the same samples."""
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.full_like(x, 0.3))
    monkeypatch.setattr(SquashedGaussianActor, "noise",
                        lambda self, n, device=None: torch.full((n, self.mu.out_features), 0.3))


def flat(tensors) -> torch.Tensor:
    return torch.cat([torch.as_tensor(t).reshape(-1) for t in tensors])


# -- losses --------------------------------------------------------------------------------------
def test_soft_q_target_bootstraps_only_non_terminal_samples():
    y = soft_q_target(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 0.81]), torch.tensor([0.0, 1.0]),
                      next_q_min=torch.tensor([10.0, 10.0]), next_logp=torch.tensor([-1.0, -1.0]), alpha=0.5)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (10.0 + 0.5), 2.0]))


def test_twin_q_loss_weighted_and_priorities_are_the_max_td():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # [critic, sample]
    loss, td_abs = twin_q_loss(q, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 3.0]))
    # td = [[-1, 0], [1, -2]]: 0.5 * ((1 + 0) / 2 + (1 + 3 * 4) / 2)
    assert loss.item() == pytest.approx(3.5)
    torch.testing.assert_close(td_abs, torch.tensor([1.0, 2.0]))
    assert twin_q_loss(q, torch.tensor([2.0, 2.0]), torch.ones(2), scale=1.0)[0].item() == pytest.approx(3.0)


def test_actor_loss_hand_computed():
    loss = actor_loss(torch.tensor([-1.0, -2.0]), torch.tensor([3.0, 1.0]), 0.5, torch.tensor([1.0, 2.0]))
    assert loss.item() == pytest.approx((1 * (-0.5 - 3) + 2 * (-1 - 1)) / 2)


def test_ent_coef_loss_value_and_direction():
    log_alpha = torch.tensor([math.log(2.0)], requires_grad=True)
    logp = torch.tensor([-1.0, -3.0], requires_grad=True)  # entropy estimate 2 > target entropy -2
    loss = ent_coef_loss(log_alpha, logp, -2.0, torch.ones(2))
    assert loss.item() == pytest.approx(4.0 * math.log(2.0))  # -mean(log 2 * [-3, -5])
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(4.0)  # > 0: descent lowers alpha
    assert logp.grad is None  # log pi is detached: the alpha loss never moves the actor


def test_squashed_sample_log_prob_matches_torch_distributions():
    algo = build()
    obs = make_batch(BOX).obs
    torch.manual_seed(1)
    unit, logp = algo.actor.sample(obs)
    mean, log_std = algo.actor(obs)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.TanhTransform())
    clipped = unit.clamp(-1 + 1e-6, 1 - 1e-6)
    torch.testing.assert_close(logp, dist.log_prob(clipped).sum(-1), atol=1e-3, rtol=1e-4)
    assert unit.abs().max() <= 1.0


def test_discrete_soft_value_and_actor_loss_hand_computed():
    probs = torch.tensor([[0.25, 0.75]])
    logp = probs.log()
    q = torch.tensor([[1.0, 2.0]])
    expected_v = 0.25 * (1.0 - 0.5 * math.log(0.25)) + 0.75 * (2.0 - 0.5 * math.log(0.75))
    assert soft_state_value(probs, logp, q, 0.5).item() == pytest.approx(expected_v)
    expected_pi = 0.25 * (0.5 * math.log(0.25) - 1.0) + 0.75 * (0.5 * math.log(0.75) - 2.0)
    assert discrete_actor_loss(probs, logp, q, 0.5, torch.ones(1)).item() == pytest.approx(expected_pi)


def test_box_critic_loss_matches_hand_computation(monkeypatch):
    fixed_noise(monkeypatch)
    algo, batch = build(ent_coef=0.5), make_batch(BOX)
    with torch.no_grad():
        mean, log_std = algo.actor(batch.next_obs)
        raw = mean + log_std.exp() * 0.3
        logp = (torch.distributions.Normal(mean, log_std.exp()).log_prob(raw)
                - torch.log(1 - torch.tanh(raw) ** 2)).sum(-1)
        q1t, q2t = algo.critic_target(batch.next_obs, torch.tanh(raw))
        y = batch.rewards + 0.99 * (1 - batch.terminated) * (torch.minimum(q1t, q2t) - 0.5 * logp)
        low, high = torch.as_tensor(BOX.low), torch.as_tensor(BOX.high)
        q1, q2 = algo.critic(batch.obs, 2 * (batch.actions - low) / (high - low) - 1)
        w = batch.weights
        expected = 0.5 * ((w * (q1 - y) ** 2).mean() + (w * (q2 - y) ** 2).mean())
    assert algo.loss(batch).critic_loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_discrete_critic_loss_matches_hand_computation():
    algo, batch = build(DISCRETE, ent_coef=0.5), make_batch(DISCRETE)
    with torch.no_grad():
        logits = algo.actor(batch.next_obs)
        probs, logp = logits.softmax(-1), logits.log_softmax(-1)
        next_q = algo.critic_target(batch.next_obs).min(0).values
        y = batch.rewards + 0.99 * (1 - batch.terminated) * (probs * (next_q - 0.5 * logp)).sum(-1)
        q = algo.critic(batch.obs)[:, torch.arange(8), batch.actions]
        expected = 0.5 * (batch.weights * (q - y) ** 2).mean(-1).sum()
    assert algo.loss(batch).critic_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_target_entropy_defaults():
    assert build().target_entropy() == -2.0  # -|A|
    assert build(DISCRETE).target_entropy() == pytest.approx(0.98 * math.log(3))
    assert build(DISCRETE, target_entropy_scale=0.5).target_entropy() == pytest.approx(0.5 * math.log(3))
    assert build(target_entropy=-0.5).target_entropy() == -0.5


# -- the Algorithm contract ------------------------------------------------------------------------
@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_half_batch_gradients_average_to_the_full_batch_gradient(space, monkeypatch):
    fixed_noise(monkeypatch)
    algo, batch = build(space), make_batch(space)
    full = algo.compute_gradients(batch)
    first = algo.compute_gradients(Batch(*(t[:5] for t in batch)))
    second = algo.compute_gradients(Batch(*(t[5:] for t in batch)))
    for g, g1, g2 in zip(full.grads, first.grads, second.grads, strict=True):
        torch.testing.assert_close(g, (5 * g1 + 3 * g2) / 8, atol=1e-6, rtol=1e-5)
    assert len(full.grads) == len(algo.parameters())
    np.testing.assert_allclose(full.priorities, np.concatenate([first.priorities, second.priorities]), rtol=1e-5)


@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_actor_loss_leaves_critic_gradients_alone(space):
    algo, batch = build(space), make_batch(space)
    torch.manual_seed(3)
    out = algo.loss(batch)
    n_actor = len(list(algo.actor.parameters()))
    n_critic = len(list(algo.critic.parameters()))
    critic_only = torch.autograd.grad(out.critic_loss, list(algo.critic.parameters()))
    actor_only = torch.autograd.grad(out.actor_loss, list(algo.actor.parameters()))
    torch.manual_seed(3)
    grads = algo.compute_gradients(batch).grads
    torch.testing.assert_close(flat(grads[n_actor:n_actor + n_critic]), flat(critic_only))
    torch.testing.assert_close(flat(grads[:n_actor]), flat(actor_only))
    assert all(p.grad is None for p in algo.parameters())  # compute_gradients touches no .grad


def test_apply_steps_all_three_and_moves_targets_by_tau():
    algo = build(tau=0.1)
    before = {k: v.copy() for k, v in algo.get_weights().items()}
    algo.apply_gradients(algo.compute_gradients(make_batch(BOX)).grads)
    after = algo.get_weights()
    for prefix in ("actor.", "critic.", "ent_coef."):
        assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    for key in (k for k in before if k.startswith("critic.")):
        target = "critic_target." + key[len("critic."):]
        np.testing.assert_allclose(after[target], 0.9 * before[target] + 0.1 * after[key], rtol=1e-5, atol=1e-7)
    assert int(after["n_updates"]) == 1


def test_fixed_ent_coef_has_no_alpha_parameter():
    algo = build(ent_coef=0.2)
    assert len(algo.parameters()) == len(list(algo.actor.parameters())) + len(list(algo.critic.parameters()))
    assert not any(k.startswith("ent_coef") for k in algo.get_weights())
    result = algo.compute_gradients(make_batch(BOX))
    assert result.info["alpha"] == pytest.approx(0.2) and "ent_coef_loss" not in result.info
    algo.apply_gradients(result.grads)


def test_alpha_rises_when_entropy_is_below_target():
    algo = build(target_entropy=10.0)  # far above any reachable entropy of a 2-d squashed Gaussian
    algo.apply_gradients(algo.compute_gradients(make_batch(BOX)).grads)
    assert algo.alpha().item() > 1.0


@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_acting_weights_and_policy(space):
    algo = build(space)
    assert isinstance(algo, Algorithm) and isinstance(algo.policy, Policy)
    acting = algo.acting_weights()
    assert acting and all(k.startswith("actor.") for k in acting)
    assert set(acting) < set(algo.get_weights())
    policy = SACConfig().build_policy(OBS, space, NET)
    policy.set_weights({k: np.asarray(v).copy() for k, v in acting.items()})
    obs = make_batch(space).obs.numpy()
    np.testing.assert_array_equal(policy.act(obs, deterministic=True).env_action,
                                  algo.policy.act(obs, deterministic=True).env_action)
    out = policy.act(obs)
    assert policy.extras == {} and policy.bootstrap(obs) == {} and out.extras == {}
    if space is BOX:
        assert out.action.dtype == np.float32 and out.action.shape == (8, 2)
        np.testing.assert_array_equal(out.action, out.env_action)  # stored in env units
        assert (out.env_action >= BOX.low).all() and (out.env_action <= BOX.high).all()
    else:
        assert out.action.dtype == np.int64 and ((out.action >= 0) & (out.action < 3)).all()
        np.testing.assert_array_equal(out.env_action, out.action + 1)  # Discrete(3, start=1)


def test_set_weights_accepts_read_only_arrays():
    source, target = build(seed=1), build(seed=2)
    arrays = source.get_weights()
    for v in arrays.values():
        v.flags.writeable = False
    target.set_weights(arrays)
    for k, v in target.get_weights().items():
        np.testing.assert_array_equal(v, arrays[k])
    with pytest.raises(KeyError):
        target.set_weights({k: v for k, v in arrays.items() if not k.startswith("critic_target.")})


@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_state_dict_round_trip_gives_identical_updates(space):
    algo, batch = build(space, seed=1), make_batch(space)
    for _ in range(2):
        algo.apply_gradients(algo.compute_gradients(batch).grads)
    state = algo.state_dict()
    restored = build(space, seed=2)
    restored.load_state_dict(state)
    for a in (algo, restored):
        torch.manual_seed(7)
        for _ in range(2):
            a.apply_gradients(a.compute_gradients(batch).grads)
    for k, v in algo.get_weights().items():
        np.testing.assert_array_equal(v, restored.get_weights()[k], err_msg=k)
    assert state["n_updates"] == 2 and algo.n_updates == 4  # the snapshot is a copy


@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_export_with_dynamic_batch(space):
    policy = build(space).policy
    example = make_batch(space, n=2).obs
    program = torch.export.export(policy.export_module(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    obs = make_batch(space, n=5, seed=3).obs
    with torch.no_grad():
        exported = program.module()(obs).numpy()
    np.testing.assert_allclose(exported, policy.act(obs.numpy(), deterministic=True).env_action,
                               rtol=1e-6)


def test_update_parameter_and_plan():
    algo = build(batch_size=64, learning_starts=10, updates_per_step=0.5)
    assert algo.update_plan() == ReplayPlan(64, 10, 0.5) == algo.config.update_plan()
    algo.update_parameter("lr", 1e-2)
    assert all(g["lr"] == 1e-2 for opt in algo.optimizers.values() for g in opt.param_groups)
    assert len(algo.optimizers) == 3
    with pytest.raises(ConfigError):
        algo.update_parameter("lr", -1.0)
    with pytest.raises(ConfigError):
        algo.update_parameter("ent_coef", 0.1)  # fixed at build
    with pytest.raises(ConfigError):
        algo.policy.update_parameter("lr", 1e-3)  # SAC has no acting parameters
    assert SACConfig.name == "sac" and SACConfig.storage_kind == "replay" and SACConfig.acting_parameters == frozenset()


def test_bad_action_spaces_raise_config_error():
    with pytest.raises(ConfigError, match="SACConfig.action_space"):
        SACConfig().build(OBS, gym.spaces.MultiDiscrete([2, 2]), NET)
    with pytest.raises(ConfigError, match="SACConfig.action_space"):
        SACConfig().build_policy(OBS, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), NET)


def test_loss_threads_is_one_or_two():
    assert SACConfig().loss_threads == 1
    with pytest.raises(ConfigError, match="SACConfig.loss_threads"):
        SACConfig(loss_threads=3)
