"""Runtime changes travel down the hierarchy, are acknowledged, and a bad one changes nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig, adaptive_kl_coef
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.evaluate import evaluate
from colonyrl.scheme.components import Components
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=ActorCriticConfig(),
                        algo=PPOConfig(lr=1e-3, num_epochs=2, minibatch_size=32),
                        storage=RolloutConfig(num_steps=16), seed=4)
SMALL = Resources(num_cpus=0.25)


def _every_worker(learner: Any) -> list[dict[str, Any]]:
    """inspect() of every GWorker and CWorker, flattened."""
    out = []
    for g in learner.gworkers.inspect():
        out.append(g)
        out.extend(g["cworkers"])
    return out


def _check_everywhere(learner: Any, lr: float, gamma: float, env: EnvConfig) -> None:
    assert [g["lr"] for g in learner.algo.optimizer.param_groups] == [lr]
    workers = _every_worker(learner)
    assert {w["name"] for w in workers} == set(learner.worker_names)
    for w in workers:
        assert w["components"].env == env, w["name"]
        if "." in w["name"]:  # a CWorker ("g0.c1"): acting uses neither lr nor gamma; never sent them
            assert w["algo"].lr == COMPONENTS.algo.lr and w["storage"].gamma == COMPONENTS.storage.gamma
        else:
            assert w["algo"].lr == lr and w["optimizer_lrs"] == [lr], w["name"]
            assert w["storage"].gamma == gamma, w["name"]


@pytest.mark.parametrize("collection", ["sync", "async"])
def test_in_process_updates_reach_the_gworker_and_cworker(collection: str) -> None:
    with Scheme(SchemeConfig(collection=collection), COMPONENTS) as scheme:
        learner = scheme.learner
        for _ in range(3):
            learner.step()
        change = learner.update_algorithm_parameter("lr", 2.5e-4)
        assert change.workers == ("g0",) and change.version == learner.version == 3  # only who uses it
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
        assert sorted(change.workers) == ["g0", "g1"]  # the GWorkers; CWorkers never use the lr
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


# -- the test env and the storage (issue 3, item 5) ------------------------------------------------
SHORT_TEST_ENV = EnvConfig(id="CartPole-v1", num_envs=1, max_episode_steps=5)  # same spaces, capped at 5
NEW_STORAGE = RolloutConfig(num_steps=5, gamma=0.9)  # rounds of 5 steps per sub-env instead of 16


def _check_components(learner: Any, **expected: Any) -> None:
    """The Learner and every GWorker and CWorker hold ``expected``; for the storage, the object in use too."""
    for kind, value in expected.items():
        assert getattr(learner.components, kind) == value, kind
    for w in _every_worker(learner):
        for kind, value in expected.items():
            assert getattr(w["components"], kind) == value, (w["name"], kind)
        if "storage" in expected:  # the storage object in use, not only the config it was given
            assert w["storage"] == expected["storage"], w["name"]


def _round_sizes(learner: Any, steps: int) -> list[int]:
    """Env steps each of ``steps`` Learner steps added (0 while a GWorker works through its batch)."""
    sizes = []
    for _ in range(steps):
        before = learner.env_steps
        learner.step()
        sizes.append(learner.env_steps - before)
    return sizes


def test_replacing_the_test_env_reaches_every_worker_and_evaluation_steps_it() -> None:
    with Scheme(SchemeConfig(), COMPONENTS) as scheme:
        learner = scheme.learner
        for _ in range(3):
            learner.step()
        assert learner.components.evaluation_env() == COMPONENTS.env
        before = evaluate(learner.algo, learner.components.evaluation_env(), episodes=4, seed=0)
        assert before.lengths.min() > 5  # an untrained CartPole policy lasts 8-10 steps

        change = learner.replace_component("test_env", SHORT_TEST_ENV)
        assert change.kind == "test_env" and change.value == SHORT_TEST_ENV and change.workers == ("g0", "g0.c0")
        _check_components(learner, test_env=SHORT_TEST_ENV, env=COMPONENTS.env, storage=COMPONENTS.storage)
        # what train() evaluates with (periodically and at the end) steps the new env
        after = evaluate(learner.algo, learner.components.evaluation_env(), episodes=4, seed=0)
        assert after.lengths.tolist() == [5] * 4 and after.mean == 5.0
        learner.metrics.pop()
        sizes = _round_sizes(learner, 8)  # the CWorkers keep stepping the train env: same round size,
        assert set(sizes) == {0, 32}
        lengths = learner.metrics.pop()[3]
        assert lengths.size > 0 and lengths.max() > 5  # and episodes longer than the test env allows


def test_the_training_loop_evaluates_on_the_replaced_test_env(tmp_path, monkeypatch) -> None:
    """A test-env replacement mid-run (here from the hook that follows the schedules) reaches
    train()'s periodic evaluation and its final one."""
    import colonyrl.launch.train as train_module
    from colonyrl.launch.config import RunConfig, TrainConfig

    follow = train_module._follow_schedules

    def replace_at_256(cfg: Any, learner: Any) -> None:
        follow(cfg, learner)
        if learner.env_steps >= 256 and learner.components.test_env is None:
            learner.replace_component("test_env", SHORT_TEST_ENV)

    monkeypatch.setattr(train_module, "_follow_schedules", replace_at_256)
    cfg = TrainConfig(env=COMPONENTS.env, algo=COMPONENTS.algo, storage=COMPONENTS.storage,
                      run=RunConfig(total_env_steps=512, eval_every=64, eval_episodes=3, track=False, progress=False,
                                    output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt")))
    result = train_module.train(cfg)
    early = [mean for steps, mean in result.evaluations if steps < 256]
    late = [mean for steps, mean in result.evaluations if steps > 256]
    assert len(early) >= 3 and len(late) >= 3
    assert min(early) > 5.0  # CartPole-v1's own limit: an untrained policy lasts 8+ steps
    assert late == [5.0] * len(late)  # capped by the new test env
    assert result.evaluation.lengths.tolist() == [5] * 3


@pytest.mark.parametrize("collection", ["sync", "async"])
def test_replacing_the_storage_changes_every_workers_rollout_length(collection: str) -> None:
    with Scheme(SchemeConfig(collection=collection), COMPONENTS) as scheme:
        learner = scheme.learner
        assert set(_round_sizes(learner, 6)) == {0, 32}  # 1 CWorker x 2 envs x 16 steps
        change = learner.replace_component("storage", NEW_STORAGE)
        assert change.kind == "storage" and change.workers == ("g0", "g0.c0")
        _check_components(learner, storage=NEW_STORAGE, env=COMPONENTS.env)
        sizes = [s for s in _round_sizes(learner, 12) if s]
        # sync: the next round has 2 x 5 steps; async: the rollout already in flight keeps 16
        old = 1 if collection == "async" else 0
        assert sizes[:old] == [32] * old and sizes[old:] == [10] * (len(sizes) - old) and len(sizes) > 3
        assert np.isfinite(learner.pop_metrics()["policy_loss"])
        _check_components(learner, storage=NEW_STORAGE)


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("eval_env", SHORT_TEST_ENV, "replace_component.kind='eval_env'"),
        ("Storage", NEW_STORAGE, "replace_component.kind='Storage'"),
        ("test_env", NEW_STORAGE, r"replace_component\('test_env'\).config=RolloutConfig.*an EnvConfig"),
        ("storage", SHORT_TEST_ENV, r"replace_component\('storage'\).config=EnvConfig.*RolloutConfig"),
        ("storage", {"num_steps": 5}, r"replace_component\('storage'\).config=\{'num_steps': 5\}"),
        ("test_env", EnvConfig(id="Acrobot-v1"), r"replace_component\('test_env'\).config.id='Acrobot-v1'.*"
                                                 r"observation space Box"),
        ("test_env", EnvConfig(id="MountainCarContinuous-v0"), "action space Discrete"),
    ],
)
def test_a_bad_test_env_or_storage_replacement_is_rejected_and_changes_nothing(kind: str, config: Any,
                                                                               message: str) -> None:
    with Scheme(SchemeConfig(), COMPONENTS) as scheme:
        learner = scheme.learner
        learner.step()
        with pytest.raises(ConfigError, match=message):
            learner.replace_component(kind, config)
        assert learner.changes == [] and learner.components == COMPONENTS
        _check_components(learner, env=COMPONENTS.env, test_env=None, storage=COMPONENTS.storage)
        assert set(_round_sizes(learner, 4)) == {0, 32}  # and collection goes on as before


def test_an_invalid_storage_config_is_rejected_naming_the_field() -> None:
    with Scheme(SchemeConfig(), COMPONENTS) as scheme:
        learner = scheme.learner
        for bad, message in (({"num_steps": 0}, "RolloutConfig.num_steps=0"),
                             ({"gamma": 1.5}, "RolloutConfig.gamma=1.5"),
                             ({"num_steps": 2.5}, "RolloutConfig.num_steps=2.5")):
            with pytest.raises(ConfigError, match=message):
                learner.replace_component("storage", COMPONENTS.storage.replace(**bad))
        assert learner.changes == [] and learner.components == COMPONENTS
        _check_components(learner, storage=COMPONENTS.storage)


@pytest.mark.ray
def test_test_env_and_storage_replacements_reach_every_remote_worker_and_take_effect(ray_local) -> None:
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=SMALL,
                       col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, COMPONENTS) as scheme:
        learner = scheme.learner
        names = set(learner.worker_names)
        # per GWorker a round is 2 CWorkers x 2 envs x 16 steps; both GWorkers may start one in a step
        assert set(_round_sizes(learner, 4)) <= {0, 64, 128}

        change = learner.replace_component("test_env", SHORT_TEST_ENV)
        assert set(change.workers) == names and len(change.workers) == 6
        _check_components(learner, test_env=SHORT_TEST_ENV, env=COMPONENTS.env, storage=COMPONENTS.storage)
        learner.sync_weights()
        assert evaluate(learner.algo, learner.components.evaluation_env(), episodes=3).lengths.tolist() == [5] * 3

        change = learner.replace_component("storage", NEW_STORAGE)
        assert set(change.workers) == names
        _check_components(learner, storage=NEW_STORAGE, test_env=SHORT_TEST_ENV, env=COMPONENTS.env)
        cworkers = [w for w in _every_worker(learner) if "." in w["name"]]  # "g1.c0": they collect num_steps
        assert len(cworkers) == 4 and all(w["storage"].num_steps == 5 for w in cworkers)
        sizes = [s for s in _round_sizes(learner, 12) if s]
        # a GWorker may finish the batch it holds (old data); every round collected afterwards is 2 x 2 x 5
        assert sizes and set(sizes) <= {20, 40}, sizes

        for bad in (("storage", SHORT_TEST_ENV), ("test_env", EnvConfig(id="Acrobot-v1")), ("test", SHORT_TEST_ENV)):
            with pytest.raises(ConfigError, match="replace_component"):
                learner.replace_component(*bad)
        _check_components(learner, storage=NEW_STORAGE, test_env=SHORT_TEST_ENV, env=COMPONENTS.env)
        assert len(learner.changes) == 2
        assert np.isfinite(learner.pop_metrics()["policy_loss"])


@pytest.mark.ray
def test_a_parameter_change_does_not_wait_for_rollouts_in_flight(ray_local) -> None:
    """Async collection keeps every CWorker busy collecting (here >= 3.2 s per rollout of a slow env).
    A change of lr (a schedule makes one per round) goes to the GWorker only: it returns at once
    instead of queueing behind the rollouts in flight."""
    import time

    slow = COMPONENTS.env.replace(step_delay_s=0.1)  # 2 envs x 16 steps x 100 ms: >= 3.2 s a rollout
    cfg = SchemeConfig(num_col_workers=2, collection="async", col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, dataclasses.replace(COMPONENTS, env=slow)) as scheme:
        learner = scheme.learner
        learner.step()  # the next rollouts are now being collected
        start = time.perf_counter()
        change = learner.update_algorithm_parameter("lr", 2e-4)
        elapsed = time.perf_counter() - start
        assert change.workers == ("g0",)
        assert elapsed < 1.5, f"the change waited {elapsed:.2f} s"  # a queued change would wait >= 3 s
        learner.step()  # and training goes on with it
        assert [g["lr"] for g in learner.algo.optimizer.param_groups] == [2e-4]


# -- the algorithm's round-end hook (agents/base.py ``EndsRounds``): PPO's adaptive KL coefficient ---
def _kl_components(kl_target: float) -> Components:
    """A round: 2 envs x 16 steps = 32 samples, 2 epochs of one minibatch = 2 updates per GWorker."""
    return dataclasses.replace(COMPONENTS, algo=COMPONENTS.algo.replace(kl_coef=1.0, kl_target=kl_target))


def _record_packets(learner: Any) -> list[Any]:
    """Every packet the Learner gathers from now on (a spy around ``gather``)."""
    seen: list[Any] = []
    gather = learner.gather

    def spy(collect: bool = True) -> list[Any]:
        packets = gather(collect)
        seen.extend(packets)
        return packets

    learner.gather = spy
    return seen


def _one_round(learner: Any) -> None:
    learner.step()
    while not learner.at_round_boundary():
        learner.step()


def _kl_coef_everywhere(learner: Any) -> set[float]:
    """kl_coef of the Learner's algorithm, its components, its saved state, and every GWorker's."""
    gworkers = [w for w in _every_worker(learner) if "." not in w["name"]]
    return {learner.algo.config.kl_coef, learner.components.algo.kl_coef,
            learner.state_dict(workers=False)["algo"]["config"]["kl_coef"], *(w["algo"].kl_coef for w in gworkers)}


@pytest.mark.parametrize(("kl_target", "expected"), [(1e-8, [2.0, 4.0]), (10.0, [0.5, 0.25])])
def test_the_round_end_hook_adapts_kl_coef_from_the_rounds_mean_kl_everywhere(kl_target: float,
                                                                              expected: list[float]) -> None:
    with Scheme(SchemeConfig(), _kl_components(kl_target)) as scheme:
        learner = scheme.learner
        packets = _record_packets(learner)
        for round_, beta in enumerate(expected):
            _one_round(learner)
            kl = np.mean([p.info["approx_kl"] for p in packets if p.num_samples])  # the round's minibatches
            packets.clear()
            assert adaptive_kl_coef(expected[round_ - 1] if round_ else 1.0, kl, kl_target) == beta
            assert _kl_coef_everywhere(learner) == {beta}
        # one runtime change per round, recorded like any other (MLflow param/algo.kl_coef, changes.log)
        assert [(c.kind, c.name, c.value, c.workers) for c in learner.changes] == [
            ("algo", "kl_coef", beta, ("g0",)) for beta in expected]


def test_no_round_end_change_without_kl_target() -> None:
    with Scheme(SchemeConfig(), dataclasses.replace(COMPONENTS, algo=COMPONENTS.algo.replace(kl_coef=0.3))) as scheme:
        for _ in range(4):
            scheme.learner.step()
        assert scheme.learner.changes == [] and scheme.learner.algo.config.kl_coef == 0.3


@pytest.mark.ray
def test_the_round_end_change_reaches_every_remote_gworker(ray_local) -> None:
    """2 GWorkers, decentralized (each replica applies the updates; the Learner's copy is idle and
    checkpoints save a replica's state): the KL is the mean over both GWorkers' minibatches of the
    round, and the new beta is set once per round, on the Learner and on each replica. (Central
    updates take the same path, ``Learner.update_algorithm_parameter``, tested above.)"""
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=1, update="decentralized", grad_worker_resources=SMALL,
                       col_worker_resources=SMALL, worker_timeout_s=60.0)
    with Scheme(cfg, _kl_components(1e-8)) as scheme:
        learner = scheme.learner
        packets = _record_packets(learner)
        _one_round(learner)
        assert {p.worker for p in packets if p.num_samples} == {"g0", "g1"}
        kl = np.mean([p.info["approx_kl"] for p in packets if p.num_samples])
        assert adaptive_kl_coef(1.0, kl, 1e-8) == 2.0
        assert _kl_coef_everywhere(learner) == {2.0}
        (change,) = learner.changes
        assert change.name == "kl_coef" and sorted(change.workers) == ["g0", "g1"]  # CWorkers never use it
