"""Vanilla policy gradient (REINFORCE with a learned baseline): the loss against hand computations,
its returns-to-go, one gradient per round, the Algorithm contract, and learning CartPole-v1."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributions as D

from colonyrl.agents import PG, ActorCriticConfig, Algorithm, PGConfig, pg_loss, reinforce_loss
from colonyrl.agents.base import EpochPlan
from colonyrl.agents.on_policy import WHOLE_ROUND
from colonyrl.config import ConfigError
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Scheme
from colonyrl.storage.gae import generalized_advantage_estimate

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))


class Batch(NamedTuple):  # duck-typed like colonyrl.storage.rollout.Minibatch
    obs: torch.Tensor
    actions: torch.Tensor
    logp_old: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values_old: torch.Tensor
    advantage_stats: tuple[float, float] | None = None  # the round's (mean, std); None: the batch's own


def _algo(seed: int = 0, **kw) -> PG:
    torch.manual_seed(seed)
    return PGConfig(**kw).build(*CARTPOLE, ActorCriticConfig())


def _batch(algo: PG, n: int = 64, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=g)
    out = algo.policy.act(obs.numpy())
    values = torch.from_numpy(out.extras["values"])
    returns = values + torch.randn(n, generator=g)
    return Batch(obs, torch.from_numpy(out.action), torch.from_numpy(out.extras["logp"]), returns - values,
                 returns, values)


def test_reinforce_loss_by_hand() -> None:
    logp = torch.tensor([-0.5, -1.0, -2.0])
    adv = torch.tensor([1.0, -2.0, 0.5])
    # -(1/3) * (-0.5 * 1 + -1 * -2 + -2 * 0.5) = -(0.5 / 3)
    assert reinforce_loss(logp, adv).item() == pytest.approx(-1 / 6)


def test_reinforce_gradient_is_the_score_function_estimate() -> None:
    """d/dlogits of the loss = -mean_i A_i (onehot(a_i) - softmax(logits_i)) (Williams 1992, eq. 11)."""
    logits = torch.tensor([[0.2, -0.4], [1.0, 0.5], [-0.3, 0.3]], requires_grad=True)
    actions = torch.tensor([0, 1, 1])
    adv = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    reinforce_loss(D.Categorical(logits=logits).log_prob(actions), adv).backward()
    p = torch.softmax(logits.detach(), -1)
    expected = -(adv.detach()[:, None] * (torch.nn.functional.one_hot(actions, 2) - p)) / 3
    torch.testing.assert_close(logits.grad, expected)
    assert adv.grad is None  # the baseline's advantage is a constant of the policy term


def test_pg_loss_total_by_hand() -> None:
    algo = _algo(vf_coef=0.7, ent_coef=0.01, normalize_advantage=False)
    b = _batch(algo)
    out = pg_loss(algo.actor, b, algo.config)
    logits, values = algo.actor(b.obs)
    ref = D.Categorical(logits=logits)
    pg = -(ref.log_prob(b.actions) * b.advantages).mean()
    vl = 0.5 * ((b.returns - values) ** 2).mean()
    assert out.policy_loss.item() == pytest.approx(pg.item(), rel=1e-6)
    assert out.value_loss.item() == pytest.approx(vl.item(), rel=1e-6)
    assert out.total.item() == pytest.approx((pg + 0.7 * vl - 0.01 * ref.entropy().mean()).item(), rel=1e-6)


def test_advantages_are_standardized_with_the_rounds_statistics() -> None:
    """(A - mean) / (std + 1e-8) with the round's (mean, std) when the batch carries them, else its own."""
    algo = _algo()
    b = _batch(algo)
    logp = D.Categorical(logits=algo.actor(b.obs)[0]).log_prob(b.actions)
    for stats, (mean, std) in (((2.0, 3.0), (2.0, 3.0)), (None, (b.advantages.mean(), b.advantages.std()))):
        expected = -(logp * (b.advantages - mean) / (std + 1e-8)).mean()
        got = algo.loss(b._replace(advantage_stats=stats)).policy_loss
        assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6), stats


def test_returns_to_go_are_gae_with_lambda_one() -> None:
    """G_t with gamma 0.5 on one env: rewards 1, 2, 4 | 1, 1 (terminated at t=2, truncated at t=4).
    Termination: no bootstrap, G_2 = 4, G_1 = 2 + 0.5 * 4 = 4, G_0 = 1 + 0.5 * 4 = 3.
    Truncation bootstraps with V(final obs) = values[5] = 6: G_4 = 1 + 0.5 * 6 = 4, G_3 = 1 + 0.5 * 4 = 3."""
    rewards = np.array([[1.0], [2.0], [4.0], [1.0], [1.0]], np.float32)
    values = np.array([[0.5], [1.0], [2.0], [1.5], [0.5], [6.0]], np.float32)
    terminated = np.array([[False], [False], [True], [False], [False]])
    truncated = np.array([[False], [False], [False], [False], [True]])
    adv, ret = generalized_advantage_estimate(rewards, values, terminated, truncated, np.ones((5, 1), bool), 0.5, 1.0)
    np.testing.assert_allclose(ret[:, 0], [3.0, 4.0, 4.0, 3.0, 4.0])
    np.testing.assert_allclose(adv[:, 0], ret[:, 0] - values[:5, 0])  # G_t - V(s_t): what PG weighs log pi by


def test_compute_and_apply_change_weights_and_halves_average_to_the_whole() -> None:
    algo = _algo(normalize_advantage=False, ent_coef=0.01)
    assert isinstance(algo, Algorithm)
    b = _batch(algo, n=128)
    halves = [Batch(*(x[:64] for x in b[:6])), Batch(*(x[64:] for x in b[:6]))]
    parts = [[g.clone() for g in algo.compute_gradients(h).grads] for h in halves]
    result = algo.compute_gradients(b)
    assert set(result.info) == {"policy_loss", "value_loss", "entropy"} and not result.stop_round
    for g1, g2, g in zip(*parts, result.grads, strict=True):
        torch.testing.assert_close((g1 + g2) / 2, g, atol=1e-6, rtol=0)
    before = algo.get_weights()
    assert algo.apply_gradients(result.grads)["grad_norm"] > 0
    assert all(not np.array_equal(before[k], v) for k, v in algo.get_weights().items())


def test_state_dict_round_trip_and_runtime_lr() -> None:
    a = _algo()
    a.update_parameter("lr", 5e-4)
    a.apply_gradients(a.compute_gradients(_batch(a)).grads)
    b = _algo(seed=3)
    b.load_state_dict(a.state_dict())
    assert b.config == a.config and isinstance(b.config, PGConfig) and b.optimizer.param_groups[0]["lr"] == 5e-4
    batch = _batch(a, seed=9)
    for algo in (a, b):
        algo.apply_gradients(algo.compute_gradients(batch).grads)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def test_config_validation_and_plan() -> None:
    assert PGConfig().update_plan() == EpochPlan(1, WHOLE_ROUND)
    assert PGConfig(num_epochs=2, minibatch_size=256).update_plan() == EpochPlan(2, 256)
    for field, value in (("minibatch_size", 0), ("lr", -1.0), ("max_grad_norm", 0.0), ("num_epochs", 0)):
        with pytest.raises(ConfigError, match=f"PGConfig.{field}"):
            PGConfig(**{field: value})
    assert set(PGConfig.runtime_parameters()) == {"lr", "num_epochs", "minibatch_size", "vf_coef", "ent_coef",
                                                  "max_grad_norm"}


def test_one_gradient_step_per_round_in_process() -> None:
    cfg = preset("pg-cartpole")
    cfg = cfg.replace(env=cfg.env.replace(num_envs=2), storage=cfg.storage.replace(num_steps=32))
    with Scheme(cfg.scheme, cfg.components()) as scheme:
        learner = scheme.learner
        for _ in range(3):
            learner.step()
            assert learner.at_round_boundary()
        assert learner.counters()["updates"] == 3 and learner.env_steps == 3 * 2 * 32


@pytest.mark.slow
def test_pg_learns_cartpole_within_200k_steps(tmp_path: Path) -> None:
    """The pg-cartpole preset: >= 400 on the independent final evaluation within 200k env steps."""
    cfg = preset("pg-cartpole")
    run = cfg.run.replace(total_env_steps=200_000, track=False, progress=False, output_dir=str(tmp_path / "runs"),
                          checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every_min=None)
    result = train(cfg.replace(run=run))
    assert result.counters["env_steps"] <= 200_000 + cfg.env_steps_per_round
    assert result.evaluation.mean >= 400.0, result.evaluations
