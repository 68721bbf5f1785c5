"""The Learner and the in-process scheme: gradient averaging, versions, learning, no Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import EpisodeStats, GradientPacket
from colonyrl.scheme.scheme import Scheme, SchemeConfig
from colonyrl.scheme.strategies import CentralUpdate, average_gradients
from colonyrl.storage.rollout import Minibatch, RolloutConfig


def _components(**algo: float) -> Components:
    return Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                      algo=PPOConfig(normalize_advantage=False, **algo), storage=RolloutConfig(num_steps=16), seed=3)


def _fixed_batch(n: int, seed: int = 0) -> Minibatch:
    g = torch.Generator().manual_seed(seed)
    return Minibatch(obs=torch.randn(n, 4, generator=g), actions=torch.randint(0, 2, (n,), generator=g),
                     logp_old=torch.full((n,), -0.69) + 0.1 * torch.randn(n, generator=g),
                     advantages=torch.randn(n, generator=g), returns=torch.randn(n, generator=g) * 3,
                     values_old=torch.randn(n, generator=g))


def _packet(grads: list, n: int) -> GradientPacket:
    return GradientPacket(0, 0.0, "g", grads, n, 0, EpisodeStats.empty(), {})


def _grads(algo, batch: Minibatch) -> list[np.ndarray]:
    grads, _ = algo.compute_gradients(batch)[:2]
    return [g.detach().numpy().copy() for g in grads]


@pytest.mark.parametrize("sizes", [(128, 128), (64, 64, 64, 64), (100, 156)])
def test_averaged_gworker_gradients_equal_union_minibatch_gradient(sizes: tuple[int, ...]) -> None:
    c = _components()
    algo = c.build_algorithm(c.spaces())
    union = _fixed_batch(sum(sizes))
    expected = _grads(algo, union)
    bounds = np.cumsum((0, *sizes))
    parts = [Minibatch(*(t[a:b] for t in union.tensors())) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    packets = [_packet(_grads(algo, p), len(p.obs)) for p in parts]  # numpy, as from remote GWorkers
    averaged = average_gradients(packets)
    assert len(averaged) == len(expected)
    for got, want in zip(averaged, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_central_update_applies_averaged_gradients_and_skips_empty_packets() -> None:
    c = _components()
    algo = c.build_algorithm(c.spaces())
    before = [p.detach().clone() for p in algo.parameters()]
    nothing = CentralUpdate().apply(algo, [_packet(None, 0)])  # nothing to apply: weights untouched
    assert not nothing.applied and not nothing.nonfinite and nothing.metrics == {}
    assert all(torch.equal(a, b) for a, b in zip(before, algo.parameters(), strict=True))
    result = CentralUpdate().apply(algo, [_packet(_grads(algo, _fixed_batch(64)), 64)])
    assert result.applied and result.metrics["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.parameters(), strict=True))


def test_in_process_learner_versions_counters_and_metrics() -> None:
    c = _components()
    with Scheme(SchemeConfig(), c) as scheme:
        learner = scheme.learner
        for _ in range(40):
            learner.step()
        counters = learner.counters()
        metrics = learner.pop_metrics()
    # 4 envs x 16 steps per round; PPOConfig default 10 epochs x minibatch 64 -> 1 minibatch each
    assert counters["env_steps"] == 4 * 16 * 4  # 40 updates = 4 rounds of 10
    assert counters["version"] == counters["updates"] == 40
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance",
                "grad_norm", "fps", "policy_lag", "time_share_collection", "time_share_gradients",
                "time_share_update", "bytes_sent"):
        assert np.isfinite(metrics[key]), key
    # Data collected at version v is trained on for 10 updates: lag 0..9, mean 4.5.
    assert metrics["policy_lag"] == pytest.approx(4.5)


def test_in_process_scheme_never_imports_ray() -> None:
    code = textwrap.dedent("""
        import sys
        from colonyrl.launch.presets import preset
        from colonyrl.scheme.scheme import Scheme
        cfg = preset("ppo-cartpole")
        with Scheme(cfg.scheme, cfg.components()) as s:
            for _ in range(30):
                s.learner.step()
        assert s.learner.env_steps > 0
        print("ray imported:", "ray" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ray imported: False" in out.stdout


def test_scheme_config_rejects_bad_values_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"SchemeConfig\.num_grad_workers=0 .*>= 1"):
        SchemeConfig(num_grad_workers=0)
    with pytest.raises(ConfigError, match=r"SchemeConfig\.collection='bogus' .*'sync', 'async'"):
        SchemeConfig(collection="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"SchemeConfig\.compress='yes'"):
        SchemeConfig(compress="yes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_in_process_ppo_solves_cartpole_within_100k_steps(tmp_path) -> None:
    cfg = TrainConfig(
        env=EnvConfig(id="CartPole-v1", num_envs=8),
        algo=PPOConfig(lr=1e-3, num_epochs=20, minibatch_size=256),
        storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
        run=RunConfig(total_env_steps=100_000, eval_every=10_000, stop_at_return=475.0, seed=1,
                      track=False, progress=False, output_dir=str(tmp_path)),
    )
    result = train(cfg)
    assert result.evaluation.mean >= 475.0, result.evaluations
    assert result.counters["env_steps"] <= 100_000 + cfg.env_steps_per_round


def test_learner_threads_set_the_in_process_scheme_and_its_cworker_keeps_them():
    """``learner_threads`` is the thread count of the whole in-process scheme: the in-process
    CWorker (built after the GWorker) must not reset it to one, and a step keeps it."""
    before = torch.get_num_threads()
    try:
        with Scheme(SchemeConfig(learner_threads=2), _components()) as scheme:
            assert torch.get_num_threads() == 2
            scheme.learner.step()
            assert torch.get_num_threads() == 2
        with Scheme(SchemeConfig(), _components()) as scheme:
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_learner_threads_rejects_zero_naming_the_field():
    with pytest.raises(ConfigError, match="learner_threads"):
        SchemeConfig(learner_threads=0)
