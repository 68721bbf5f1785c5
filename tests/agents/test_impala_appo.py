"""IMPALA and APPO: losses on time-major batches against GAE / hand computations, the off-policy
correction, the compute/apply split, checkpoints, runtime params, config validation, and an
in-process run through the public ``train()`` path (sync and async collection)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.appo import APPO, APPOConfig, appo_loss
from colonyrl.agents.base import Algorithm, SequencePlan
from colonyrl.agents.impala import IMPALA, IMPALAConfig, evaluate_vtrace, impala_loss
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import policy_loss
from colonyrl.config import ConfigError
from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.rollout import SequenceBatch

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
PENDULUM = (gym.spaces.Box(-8.0, 8.0, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
GAMMA = 0.9


def build(config, spaces=CARTPOLE, seed: int = 0):
    torch.manual_seed(seed)
    return config.build(*spaces, ActorCriticConfig(hidden_sizes=(16,)))


def sequences(algo, steps: int = 6, envs: int = 4, seed: int = 1, lag: float = 0.0) -> SequenceBatch:
    """A time-major batch acted by the algorithm's own policy, with an episode end (terminated at
    (1, 0), truncated at (3, 2)) each followed by its autoreset step; ``lag`` perturbs the
    behaviour log-probs (off-policy data)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(steps + 1, envs, algo.actor.obs_dim, generator=g)
    out = algo.policy.act(obs[:-1].reshape(steps * envs, -1).numpy())
    actions = torch.from_numpy(out.action).view(steps, envs, *out.action.shape[1:])
    logp = torch.from_numpy(out.extras["logp"]).view(steps, envs) + lag * torch.randn(steps, envs, generator=g)
    values = torch.from_numpy(algo.policy.bootstrap(obs.reshape((steps + 1) * envs, -1).numpy())["values"])
    terminated = torch.zeros(steps, envs, dtype=torch.bool)
    truncated = torch.zeros(steps, envs, dtype=torch.bool)
    valid = torch.ones(steps, envs, dtype=torch.bool)
    terminated[1, 0], truncated[3, 2], valid[2, 0], valid[4, 2] = True, True, False, False
    rewards = torch.rand(steps, envs, generator=g) * valid
    zeros = torch.zeros(steps, envs)
    return SequenceBatch(obs, actions, rewards, terminated, truncated, valid, logp, values.view(steps + 1, envs),
                         zeros, zeros, num_samples=int(valid.sum()), gamma=GAMMA)


def test_configs_declare_the_contract() -> None:
    for cls, name in ((IMPALAConfig, "impala"), (APPOConfig, "appo")):
        cfg = cls(minibatch_size=96, num_epochs=3, sequence_length=8)
        assert cfg.name == name and cfg.storage_kind == "rollout" and cfg.acting_parameters == frozenset()
        assert cfg.update_plan() == SequencePlan(3, 96, 8)
        algo = build(cfg)
        assert isinstance(algo, Algorithm) and set(algo.policy.extras) == {"logp", "values"}
        assert algo.policy.extras["values"].bootstrap  # V(x_T): the V-trace bootstrap, from the current net
        assert cfg.build_policy(*CARTPOLE, ActorCriticConfig()).extras == algo.policy.extras


@pytest.mark.parametrize("cls, field, value", [
    (IMPALAConfig, "rho_bar", 0.0), (IMPALAConfig, "c_bar", -1.0), (IMPALAConfig, "optimizer", "sgd"),
    (IMPALAConfig, "vtrace_lambda", 1.5), (IMPALAConfig, "minibatch_size", 0), (APPOConfig, "clip_range", -0.1),
    (APPOConfig, "pg_rho_bar", 0.0), (APPOConfig, "sequence_length", 0), (APPOConfig, "num_epochs", 0)])
def test_config_errors_name_the_field(cls, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__}.{field}"):
        cls(**{field: value})


def test_impala_on_policy_loss_is_the_actor_critic_loss_with_gae_lambda_1() -> None:
    """pi == mu: v_s are the n-step returns and the pg advantages GAE(1)'s, from the CURRENT values;
    the losses are means over the valid steps only."""
    algo = build(IMPALAConfig(ent_coef=0.01, vf_coef=0.5))
    batch = sequences(algo)
    with torch.no_grad():
        params, values = algo.actor(batch.obs.reshape(-1, 4))
        values = values.view(7, 4)
        dist = algo.actor.make_distribution(params[:24])
        logp = dist.log_prob(batch.actions.reshape(-1)).view(6, 4)
    adv, returns = generalized_advantage_estimate(batch.rewards.numpy(), values.numpy(), batch.terminated.numpy(),
                                                  batch.truncated.numpy(), batch.valid.numpy(), GAMMA, 1.0)
    m = batch.valid.numpy()
    out = {k: float(v.detach()) for k, v in impala_loss(algo.actor, batch, algo.config)._asdict().items()}
    np.testing.assert_allclose(out["policy_loss"], -(adv[m] * logp.numpy()[m]).mean(), rtol=1e-5)
    np.testing.assert_allclose(out["value_loss"], 0.5 * ((returns[m] - values[:-1].numpy()[m]) ** 2).mean(), rtol=1e-5)
    entropy = dist.entropy().view(6, 4).numpy()[m].mean()
    np.testing.assert_allclose(out["entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(out["total"], out["policy_loss"] + 0.5 * out["value_loss"] - 0.01 * entropy, rtol=1e-5)
    assert out["rho_mean"] == pytest.approx(1.0) and out["approx_kl"] == pytest.approx(0.0, abs=1e-6)


def test_appo_on_policy_gradient_equals_impala_policy_gradient() -> None:
    """At pi == mu the clipped ratio is 1 with gradient grad log pi: APPO's surrogate on the V-trace
    advantages has IMPALA's policy gradient (advantages not normalized, no entropy, no value loss)."""
    impala = build(IMPALAConfig(ent_coef=0.0, vf_coef=0.0))
    appo = build(APPOConfig(ent_coef=0.0, vf_coef=0.0, normalize_advantage=False))
    batch = sequences(impala)
    grads = []
    for algo in (impala, appo):
        result = algo.compute_gradients(batch)
        grads.append([g.clone() for g in result.grads])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    info = appo.compute_gradients(batch).info
    assert info["clipfrac"] == 0.0 and info["rho_mean"] == pytest.approx(1.0)


def test_appo_loss_is_ppo_clipped_surrogate_on_vtrace_advantages() -> None:
    algo = build(APPOConfig(clip_range=0.1, normalize_advantage=True, rho_bar=1.0, pg_rho_bar=1.0))
    batch = sequences(algo, lag=0.5)
    ev = evaluate_vtrace(algo.actor, batch, 1.0, 1.0, 1.0)
    adv = ev.targets.pg_advantages
    expected, clipfrac, _ = policy_loss(ev.logp, ev.logp_old, (adv - adv.mean()) / (adv.std() + 1e-8), 0.1)
    out = appo_loss(algo.actor, batch, algo.config)
    torch.testing.assert_close(out.policy_loss, expected)
    assert float(out.clipfrac) == float(clipfrac) > 0  # lagging data: some ratios leave [0.9, 1.1]


def test_off_policy_data_is_corrected_and_clipped() -> None:
    algo = build(IMPALAConfig())
    batch = sequences(algo, lag=1.0)
    ev = evaluate_vtrace(algo.actor, batch, None, None, None)
    rhos = ev.targets.rhos
    assert rhos.numel() == batch.num_samples == 22 and (rhos > 1.5).any() and (rhos < 0.7).any()
    np.testing.assert_allclose(rhos.numpy(), np.exp((ev.logp - ev.logp_old).detach().numpy()), rtol=1e-5)
    clipped = evaluate_vtrace(algo.actor, batch, 1.0, 1.0, 1.0)
    assert not torch.allclose(clipped.targets.vs, ev.targets.vs)
    info = algo.compute_gradients(batch).info
    assert info["rho_clipped_mean"] < info["rho_mean"] and info["approx_kl"] > 0


@pytest.mark.parametrize("config", [IMPALAConfig(optimizer="rmsprop"), IMPALAConfig(optimizer="adam", eps=1e-5),
                                    APPOConfig()], ids=["impala-rmsprop", "impala-adam", "appo"])
def test_compute_then_apply_changes_weights_and_box_actions_work(config) -> None:
    algo = build(config, PENDULUM)
    batch = sequences(algo)
    assert batch.actions.shape == (6, 4, 1)
    before = [p.detach().clone() for p in algo.parameters()]
    result = algo.compute_gradients(batch)
    assert len(result.grads) == len(before) and all(torch.isfinite(g).all() for g in result.grads)
    assert {"policy_loss", "value_loss", "entropy", "rho_mean", "approx_kl"} <= set(result.info)
    metrics = algo.apply_gradients([g.numpy().copy() for g in result.grads])
    assert metrics["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.parameters(), strict=True))


def test_the_average_of_two_column_halves_equals_the_whole_batch() -> None:
    """Losses are means over valid steps, so num_samples-weighted gradients of two GWorkers' batches
    equal the gradient of their union (what the Learner's average relies on)."""
    algo = build(IMPALAConfig())
    batch = sequences(algo)
    halves = [SequenceBatch(*(t[:, cols] for t in batch.tensors()), num_samples=int(batch.valid[:, cols].sum()),
                            gamma=GAMMA) for cols in (slice(0, 1), slice(1, 4))]
    whole = [g.clone() for g in algo.compute_gradients(batch).grads]
    parts = [[g.clone() for g in algo.compute_gradients(h).grads] for h in halves]
    weights = [h.num_samples / batch.num_samples for h in halves]
    for w, a, b in zip(whole, *parts, strict=True):
        torch.testing.assert_close(w, weights[0] * a + weights[1] * b, rtol=1e-5, atol=1e-6)


def test_update_parameter_and_state_dict_round_trip() -> None:
    algo = build(IMPALAConfig())
    algo.update_parameter("lr", 1e-4)
    algo.update_parameter("rho_bar", 2.0)
    assert algo.optimizer.param_groups[0]["lr"] == 1e-4 and algo.config.rho_bar == 2.0
    with pytest.raises(ConfigError):
        algo.update_parameter("c_bar", -1.0)
    algo.apply_gradients(algo.compute_gradients(sequences(algo)).grads)
    state = algo.state_dict()
    other = build(IMPALAConfig(), seed=5)
    other.load_state_dict(state)
    assert other.config == algo.config and isinstance(other.optimizer, torch.optim.RMSprop)
    for a, b in zip(algo.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(build(APPOConfig()), APPO) and isinstance(algo, IMPALA)


@pytest.mark.parametrize("algo, collection", [("impala", "sync"), ("appo", "async")])
def test_trains_in_process_through_train(tmp_path, algo: str, collection: str) -> None:
    """The public path end to end (storage -> SequencePlan batches -> V-trace on the GWorker), a few
    thousand steps: no learning threshold here (tests/launch/test_vtrace_learning.py has those)."""
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.launch.config import RunConfig, TrainConfig
    from colonyrl.launch.train import train
    from colonyrl.scheme.scheme import SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    config = IMPALAConfig(minibatch_size=64) if algo == "impala" else APPOConfig(minibatch_size=64, num_epochs=2)
    cfg = TrainConfig(env=EnvConfig(id="CartPole-v1", num_envs=4), algo=config, storage=RolloutConfig(num_steps=16),
                      scheme=SchemeConfig(collection=collection),
                      run=RunConfig(total_env_steps=2_000, seed=0, track=False, progress=False,
                                    output_dir=str(tmp_path), eval_episodes=2))
    result = train(cfg)
    assert result.counters["env_steps"] >= 2_000 and result.counters["updates"] > 0
    assert np.isfinite(result.evaluation.mean)
