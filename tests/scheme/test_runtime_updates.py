"""Runtime changes travel down the hierarchy, are acknowledged, and a bad one changes nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.config import ConfigError
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=ActorCriticConfig(),
                        algo=PPOConfig(lr=1e-3, num_epochs=2, minibatch_size=32),
                        storage=RolloutConfig(num_steps=16), seed=4)
SMALL = Resources(num_cpus=0.25)


def _every_worker(learner: Any) -> list[dict[str, Any]]:
    """inspect() of every GWorker and CWorker, flattened."""
    out = []
    for g in learner.gworkers.call("inspect"):
        out.append(g)
        out.extend(g["cworkers"])
    return out


def _check_everywhere(learner: Any, lr: float, gamma: float, env: EnvConfig) -> None:
    assert [g["lr"] for g in learner.algo.optimizer.param_groups] == [lr]
    workers = _every_worker(learner)
    assert {w["name"] for w in workers} == set(learner.worker_names)
    for w in workers:
        assert w["algo"].lr == lr and w["optimizer_lrs"] == [lr], w["name"]
        assert w["storage"].gamma == gamma, w["name"]
        assert w["components"].env == env, w["name"]


@pytest.mark.parametrize("collection", ["sync", "async"])
def test_in_process_updates_reach_the_gworker_and_cworker(collection: str) -> None:
    with Scheme(SchemeConfig(collection=collection), COMPONENTS) as scheme:
        learner = scheme.learner
        for _ in range(3):
            learner.step()
        change = learner.update_algorithm_parameter("lr", 2.5e-4)
        assert change.workers == ("g0", "g0.c0") and change.version == learner.version == 3
        assert change.env_steps == learner.env_steps > 0
        learner.update_storage_parameter("gamma", 0.9)
        learner.update_algorithm_parameter("clip_range", 0.1)
        _check_everywhere(learner, 2.5e-4, 0.9, COMPONENTS.env)
        for _ in range(3):  # and training goes on with them
            learner.step()
        assert learner.algo.config.clip_range == 0.1 and len(learner.changes) == 3


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        ("update_algorithm_parameter", ("lr", -1.0), "PPOConfig.lr=-1.0"),
        ("update_algorithm_parameter", ("lr", "fast"), "PPOConfig.lr='fast'"),
        ("update_algorithm_parameter", ("learning_rate", 0.1), "'learning_rate'"),
        ("update_algorithm_parameter", ("adam_eps", 0.1), "'adam_eps'"),  # fixed at build time
        ("update_storage_parameter", ("gamma", 1.5), "RolloutConfig.gamma=1.5"),
        ("update_storage_parameter", ("num_steps", 8), "'num_steps'"),
        ("replace_component", ("actor", ActorCriticConfig()), "replace_component.kind='actor'"),
        ("replace_component", ("env", RolloutConfig()), "an EnvConfig"),
        ("replace_component", ("env", EnvConfig(id="Pendulum-v1")), "observation space"),
    ],
)
def test_a_bad_change_is_rejected_and_changes_nothing(call: str, args: tuple, message: str) -> None:
    with Scheme(SchemeConfig(), COMPONENTS) as scheme:
        learner = scheme.learner
        learner.step()
        with pytest.raises(ConfigError, match=message):
            getattr(learner, call)(*args)
        assert learner.changes == [] and learner.components == COMPONENTS
        _check_everywhere(learner, 1e-3, 0.99, COMPONENTS.env)


def test_replacing_the_train_env_makes_cworkers_step_the_new_env() -> None:
    short = COMPONENTS.env.replace(max_episode_steps=12)  # a curriculum step: same spaces, new env
    with Scheme(SchemeConfig(), COMPONENTS) as scheme:
        learner = scheme.learner
        change = learner.replace_component("env", short)
        assert change.kind == "env" and change.workers == ("g0", "g0.c0")
        assert all(w["components"].env == short for w in _every_worker(learner))
        for _ in range(40):
            learner.step()
        _, _, returns, lengths = learner.metrics.pop()
        assert lengths.size > 0 and lengths.max() <= 12  # CartPole's own limit would be 500


@pytest.mark.ray
def test_updates_reach_every_remote_gworker_and_cworker(ray_local) -> None:
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=SMALL,
                       col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, COMPONENTS) as scheme:
        learner = scheme.learner
        learner.step()
        change = learner.update_algorithm_parameter("lr", 3e-4)
        assert sorted(change.workers) == sorted(learner.worker_names) and len(change.workers) == 6
        learner.update_storage_parameter("gamma", 0.95)
        new_env = COMPONENTS.env.replace(max_episode_steps=30)
        learner.replace_component("env", new_env)
        _check_everywhere(learner, 3e-4, 0.95, new_env)
        with pytest.raises(ConfigError):
            learner.update_algorithm_parameter("lr", -0.1)
        _check_everywhere(learner, 3e-4, 0.95, new_env)
        for _ in range(4):
            learner.step()
        assert np.isfinite(learner.pop_metrics()["policy_loss"])
