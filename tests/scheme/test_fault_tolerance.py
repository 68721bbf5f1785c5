"""Self-healing CWorker sets on real Ray: killed workers are replaced, hung workers are named."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.evaluate import evaluate
from colonyrl.scheme.components import Components
from colonyrl.scheme.runtime import WorkerTimeoutError
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

pytestmark = pytest.mark.ray

SMALL = Resources(num_cpus=0.25)


def _components(**env: object) -> Components:
    return Components(env=EnvConfig(id="CartPole-v1", num_envs=4, **env), actor=ActorCriticConfig(),
                      algo=PPOConfig(lr=1e-3, num_epochs=10, minibatch_size=256),
                      storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8), seed=0)


def _kill(learner, worker: str) -> None:
    cworkers = learner.gworkers.workers[0].cworkers
    pid = cworkers.pids()[cworkers.names.index(worker)]
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("collection", ["sync", "async"])
def test_killed_cworker_is_replaced_with_current_components(ray_local, collection: str) -> None:
    cfg = SchemeConfig(num_col_workers=2, collection=collection, col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, _components()) as scheme:
        learner = scheme.learner
        for _ in range(12):
            learner.step()
        learner.update_algorithm_parameter("lr", 5e-4)  # made before the death: the new worker has it
        _kill(learner, "g0.c1")
        steps_before = learner.env_steps
        # Ray reports the death after a moment (longer on a loaded machine); async collection keeps
        # training on the other worker's rollouts meanwhile. Train on until it is seen, bounded.
        deadline = time.perf_counter() + 60
        while learner.totals["restarts"] == 0 and time.perf_counter() < deadline:
            learner.step()
        for _ in range(30):  # and training goes on with the new worker
            learner.step()
        assert learner.totals["restarts"] == 1
        assert learner.totals["lost_env_steps"] == 4 * 32
        assert learner.env_steps > steps_before
        inspected = {w["name"]: w for w in learner.gworkers.workers[0].cworkers.inspect()}
        # built with the current components, and acting weights only (no optimizer)
        assert inspected["g0.c1"]["algo"].lr == 5e-4 and inspected["g0.c1"]["has_optimizer"] is False
        assert learner.pop_metrics()["restarts"] == 1


@pytest.mark.slow
def test_training_reaches_the_target_through_a_cworker_kill(ray_local) -> None:
    cfg = SchemeConfig(num_col_workers=2, col_worker_resources=SMALL, worker_timeout_s=60.0)
    components = _components()
    with Scheme(cfg, components) as scheme:
        learner = scheme.learner
        killed, best, next_eval = False, 0.0, 10_000
        while learner.env_steps < 150_000 and best < 475:
            learner.step()
            if not killed and learner.env_steps >= 5_000:
                _kill(learner, "g0.c0")
                killed = True
            if learner.env_steps >= next_eval:
                next_eval += 10_000
                best = evaluate(learner.algo, components.env, 10, 0).mean
        assert best >= 475
        assert learner.totals["restarts"] == 1


def test_hanging_cworkers_are_reported_by_name_within_the_timeout(ray_local) -> None:
    # every env step sleeps 0.5 s: one rollout would take 16 s
    cfg = SchemeConfig(num_col_workers=2, col_worker_resources=SMALL, worker_timeout_s=2.0)
    with Scheme(cfg, _components(step_delay_s=0.5)) as scheme:
        start = time.perf_counter()
        with pytest.raises(WorkerTimeoutError) as e:
            scheme.learner.step()
        elapsed = time.perf_counter() - start
    assert e.value.workers == ["g0.c0", "g0.c1"] and e.value.stage == "collect"
    assert "g0.c0, g0.c1 did not answer 'collect' within 2 s" in str(e.value)
    assert 2.0 <= elapsed < 10.0


@pytest.mark.parametrize(("gradients", "update"), [("sync", "central"), ("async", "central"),
                                                   ("sync", "decentralized")])
def test_killed_gworker_is_recreated_with_its_cworkers(ray_local, gradients: str, update: str) -> None:
    """A GWorker's process dies (as when its node is lost): the set re-creates it from the current
    components, with new CWorkers (its old ones died with it), and training goes on. Decentralized,
    the new GWorker joins a new all-reduce group with the survivors' weights and optimizer state."""
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=2, gradients=gradients, update=update,
                       grad_worker_resources=SMALL, col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, _components()) as scheme:
        learner = scheme.learner
        for _ in range(12):
            learner.step()
        learner.update_algorithm_parameter("lr", 5e-4)  # made before the death: the new GWorker has it
        # g1 is inside a round (10 updates a round, 12 steps taken): the round's 2 x 4 x 32 env steps
        # were collected and counted, and are lost with it before their last updates.
        g1_mid_round = not learner.gworkers.at_round_boundary()[1]
        assert g1_mid_round or gradients == "async"  # sync: every GWorker is at its 2nd update of round 2
        old_pid = learner.gworkers.pids()[1]
        os.kill(old_pid, signal.SIGKILL)
        version = learner.version
        deadline = time.perf_counter() + 60
        while learner.totals["gworker_restarts"] == 0 and time.perf_counter() < deadline:
            learner.step()
        for _ in range(30):  # and training goes on with the new GWorker and its new CWorkers
            learner.step()
        assert learner.totals["gworker_restarts"] == 1
        assert learner.totals["restarts"] == 2  # g1's two CWorkers, re-created with it
        assert learner.totals["lost_env_steps"] == (2 * 4 * 32 if g1_mid_round else 0)
        assert learner.version >= version + 30
        assert learner.gworkers.pids()[1] != old_pid
        g1 = learner.gworkers.inspect()[1]
        assert g1["algo"].lr == 5e-4 and g1["optimizer_lrs"] == [5e-4]
        assert [c["name"] for c in g1["cworkers"]] == ["g1.c0", "g1.c1"]
        assert all(c["algo"].lr == 5e-4 for c in g1["cworkers"])
        if update == "decentralized":  # replicas identical again, weights and Adam moments alike
            a, b = learner.gworkers.algo_states()
            assert a["version"] == b["version"]
            for x, y in zip(a["algo"]["actor"].values(), b["algo"]["actor"].values(), strict=True):
                assert torch.equal(x, y)
            moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in (a["algo"]["optimizer"]["state"].values())]
            others = [(s["exp_avg"], s["exp_avg_sq"]) for s in (b["algo"]["optimizer"]["state"].values())]
            assert len(moments) == len(others) > 0
            for (m, v), (m2, v2) in zip(moments, others, strict=True):
                assert torch.equal(m, m2) and torch.equal(v, v2)
