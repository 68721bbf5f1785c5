"""PPO: loss terms against hand computations, the compute/apply split, weights, runtime params."""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributions as D

from colonyrl.agents import (
    PPO,
    ActorCriticConfig,
    Algorithm,
    PPOConfig,
    adaptive_kl_coef,
    kl_penalty,
    policy_loss,
    ppo_loss,
    value_loss,
)
from colonyrl.config import ConfigError

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
PENDULUM = (gym.spaces.Box(-8.0, 8.0, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))


class Batch(NamedTuple):  # duck-typed like colonyrl.storage.rollout.Minibatch
    obs: torch.Tensor
    actions: torch.Tensor
    logp_old: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values_old: torch.Tensor


def _algo(spaces=CARTPOLE, seed: int = 0, **kw) -> PPO:
    torch.manual_seed(seed)
    return PPOConfig(**kw).build(*spaces, ActorCriticConfig())


def _batch(algo: PPO, n: int = 64, seed: int = 1) -> Batch:
    """Actions and log-probs from the actor itself, perturbed so the ratio is not 1."""
    g = torch.Generator().manual_seed(seed)
    obs_dim = algo.actor.obs_dim
    obs = torch.randn(n, obs_dim, generator=g)
    out = algo.policy.act(obs.numpy())
    logp_old = torch.from_numpy(out.extras["logp"]) + 0.3 * torch.randn(n, generator=g)
    values_old = torch.from_numpy(out.extras["values"]) + 0.5 * torch.randn(n, generator=g)
    return Batch(obs, torch.from_numpy(out.action), logp_old, torch.randn(n, generator=g),
                 torch.randn(n, generator=g), values_old)


# -- loss terms ---------------------------------------------------------------------------------
def test_policy_loss_by_hand() -> None:
    ratio = np.array([1.5, 0.5, 1.1, 0.9, 0.7, 1.3])
    adv = np.array([1.0, 1.0, -1.0, -1.0, -2.0, 0.5])
    logp_old = np.array([-0.1, -1.0, -2.0, -0.5, -0.3, -1.2])
    logp = logp_old + np.log(ratio)
    c = 0.2
    # Paper eq. 7 per sample, written piecewise: A >= 0 -> min(r, 1+c) A, A < 0 -> max(r, 1-c) A.
    surr = [min(r, 1 + c) * a if a >= 0 else max(r, 1 - c) * a for r, a in zip(ratio, adv, strict=True)]
    loss, clipfrac, kl = policy_loss(*(torch.tensor(x) for x in (logp, logp_old, adv)), c)
    assert loss.item() == pytest.approx(-np.mean(surr))
    assert clipfrac.item() == pytest.approx(4 / 6)  # |r - 1| > 0.2 for 1.5, 0.5, 0.7, 1.3
    assert kl.item() == pytest.approx(np.mean([(r - 1) - math.log(r) for r in ratio]))
    assert -np.mean(surr) == pytest.approx((-1.2 - 0.5 + 1.1 + 0.9 + 1.6 - 0.6) / 6)


def test_value_loss_by_hand() -> None:
    values, old, ret = (torch.tensor(x) for x in ([1.0, 2.0, 0.0], [0.5, 2.5, 0.0], [2.0, 1.0, 1.0]))
    assert value_loss(values, old, ret, None).item() == pytest.approx(0.5 * (1 + 1 + 1) / 3)
    # SB3 clips the change: V = old + clip(V - old, -0.2, 0.2) = [0.7, 2.3, 0.0]
    assert value_loss(values, old, ret, 0.2).item() == pytest.approx(0.5 * (1.3**2 + 1.3**2 + 1.0) / 3)
    values.requires_grad_(True)
    value_loss(values, old, ret, 0.2).backward()
    assert values.grad.tolist() == [0.0, 0.0, pytest.approx(-1 / 3)]  # clipped rows get no gradient


def test_ppo_loss_total_and_entropy() -> None:
    algo = _algo(ent_coef=0.01, vf_coef=0.7, clip_range_vf=0.1, normalize_advantage=False)
    b = _batch(algo)
    out = ppo_loss(algo.actor, b, algo.config)
    logits, values = algo.actor(b.obs)
    ref = D.Categorical(logits=logits)
    pg, _, _ = policy_loss(ref.log_prob(b.actions), b.logp_old, b.advantages, 0.2)
    vl = value_loss(values, b.values_old, b.returns, 0.1)
    assert out.entropy.item() == pytest.approx(ref.entropy().mean().item(), rel=1e-6)
    assert out.total.item() == pytest.approx((pg - 0.01 * ref.entropy().mean() + 0.7 * vl).item(), rel=1e-6)


def test_gaussian_entropy_is_known() -> None:
    algo = _algo(PENDULUM)
    with torch.no_grad():
        algo.actor.log_std.fill_(0.5)
    out = algo.loss(_batch(algo))
    assert out.entropy.item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi) + 0.5, rel=1e-6)


def test_advantages_normalized_per_minibatch() -> None:
    algo = _algo(ent_coef=0.0)
    b = _batch(algo)
    shifted = b._replace(advantages=3.0 * b.advantages + 5.0)
    assert algo.loss(shifted).policy_loss.item() == pytest.approx(algo.loss(b).policy_loss.item(), rel=1e-4)


# -- compute / apply ----------------------------------------------------------------------------
def test_compute_and_apply_change_weights() -> None:
    algo = _algo()
    before = algo.get_weights()
    grads, info = algo.compute_gradients(_batch(algo))[:2]
    assert grads is not None and len(grads) == len(algo.parameters())
    assert all(g is p.grad for g, p in zip(grads, algo.parameters(), strict=True))
    assert set(info) == {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "early_stop"}
    assert info["early_stop"] == 0.0 and all(isinstance(v, float) for v in info.values())
    out = algo.apply_gradients(grads)
    assert out["grad_norm"] > 0
    after = algo.get_weights()
    assert all(not np.array_equal(before[k], after[k]) for k in before)


def test_kl_early_stop_returns_none_and_changes_nothing() -> None:
    algo = _algo(target_kl=0.01)
    b = _batch(algo)
    b = b._replace(logp_old=b.logp_old - 2.0)  # ratio ~ e^2: KL far above 1.5 * 0.01
    before = algo.get_weights()
    grads, info = algo.compute_gradients(b)[:2]
    assert grads is None and info["early_stop"] == 1.0 and info["approx_kl"] > 0.015
    assert all(p.grad is None for p in algo.parameters())  # no backward ran
    assert all(np.array_equal(v, algo.get_weights()[k]) for k, v in before.items())


def test_average_of_half_batches_equals_full_batch() -> None:
    for spaces in (CARTPOLE, PENDULUM):
        algo = _algo(spaces, normalize_advantage=False, ent_coef=0.01, clip_range_vf=0.2)
        b = _batch(algo, n=128)
        halves = [Batch(*(x[:64] for x in b)), Batch(*(x[64:] for x in b))]
        parts = [[g.clone() for g in algo.compute_gradients(h)[0]] for h in halves]
        full = algo.compute_gradients(b)[0]
        for g1, g2, g in zip(*parts, full, strict=True):
            torch.testing.assert_close((g1 + g2) / 2, g, atol=1e-6, rtol=0)


def test_apply_numpy_readonly_equals_apply_tensors_and_clips_globally() -> None:
    a, b = _algo(max_grad_norm=0.1), _algo(max_grad_norm=0.1)
    batch = _batch(a)
    grads, _ = a.compute_gradients(batch)[:2]
    arrays = [g.numpy().copy() for g in grads]
    for x in arrays:
        x.flags.writeable = False
    expected_norm = math.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in arrays))
    out_a = a.apply_gradients(grads)
    out_b = b.apply_gradients(arrays)
    assert out_a["grad_norm"] == pytest.approx(expected_norm, rel=1e-5) == out_b["grad_norm"]
    clipped = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in b.parameters()))
    assert clipped == pytest.approx(0.1, rel=1e-4)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def test_apply_rejects_wrong_shapes() -> None:
    algo = _algo()
    with pytest.raises(ValueError):
        algo.apply_gradients([np.zeros(3, np.float32)])
    with pytest.raises(ValueError):
        algo.apply_gradients([np.zeros((2, 2), np.float32)] * len(algo.parameters()))


def test_no_grad_clip_still_reports_norm() -> None:
    algo = _algo(max_grad_norm=None)
    grads, _ = algo.compute_gradients(_batch(algo))[:2]
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    assert algo.apply_gradients(grads)["grad_norm"] == pytest.approx(norm, rel=1e-5)


def test_value_loss_decreases_with_training() -> None:
    algo = _algo(lr=3e-3, ent_coef=0.0)
    b = _batch(algo)
    first = algo.compute_gradients(b)[1]["value_loss"]
    for _ in range(200):
        algo.apply_gradients(algo.compute_gradients(b)[0])
    assert algo.compute_gradients(b)[1]["value_loss"] < 0.5 * first


# -- runtime parameters, weights, checkpoints ----------------------------------------------------
def test_update_parameter_lr_reaches_optimizer() -> None:
    algo = _algo()
    algo.update_parameter("lr", 1e-3)
    assert algo.config.lr == 1e-3 and all(g["lr"] == 1e-3 for g in algo.optimizer.param_groups)
    algo.update_parameter("clip_range", 0.1)
    assert algo.config.clip_range == 0.1


@pytest.mark.parametrize("name, value", [("lr", -1.0), ("lr", "fast"), ("adam_eps", 1e-3), ("nope", 1),
                                         ("num_epochs", 0), ("target_kl", 0.0)])
def test_update_parameter_rejects_and_changes_nothing(name: str, value: object) -> None:
    algo = _algo()
    cfg = algo.config
    with pytest.raises(ConfigError):
        algo.update_parameter(name, value)
    assert algo.config is cfg and all(g["lr"] == 3e-4 for g in algo.optimizer.param_groups)


def test_weights_round_trip_with_readonly_arrays() -> None:
    src, dst = _algo(seed=0), _algo(seed=1)
    params_before = dst.parameters()
    weights = src.get_weights()
    for v in weights.values():
        assert v.dtype == np.float32
        v.flags.writeable = False
    dst.set_weights(weights)
    for k, v in dst.get_weights().items():
        np.testing.assert_array_equal(v, weights[k])
    assert all(p is q for p, q in zip(params_before, dst.parameters(), strict=True))  # in place
    dst.get_weights()["pi.0.weight"][:] = 7.0  # a copy: the actor is untouched
    assert not (dst.actor.pi[0].weight == 7.0).any()
    with pytest.raises(KeyError):
        dst.set_weights({"pi.0.weight": weights["pi.0.weight"]})


def test_state_dict_round_trip_includes_optimizer_and_config() -> None:
    a = _algo()
    a.update_parameter("lr", 1e-3)
    a.apply_gradients(a.compute_gradients(_batch(a))[0])
    b = _algo(seed=5)
    b.load_state_dict(a.state_dict())
    assert b.config == a.config and b.optimizer.param_groups[0]["lr"] == 1e-3
    batch = _batch(a, seed=9)
    for algo in (a, b):
        algo.apply_gradients(algo.compute_gradients(batch)[0])
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


# -- acting -------------------------------------------------------------------------------------
def test_acting_step_discrete() -> None:
    algo = _algo()
    assert isinstance(algo, Algorithm)
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    obs.flags.writeable = False  # e.g. from Ray's object store
    out = algo.policy.act(obs)
    assert out.action.dtype == np.int64 and out.action.shape == (8,)
    assert out.extras["logp"].dtype == out.extras["values"].dtype == np.float32 and out.extras["logp"].shape == out.extras["values"].shape == (8,)
    np.testing.assert_allclose(algo.policy.bootstrap(obs)["values"], out.extras["values"], rtol=1e-6)
    det = algo.policy.act(obs, deterministic=True)
    logits = algo.actor(torch.from_numpy(obs.copy()))[0]
    np.testing.assert_array_equal(det.action, logits.argmax(-1).numpy())


@pytest.mark.parametrize("squash", [False, True])
def test_acting_step_box_env_action_within_bounds(squash: bool) -> None:
    torch.manual_seed(0)
    algo = PPOConfig().build(*PENDULUM, ActorCriticConfig(squash=squash, log_std_init=1.5))
    obs = np.random.default_rng(0).standard_normal((512, 3)).astype(np.float32)
    out = algo.policy.act(obs)
    assert out.action.dtype == np.float32 and out.action.shape == (512, 1)
    assert out.env_action.min() >= -2.0 and out.env_action.max() <= 2.0
    assert np.abs(out.action).max() > 2.0  # the raw sample is stored unclipped
    # The stored log-prob is that of the stored action under the current policy.
    dist, _ = algo.actor.distribution(torch.from_numpy(obs))
    np.testing.assert_allclose(dist.log_prob(torch.from_numpy(out.action)).detach().numpy(), out.extras["logp"], rtol=1e-5)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="clip_range"):
        PPOConfig(clip_range=-0.1)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        PPOConfig(max_grad_norm=-1.0)
    assert set(PPOConfig.runtime_parameters()) == {
        "lr", "num_epochs", "minibatch_size", "clip_range", "clip_range_vf", "ent_coef", "vf_coef",
        "max_grad_norm", "target_kl", "kl_coef", "kl_target"}


# -- the adaptive KL penalty (paper §4) ----------------------------------------------------------
@pytest.mark.parametrize(("kl", "expected"), [
    (0.001, 0.5),  # below d_targ / 1.5: halve
    (0.01 / 1.5, 1.0),  # on the lower edge: keep
    (0.01, 1.0),
    (0.01 * 1.5, 1.0),  # on the upper edge: keep
    (0.02, 2.0),  # above 1.5 d_targ: double
    (float("nan"), 1.0),  # nothing measured: keep
])
def test_adaptive_kl_coef_halves_doubles_or_keeps(kl: float, expected: float) -> None:
    assert adaptive_kl_coef(1.0, kl, 0.01) == expected


def test_adaptive_kl_coef_scales_any_beta() -> None:
    assert adaptive_kl_coef(0.3, 0.5, 0.01) == 0.6 and adaptive_kl_coef(0.3, 0.0, 0.01) == 0.15
    assert adaptive_kl_coef(0.3, 0.0151, 0.01) == 0.6 and adaptive_kl_coef(0.3, 0.0066, 0.01) == 0.15


def test_kl_penalty_by_hand() -> None:
    # ratios 2 and 1/2: (2 - 1 - ln 2 + 1/2 - 1 + ln 2) / 2 = 0.25
    logp_old = torch.tensor([-1.0, -1.0])
    logp = logp_old + torch.tensor([math.log(2.0), -math.log(2.0)])
    assert kl_penalty(logp, logp_old).item() == pytest.approx(0.25, rel=1e-6)
    assert kl_penalty(logp_old, logp_old).item() == 0.0


def test_unclipped_surrogate_by_hand() -> None:
    ratio = np.array([1.5, 0.5, 1.1])
    adv = np.array([1.0, -2.0, 0.5])
    logp_old = np.array([-0.1, -1.0, -2.0])
    loss, clipfrac, kl = policy_loss(*(torch.tensor(x) for x in (logp_old + np.log(ratio), logp_old, adv)), None)
    assert loss.item() == pytest.approx(-(1.5 - 1.0 + 0.55) / 3) and clipfrac.item() == 0.0
    assert kl.item() == pytest.approx(np.mean([(r - 1) - math.log(r) for r in ratio]))


def test_ppo_loss_adds_beta_times_the_kl_and_its_gradient_is_zero_on_policy() -> None:
    algo = _algo(normalize_advantage=False)
    b = _batch(algo)
    dist, _ = algo.actor.distribution(b.obs)
    logp = dist.log_prob(b.actions).detach()
    with_kl = ppo_loss(algo.actor, b, algo.config.replace(kl_coef=0.5, clip_range=None)).total
    without = ppo_loss(algo.actor, b, algo.config.replace(clip_range=None)).total
    assert (with_kl - without).item() == pytest.approx(0.5 * kl_penalty(logp, b.logp_old).item(), rel=1e-5)
    # At the collecting policy (ratio 1) the penalty's gradient vanishes, as the exact KL's does.
    on_policy = b._replace(logp_old=logp)
    grads = [torch.autograd.grad(ppo_loss(algo.actor, on_policy, algo.config.replace(kl_coef=c)).total,
                                 algo.parameters()) for c in (0.0, 3.0)]
    for g0, g3 in zip(*grads, strict=True):
        torch.testing.assert_close(g0, g3)


def test_end_round_adapts_kl_coef_to_the_rounds_mean_kl() -> None:
    algo = _algo(kl_coef=1.0, kl_target=0.01)
    assert algo.end_round({"approx_kl": 0.05, "value_loss": 3.0}) == {"kl_coef": 2.0}
    assert algo.end_round({"approx_kl": 0.001}) == {"kl_coef": 0.5}
    assert algo.end_round({"approx_kl": 0.01}) == {} and algo.end_round({}) == {}
    assert _algo(kl_coef=1.0).end_round({"approx_kl": 0.05}) == {}  # no kl_target: beta stays as set
    algo.update_parameter("kl_coef", 2.0)  # the Learner applies the change as a runtime parameter
    assert algo.config.kl_coef == 2.0 and algo.end_round({"approx_kl": 0.05}) == {"kl_coef": 4.0}


def test_kl_config_validation() -> None:
    with pytest.raises(ConfigError, match="PPOConfig.kl_coef"):
        PPOConfig(kl_target=0.01)  # beta 0 would stay 0
    algo = _algo(kl_coef=1.0, kl_target=0.01)
    with pytest.raises(ConfigError, match="PPOConfig.kl_coef"):
        algo.update_parameter("kl_coef", 0.0)
    with pytest.raises(ConfigError, match="PPOConfig.kl_target"):
        PPOConfig(kl_coef=1.0, kl_target=0.0)
    algo.update_parameter("clip_range", None)  # clipping off at runtime: the penalty alone
    assert algo.config.clip_range is None and algo.compute_gradients(_batch(algo)).grads is not None


@pytest.mark.slow
def test_adaptive_kl_ppo_learns_cartpole_within_100k_steps(tmp_path) -> None:
    """The ppo-kl-cartpole preset (the penalty without clipping): >= 475 on the independent final
    evaluation within 100k env steps."""
    from colonyrl.launch.presets import preset
    from colonyrl.launch.train import train

    cfg = preset("ppo-kl-cartpole")
    run = cfg.run.replace(total_env_steps=100_000, track=False, progress=False, output_dir=str(tmp_path / "runs"),
                          checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every_min=None)
    result = train(cfg.replace(run=run))
    assert result.counters["env_steps"] <= 100_000 + cfg.env_steps_per_round
    assert result.evaluation.mean >= 475.0, result.evaluations
