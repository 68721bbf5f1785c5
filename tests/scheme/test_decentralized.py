"""Decentralized update on real Ray: GWorkers all-reduce gradients (gloo) and stay bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.config import ConfigError
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                        algo=PPOConfig(num_epochs=4, minibatch_size=64, target_kl=0.02),
                        storage=RolloutConfig(num_steps=32), seed=9)


@pytest.mark.ray
def test_gworkers_hold_bit_identical_weights_after_allreduced_updates(ray_local) -> None:
    cfg = SchemeConfig(num_grad_workers=3, update="decentralized", grad_worker_resources=Resources(num_cpus=0.25),
                       worker_timeout_s=60.0)
    with Scheme(cfg, COMPONENTS) as scheme:
        learner = scheme.learner
        initial = learner.algo.get_weights()
        for _ in range(25):
            learner.step()
        assert learner.version == learner.num_updates > 0
        weights = [w.arrays for w in learner.gworkers.call("get_weights")]
        for other in weights[1:]:
            for key, value in weights[0].items():
                assert np.array_equal(value, other[key]), key  # bit-identical, not just close
        assert any(not np.array_equal(initial[k], weights[0][k]) for k in initial)  # they did train
        learner.sync_weights()  # the Learner pulls them for evaluation and saving
        assert all(np.array_equal(learner.algo.get_weights()[k], weights[0][k]) for k in initial)
        metrics = learner.pop_metrics()
        assert metrics["gradient_staleness"] == 0 and np.isfinite(metrics["grad_norm"])


def test_decentralized_update_with_async_gradients_is_rejected() -> None:
    with pytest.raises(ConfigError, match="SchemeConfig.gradients='async'.*decentralized"):
        SchemeConfig(update="decentralized", gradients="async")
