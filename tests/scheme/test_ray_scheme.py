"""Schemes on a real local Ray instance (one per test session, from conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.tracking import read_run
from colonyrl.launch.train import train
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

pytestmark = pytest.mark.ray

SMALL = Resources(num_cpus=0.25)


def _scheme(num_grad: int, num_col: int) -> SchemeConfig:
    return SchemeConfig(num_grad_workers=num_grad, num_col_workers=num_col, grad_worker_resources=SMALL,
                        col_worker_resources=SMALL, worker_timeout_s=60.0)


def _components() -> Components:
    return Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=ActorCriticConfig(),
                      algo=PPOConfig(num_epochs=2, minibatch_size=32), storage=RolloutConfig(num_steps=16), seed=5)


def test_remote_gworkers_hold_the_learners_weights_version(ray_local) -> None:
    with Scheme(_scheme(2, 2), _components()) as scheme:
        learner = scheme.learner
        for _ in range(5):
            learner.step()
        assert learner.version == 5
        learner.step()  # the GWorkers set version-5 weights before computing this step
        for w in learner.gworkers.call("get_weights"):
            assert w.version == 5
        # a round per GWorker: 2 CWorkers x 2 envs x 16 steps = 64 samples = 2 minibatches x 2 epochs
        # = 4 updates, so 6 updates took 2 rounds on each of the 2 GWorkers
        assert learner.env_steps == 2 * (2 * 2 * 16) * 2


def test_remote_cworkers_use_distinct_seeds(ray_local) -> None:
    with Scheme(_scheme(1, 2), _components()) as scheme:
        gworker = scheme.learner.gworkers.gworker  # one GWorker in-process, CWorkers on Ray
        rollouts = gworker.cworkers.collect(Weights(7, gworker.algo.get_weights()))
        assert [r.worker for r in rollouts] == ["g0.c0", "g0.c1"]
        assert all(r.version == 7 for r in rollouts)  # every rollout carries the version that made it
        assert not np.array_equal(rollouts[0].data["obs"][0], rollouts[1].data["obs"][0])
        # same node: rollouts travel as plain numpy (shared memory), no lz4 envelope
        assert isinstance(rollouts[0].data, dict)


@pytest.mark.slow
def test_ray_2x2_scheme_learns_cartpole_and_tracks_lag_and_fps(ray_local, tmp_path, mlflow_uri) -> None:
    cfg = TrainConfig(
        env=EnvConfig(id="CartPole-v1", num_envs=4),
        actor=ActorCriticConfig(),
        algo=PPOConfig(lr=1e-3, num_epochs=20, minibatch_size=128),
        storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
        scheme=_scheme(2, 2),
        run=RunConfig(total_env_steps=150_000, eval_every=10_000, stop_at_return=475.0, seed=0,
                      tracking_uri=mlflow_uri, progress=False, output_dir=str(tmp_path), log_every_s=0.5),
    )
    result = train(cfg)
    assert result.evaluation.mean >= 475.0, result.evaluations
    run = read_run(mlflow_uri, result.run_id)
    for key in ("policy_lag", "fps", "episode_return", "eval_return"):
        assert run["metrics"].get(key, 0) >= 1, key


def test_remote_collection_is_reproducible_for_a_seed(ray_local) -> None:
    def first_actions() -> list:
        with Scheme(_scheme(1, 2), _components()) as scheme:
            gworker = scheme.learner.gworkers.gworker
            rollouts = gworker.cworkers.collect(Weights(0, gworker.algo.get_weights()))
            return [r.data["actions"].copy() for r in rollouts]

    a, b = first_actions(), first_actions()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])  # different workers sample different streams
