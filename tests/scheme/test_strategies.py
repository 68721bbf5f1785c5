"""Collection strategies: async collection overlaps collection and learning, and bounds the lag."""

from __future__ import annotations

import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

# 4 envs x 16 steps = 64 samples per rollout = 1 minibatch; 5 epochs -> 5 updates per rollout.
COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                        algo=PPOConfig(num_epochs=5, minibatch_size=64), storage=RolloutConfig(num_steps=16), seed=2)


def _run(scheme_cfg: SchemeConfig, updates: int) -> tuple[dict[str, float], dict[str, int]]:
    with Scheme(scheme_cfg, COMPONENTS) as scheme:
        for _ in range(updates):
            scheme.learner.step()
        return scheme.learner.pop_metrics(), scheme.learner.counters()


def test_async_collection_trains_on_rollouts_collected_while_learning() -> None:
    metrics, counters = _run(SchemeConfig(collection="async"), updates=30)
    assert counters["updates"] == 30
    # The worker is handed the newest weights when its rollout is taken, and collects while the 5
    # updates on that rollout run: the next rollout was made 5 versions back, so the lag of an
    # update is 5..9 (mean 7), where sync collection gives 0..4 (mean 2). The first rollout is
    # fresh: 30 updates = 6 rollouts give (2 + 5 * 7) / 6.
    assert metrics["policy_lag"] == pytest.approx((2 + 5 * 7) / 6)
    assert metrics["dropped_rollouts"] == 0
    sync_metrics, _ = _run(SchemeConfig(collection="sync"), updates=30)
    assert sync_metrics["policy_lag"] == pytest.approx(2.0)


def test_async_collection_drops_and_counts_rollouts_older_than_max_policy_lag() -> None:
    metrics, counters = _run(SchemeConfig(collection="async", max_policy_lag=0), updates=30)
    # Every rollout collected during learning is 5 versions old: dropped; the worker is then
    # re-sent the current weights and its next rollout is fresh (lag 0 at the first update).
    assert metrics["policy_lag"] == pytest.approx(2.0)
    assert metrics["dropped_rollouts"] == 5  # one per round after the first (a running total)
    # The dropped rollouts were stepped in the env all the same: counted as env steps (honest
    # sample efficiency), and on their own.
    assert metrics["dropped_env_steps"] == 5 * 64
    assert counters["env_steps"] == (6 + 5) * 64


@pytest.mark.ray
def test_async_collection_with_remote_cworkers(ray_local) -> None:
    cfg = SchemeConfig(collection="async", num_col_workers=2, col_worker_resources=Resources(num_cpus=0.25),
                       worker_timeout_s=60.0)
    metrics, counters = _run(cfg, updates=30)
    assert counters["updates"] == 30 and counters["env_steps"] > 0
    assert metrics["policy_lag"] > 2.0  # rollouts were collected with older weights than sync would use


@pytest.mark.ray
def test_async_gradients_apply_each_packet_and_measure_staleness(ray_local) -> None:
    cfg = SchemeConfig(num_grad_workers=2, gradients="async", grad_worker_resources=Resources(num_cpus=0.25),
                       worker_timeout_s=60.0)
    with Scheme(cfg, COMPONENTS) as scheme:
        learner = scheme.learner
        for _ in range(20):
            packets = learner.gather()
            assert len(packets) == 1  # one GWorker's gradients per Learner step
            learner.apply(packets)
            learner.broadcast()
        metrics = learner.pop_metrics()
    assert learner.num_updates == learner.version == 20
    # While one GWorker's gradients are applied, the other computes on older weights: packets
    # arrive stale (how stale depends on the interleaving); in sync mode staleness is always 0.
    assert metrics["gradient_staleness"] > 0.0


@pytest.mark.ray
def test_metrics_name_each_worker(ray_local) -> None:
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=Resources(num_cpus=0.25),
                       col_worker_resources=Resources(num_cpus=0.25), worker_timeout_s=60.0)
    metrics, _ = _run(cfg, updates=4)
    for worker in ("g0.c0", "g0.c1", "g1.c0", "g1.c1"):
        assert metrics[f"collect_fps/{worker}"] > 0 and metrics[f"policy_lag/{worker}"] >= 0
    assert {"gradient_staleness/g0", "gradient_staleness/g1"} <= set(metrics)
