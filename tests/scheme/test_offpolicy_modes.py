"""Off-policy learning through every coordination mode on real Ray: replay memories per GWorker,
runtime updates of the off-policy parameters reaching every worker that uses them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.replay import ReplayConfig

pytestmark = pytest.mark.ray

SMALL = Resources(num_cpus=0.25)
NET = ActorCriticConfig(hidden_sizes=(32, 32), activation="relu", ortho_init=False)
SAC = Components(env=EnvConfig(id="Pendulum-v1", num_envs=2), actor=NET,
                 algo=SACConfig(lr=1e-3, batch_size=32, learning_starts=32, updates_per_step=0.5),
                 storage=ReplayConfig(num_steps=8, memory_size=5_000, prioritized=True), seed=3)


def _scheme(**kw: Any) -> SchemeConfig:
    return SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=SMALL, col_worker_resources=SMALL,
                        worker_timeout_s=120.0, **kw)


@pytest.mark.parametrize(("collection", "gradients", "update"), [
    ("sync", "sync", "central"), ("async", "sync", "central"), ("sync", "async", "central"),
    ("async", "async", "central"), ("sync", "sync", "decentralized"), ("async", "sync", "decentralized"),
])
def test_sac_trains_in_every_mode_with_one_memory_per_gworker(ray_local, collection: str, gradients: str,
                                                              update: str) -> None:
    with Scheme(_scheme(collection=collection, gradients=gradients, update=update), SAC) as scheme:
        learner = scheme.learner
        while learner.env_steps < 800:
            learner.step()
        learner.finish_round()
        metrics = learner.pop_metrics()
        # update-to-data 0.5 per GWorker on its own transitions, none before 32 were stored there;
        # counted in gradients computed (with sync gradients an update may hold an idle GWorker's
        # empty packet: updates x 2 overcounts, by more the less evenly the two GWorkers' data arrives)
        assert 0.3 * learner.env_steps / 2 < learner.gradient_steps <= 0.5 * learner.env_steps
        assert learner.gradient_steps <= learner.num_updates * (2 if gradients == "sync" else 1)
        assert "policy_lag" in metrics and np.isfinite(metrics["critic_loss"])
        learner.sync_weights()
        assert all(np.isfinite(v).all() for v in learner.algo.get_weights().values())
        states = learner.gworkers.get_states()
        sizes = [int(s["storage"]["size"]) for s in states]  # each GWorker's own memory, fed by its 2 CWorkers
        assert all(size > 0 for size in sizes) and sum(sizes) <= learner.env_steps
        if update == "decentralized":  # the replicas stay equal, target critics included
            first, second = (w.arrays for w in learner.gworkers.get_weights())
            for key in first:
                np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_offpolicy_runtime_updates_reach_who_uses_them(ray_local) -> None:
    with Scheme(_scheme(), SAC) as scheme:
        learner = scheme.learner
        while learner.num_updates < 3:
            learner.step()
        gworkers = ("g0", "g1")
        for name, value in (("lr", 5e-4), ("tau", 0.01), ("batch_size", 16), ("updates_per_step", 1.0)):
            assert learner.update_algorithm_parameter(name, value).workers == gworkers, name
        for name, value in (("alpha", 0.5), ("beta", 0.7)):
            assert learner.update_storage_parameter(name, value).workers == gworkers, name
        for g in learner.gworkers.inspect():
            assert (g["algo"].lr, g["algo"].tau, g["algo"].batch_size, g["algo"].updates_per_step) == (5e-4, 0.01, 16, 1.0)
            assert (g["storage"].alpha, g["storage"].beta) == (0.5, 0.7)
            assert set(g["optimizer_lrs"]) == {5e-4}
            assert all(not c["has_optimizer"] for c in g["cworkers"])  # acting weights only
        version = learner.version
        for _ in range(5):  # and training goes on with them
            learner.step()
        assert learner.version > version


def test_dqn_epsilon_reaches_every_cworker(ray_local) -> None:
    dqn = Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=NET,
                     algo=DQNConfig(batch_size=16, learning_starts=16, epsilon=1.0),
                     storage=ReplayConfig(num_steps=8, memory_size=1_000), seed=0)
    with Scheme(_scheme(), dqn) as scheme:
        learner = scheme.learner
        learner.step()
        change = learner.update_algorithm_parameter("epsilon", 0.05)
        assert set(change.workers) == set(learner.worker_names)  # an acting parameter: CWorkers too
        for g in learner.gworkers.inspect():
            assert g["algo"].epsilon == 0.05 and all(c["components"].algo.epsilon == 0.05 for c in g["cworkers"])
