"""Schemes on a real local Ray instance (one per test session, from conftest)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

pytestmark = pytest.mark.ray

SMALL = Resources(num_cpus=0.25)


def _scheme(num_grad: int, num_col: int) -> SchemeConfig:
    return SchemeConfig(num_grad_workers=num_grad, num_col_workers=num_col, grad_worker_resources=SMALL,
                        col_worker_resources=SMALL, worker_timeout_s=60.0)


def _components() -> Components:
    return Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=ActorCriticConfig(),
                      algo=PPOConfig(num_epochs=2, minibatch_size=32), storage=RolloutConfig(num_steps=16), seed=5)


def test_remote_gworkers_hold_the_learners_weights_version(ray_local) -> None:
    """Also the lag, staleness and FPS each step reports, exactly as sync collection + sync gradients
    + central update define them (scheme/learner.py ``gather``, ``pop_metrics``):

    * a round starts on every GWorker at Learner version V (``SyncGradients.gather`` ->
      ``start_round``) and its CWorkers collect with the weights of V, so ``data_version`` = V and the
      k-th step of the round (k = 0, 1, ...) reports ``policy_lag`` = version - V = k;
    * each step's gradients are computed with the weights sent with it: ``gradient_staleness`` = 0;
    * a round's env steps are reported with its first step, so ``fps`` (env steps of the window /
      its wall time) is 0 in a window without a round start.
    """
    round_env_steps = 2 * 2 * 2 * 16  # GWorkers x CWorkers x envs x steps
    with Scheme(_scheme(2, 2), _components()) as scheme:
        learner = scheme.learner
        rows, windows = [], []

        def pop() -> tuple[dict[str, float], float, float]:
            before = time.perf_counter()
            row = learner.pop_metrics()  # its window: from the previous call to this one
            return row, before, time.perf_counter()

        _, prev_before, prev_after = pop()  # the first window starts now
        for _ in range(6):
            learner.step()
            row, before, after = pop()
            rows.append(row)
            windows.append((before - prev_after, after - prev_before))  # shortest, longest it can be
            prev_before, prev_after = before, after
        assert learner.version == 6
        for w in learner.gworkers.get_weights():  # they set version-5 weights for the 6th step
            assert w.version == 5
        # a round per GWorker: 2 CWorkers x 2 envs x 16 steps = 64 samples = 2 minibatches x 2 epochs
        # = 4 updates, so 6 updates took 2 rounds on each of the 2 GWorkers
        assert learner.env_steps == 2 * round_env_steps
    assert [r["policy_lag"] for r in rows] == [0, 1, 2, 3, 0, 1]
    assert [r["gradient_staleness"] for r in rows] == [0] * 6
    assert all(r[f"gradient_staleness/g{g}"] == 0 for r in rows for g in (0, 1))
    starts = [0, 4]  # the steps that start a round carry what its collection reported
    assert all(rows[i][f"policy_lag/g{g}.c{c}"] == 0 for i in starts for g in (0, 1) for c in (0, 1))
    assert [r["env_steps"] for r in rows] == [round_env_steps] * 4 + [2 * round_env_steps] * 2
    assert [r["updates"] for r in rows] == [r["policy_version"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for i, (row, (shortest, longest)) in enumerate(zip(rows, windows, strict=True)):
        if i in starts:
            assert round_env_steps / longest <= row["fps"] <= round_env_steps / shortest, (i, row, windows[i])
        else:
            assert row["fps"] == 0, (i, row["fps"])


def test_remote_cworkers_use_distinct_seeds(ray_local) -> None:
    with Scheme(_scheme(1, 2), _components()) as scheme:
        gworker = scheme.learner.gworkers.workers[0]  # one GWorker in-process, CWorkers on Ray
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
    _check_logged_lag_and_fps(mlflow_uri, result.run_id, cfg, result.counters)


def _check_logged_lag_and_fps(uri: str, run_id: str, cfg: TrainConfig, counters: dict[str, int]) -> None:
    """What MLflow holds is what sync collection + sync gradients + central update imply (bounds from
    the code, not from observed values):

    * A round: each GWorker's CWorkers collect ``num_envs x num_steps`` env steps each with the
      weights of the round's start (version V), reported with the round's first step; then every
      Learner step is one update with the weights of its version. A round has ``num_epochs x
      max(1, round(B / minibatch_size))`` updates (``RolloutStorage.generate_batches``) with B <=
      ``num_col_workers x num_envs x num_steps`` valid samples per GWorker (autoreset steps are
      dropped), so between U_MIN = num_epochs and U_MAX = num_epochs x round(B_max / minibatch_size).
    * ``policy_lag`` of the k-th step of a round is k (Learner.gather: version - data_version), so
      a window's mean lies in [0, U_MAX - 1]; over the run, each complete round's steps average
      (U - 1) / 2, so the packet-weighted mean lies in [(U_MIN - 1) / 2 x (1 - U_MAX / updates),
      (U_MAX - 1) / 2] (the one partial round, at most U_MAX steps, can only pull it down).
    * ``gradient_staleness`` is 0 and each CWorker's ``policy_lag/<cworker>`` is 0.
    * ``fps`` is the window's env steps over its wall time: the env-step delta between two rows
      (their MLflow step) over the time between them (the rows' timestamps, taken right after
      ``pop_metrics`` measured the window; ms resolution and scheduling slack allowed for).
    * ``env_steps`` = rounds x env steps per round, and the updates fit those rounds.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    history = {key: sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
               for key in ("policy_lag", "gradient_staleness", "fps", "env_steps", "updates",
                           "nonfinite_updates", "preemptions", "dropped_rollouts")}
    s, a = cfg.scheme, cfg.algo
    samples_max = s.num_col_workers * cfg.env.num_envs * cfg.storage.num_steps  # per GWorker and round
    round_env_steps = s.num_grad_workers * samples_max
    u_min, u_max = a.num_epochs, a.num_epochs * max(1, round(samples_max / a.minibatch_size))
    assert (u_min, u_max, round_env_steps) == (20, 40, 512)  # what this config implies

    # preconditions of the bounds below: every step was one update, no round was cut short
    for key in ("nonfinite_updates", "preemptions", "dropped_rollouts"):
        assert history[key][-1].value == 0, key
    rows = {key: [m.value for m in ms] for key, ms in history.items()}
    steps = [m.step for m in history["policy_lag"]]
    assert len(steps) >= 3 and steps == sorted(set(steps))  # one row per logging window
    for key in ("gradient_staleness", "fps", "env_steps", "updates"):
        assert [m.step for m in history[key]] == steps, key

    # env steps: whole rounds, counted once; the updates fit that many rounds
    for env_steps, step, updates in zip(rows["env_steps"], steps, rows["updates"], strict=True):
        rounds, rest = divmod(int(env_steps), round_env_steps)
        assert env_steps == step and rest == 0 and rounds >= 1, (env_steps, step)
        assert u_min * (rounds - 1) < updates <= u_max * rounds, (env_steps, updates)
    rounds, rest = divmod(counters["env_steps"], round_env_steps)
    assert rest == 0 and u_min * (rounds - 1) < counters["updates"] <= u_max * rounds, counters

    # policy lag and gradient staleness
    assert all(0 <= lag <= u_max - 1 for lag in rows["policy_lag"]), rows["policy_lag"]
    assert rows["gradient_staleness"] == [0.0] * len(steps)
    for g in range(s.num_grad_workers):
        assert {m.value for m in client.get_metric_history(run_id, f"gradient_staleness/g{g}")} == {0.0}
        for c in range(s.num_col_workers):
            assert {m.value for m in client.get_metric_history(run_id, f"policy_lag/g{g}.c{c}")} == {0.0}
    updates = rows["updates"]
    per_window = np.diff([0.0, *updates])  # steps (= updates) in each window
    mean_lag = float(np.dot(rows["policy_lag"], per_window) / updates[-1])
    assert (u_min - 1) / 2 * (1 - u_max / updates[-1]) <= mean_lag <= (u_max - 1) / 2, (mean_lag, updates[-1])

    # fps: positive, and the env steps of each window over its wall time
    assert all(fps > 0 for fps in rows["fps"])
    ts = [m.timestamp for m in history["fps"]]
    for i in range(1, len(steps)):
        between_s = (ts[i] - ts[i - 1]) / 1000
        shortest, longest = max(0.8 * between_s - 0.005, 1e-4), 1.25 * between_s + 0.005
        delta = steps[i] - steps[i - 1]
        assert delta / longest <= rows["fps"][i] <= delta / shortest, (i, rows["fps"][i], delta, between_s)


def test_remote_collection_is_reproducible_for_a_seed(ray_local) -> None:
    def first_actions() -> list:
        with Scheme(_scheme(1, 2), _components()) as scheme:
            gworker = scheme.learner.gworkers.workers[0]
            rollouts = gworker.cworkers.collect(Weights(0, gworker.algo.get_weights()))
            return [r.data["actions"].copy() for r in rollouts]

    a, b = first_actions(), first_actions()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])  # different workers sample different streams


def test_remote_cworkers_puts_a_lone_cworker_in_its_own_process_beside_the_in_process_gworker(ray_local) -> None:
    """``remote_cworkers``: one GWorker in the driver, its one CWorker a Ray actor. With async
    collection the CWorker collects the next round while the GWorker computes (policy lag > 0)."""
    import os

    from colonyrl.scheme.g_worker import GWorker

    cfg = _scheme(1, 1).replace(remote_cworkers=True, collection="async")
    assert cfg.remote_col_workers and not cfg.remote_grad_workers
    assert not _scheme(1, 1).remote_col_workers  # without it a lone CWorker stays in-process
    with Scheme(cfg, _components()) as scheme:
        learner = scheme.learner
        gworker = learner.gworkers.workers[0]
        assert isinstance(gworker, GWorker)  # in the driver, not an actor handle
        (cworker_pid,) = gworker.cworkers.pids()
        assert cworker_pid != os.getpid()
        lags = []
        for _ in range(8):  # 4 rounds of 2 updates (2 envs x 16 steps = one 32-sample minibatch, 2 epochs)
            learner.step()
            lags.append(learner.pop_metrics().get("policy_lag/g0.c0"))
        assert learner.env_steps == 4 * 2 * 16
    round_starts = [lag for lag in lags if lag is not None]
    # every later round was collected while the one before it was learned: its weights are older
    assert len(round_starts) == 4 and round_starts[0] == 0 and all(lag > 0 for lag in round_starts[1:]), lags
