"""Every coordination mode learns CartPole-v1 to >= 475 within a fixed budget (real Ray).

Training stops at a periodic evaluation of 500 (every episode perfect), not 475: a policy that
just reached 475 on the periodic seeds scored 437-462 on the final evaluation's own seeds in CI
(async gradients, where timing makes every run different).

Sync collection, sync gradients and the central update on 2 x 2 are not repeated here: the same
mode learns CartPole-v1 to >= 475 on its final evaluation in
tests/scheme/test_ray_scheme.py::test_ray_2x2_scheme_learns_cartpole_and_tracks_lag_and_fps
(dropped from here for CI time: each case costs 35-90 s on the session's one Ray instance).
"""

from __future__ import annotations

import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BUDGET = 150_000
SMALL = Resources(num_cpus=0.25)


@pytest.mark.parametrize(("collection", "gradients", "update"), [
    ("async", "sync", "central"), ("sync", "async", "central"), ("async", "async", "central"),
    ("sync", "sync", "decentralized"),
])
def test_mode_learns_cartpole(ray_local, tmp_path, collection: str, gradients: str, update: str) -> None:
    cfg = TrainConfig(
        env=EnvConfig(id="CartPole-v1", num_envs=4),
        actor=ActorCriticConfig(),
        algo=PPOConfig(lr=1e-3, num_epochs=10, minibatch_size=128),
        storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
        scheme=SchemeConfig(num_grad_workers=2, num_col_workers=2, collection=collection, gradients=gradients, update=update,
                            grad_worker_resources=SMALL, col_worker_resources=SMALL, worker_timeout_s=120.0),
        run=RunConfig(total_env_steps=BUDGET, eval_every=10_000, stop_at_return=500.0, seed=0, track=False,
                      progress=False, output_dir=str(tmp_path)),
    )
    result = train(cfg)
    assert result.evaluation.mean >= 475.0, result.evaluations
