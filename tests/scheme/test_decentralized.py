"""Decentralized update on real Ray: GWorkers all-reduce gradients (gloo) and stay bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.train import train
from colonyrl.scheme.components import Components
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
        weights = [w.arrays for w in learner.gworkers.get_weights()]
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


def _optimizer_moments(state: dict) -> list[torch.Tensor]:
    return [t for s in state["optimizer"]["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"], s["step"])]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("resume_grad_workers", [2, 3])
def test_decentralized_checkpoint_and_resume_keep_the_optimizer_in_use(ray_local, tmp_path, resume_grad_workers) -> None:
    """Through train() / --resume: the checkpoint holds the GWorkers' Adam moments (the Learner's own
    optimizer is never stepped in this mode), and a resume (same or other worker count) hands them
    to every GWorker: a resume with no steps left writes back exactly what it read."""
    from colonyrl.launch.checkpoint import load_checkpoint
    from colonyrl.launch.config import RunConfig, TrainConfig

    def scheme(n: int) -> SchemeConfig:
        return SchemeConfig(num_grad_workers=n, update="decentralized", grad_worker_resources=Resources(num_cpus=0.25),
                            worker_timeout_s=60.0)

    run = RunConfig(total_env_steps=512, eval_episodes=3, track=False, progress=False, output_dir=str(tmp_path / "r"),
                    checkpoint_dir=str(tmp_path / "c"))
    cfg = TrainConfig(env=COMPONENTS.env, actor=COMPONENTS.actor, algo=COMPONENTS.algo.replace(target_kl=None),
                      storage=COMPONENTS.storage, scheme=scheme(2), run=run)
    first = train(cfg)
    (folder,) = (tmp_path / "c").iterdir()
    saved = load_checkpoint(folder)["learner"]
    moments = _optimizer_moments(saved["algo"])
    assert moments and all(bool(torch.any(m != 0)) for m in moments)  # Adam's state in use, not an empty one
    # The replicas agree with what was saved: read it back from a fresh resume onto n GWorkers.
    again = train(cfg.replace(scheme=scheme(resume_grad_workers),
                              run=run.replace(resume=str(folder), checkpoint_dir=str(tmp_path / "c2"))))
    resumed = load_checkpoint(next((tmp_path / "c2").iterdir()))["learner"]
    for a, b in zip(moments, _optimizer_moments(resumed["algo"]), strict=True):
        assert torch.equal(a, b)
    for key, value in saved["algo"]["actor"].items():
        assert torch.equal(value, resumed["algo"]["actor"][key]), key
    assert again.counters == first.counters
    # The policy right after the resume is the one right before it: same final evaluation.
    np.testing.assert_array_equal(again.evaluation.returns, first.evaluation.returns)
