"""The on-policy family of issue 10 (PG, A2C, adaptive-KL PPO, IMPALA, APPO, recurrent PPO and IMPALA)
through coordination modes other than the ones their presets and learning tests use, on real Ray:
each trains, keeps finite weights, reports the policy lag, and in decentralized mode keeps its
replicas equal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from colonyrl.agents.recurrent_impala import RecurrentIMPALAConfig
from colonyrl.launch.presets import preset
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig

pytestmark = pytest.mark.ray

SMALL = Resources(num_cpus=0.25)


def _components(name: str) -> Any:
    if name == "recurrent-impala":  # no preset of its own: the recurrent-PPO preset's env and LSTM actor
        cfg = preset("ppo-lstm-cartpole-novel").replace(algo=RecurrentIMPALAConfig(optimizer="adam", lr=1e-3))
    else:
        cfg = preset(name)
    # small rounds: a few updates per mode are enough here (the presets' learning is tested elsewhere)
    return cfg.replace(env=cfg.env.replace(num_envs=4), storage=cfg.storage.replace(num_steps=16)).components()


@pytest.mark.parametrize(("name", "collection", "gradients", "update"), [
    ("pg-cartpole", "sync", "sync", "decentralized"),
    ("a2c-cartpole", "async", "async", "central"),
    ("ppo-kl-cartpole", "async", "sync", "decentralized"),
    ("impala-cartpole-ray", "sync", "async", "central"),
    ("appo-cartpole-ray", "sync", "sync", "decentralized"),
    ("ppo-lstm-cartpole-novel", "async", "sync", "central"),
    ("recurrent-impala", "async", "sync", "decentralized"),
])
def test_on_policy_algorithm_trains_in_another_mode(ray_local, name: str, collection: str, gradients: str,
                                                    update: str) -> None:
    config = SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=SMALL,
                          col_worker_resources=SMALL, worker_timeout_s=120.0, collection=collection,
                          gradients=gradients, update=update)
    with Scheme(config, _components(name)) as scheme:
        learner = scheme.learner
        while learner.num_updates < 6 or learner.env_steps < 1000:
            learner.step()
        learner.finish_round()
        metrics = learner.pop_metrics()
        assert learner.version > 0 and np.isfinite(metrics["policy_loss"])
        if collection == "async" or gradients == "async":  # stale data is possible: its lag is reported
            assert "policy_lag" in metrics and 0 <= metrics["policy_lag"] < 1000
        learner.sync_weights()
        assert all(np.isfinite(v).all() for v in learner.algo.get_weights().values())
        if update == "decentralized":  # every replica applied the same averaged gradients
            first, second = (w.arrays for w in learner.gworkers.get_weights())
            for key in first:
                np.testing.assert_array_equal(first[key], second[key], err_msg=key)
