"""Checkpoints and resume: exact continuation, safe loading, other worker counts, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import torch

from colonyrl.launch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

# 8 envs x 16 steps = 128 samples = 2 minibatches x 4 epochs: 8 updates per collection round.
BASE = preset("ppo-cartpole")
CFG = BASE.replace(storage=BASE.storage.replace(num_steps=16), algo=BASE.algo.replace(num_epochs=4, minibatch_size=64))
N = 8 * 5


def _train_updates(cfg: TrainConfig, updates: int, state: dict | None = None):
    with Scheme(cfg.scheme, cfg.components()) as scheme:
        learner = scheme.learner
        restored = learner.load_state_dict(state["learner"]) if state else None
        for _ in range(updates):
            learner.step()
        return learner.algo.state_dict(), learner.counters(), restored


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, straight_counters, _ = _train_updates(CFG, 2 * N)
    with Scheme(CFG.scheme, CFG.components()) as scheme:
        for _ in range(N):
            scheme.learner.step()
        assert scheme.learner.at_round_boundary()
        path = save_checkpoint(tmp_path, scheme.learner, CFG, run_id=None)
    resumed, resumed_counters, restored = _train_updates(CFG, N, load_checkpoint(path))
    assert restored is True  # envs, observations, RNG streams of every worker came back
    assert resumed_counters == straight_counters
    for key, value in straight["actor"].items():
        assert torch.equal(value, resumed["actor"][key]), key
    # the optimizer moments too
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_checkpoints_are_written_atomically_and_the_last_k_kept(tmp_path: Path) -> None:
    with Scheme(CFG.scheme, CFG.components()) as scheme:
        for _ in range(5):
            for _ in range(8):
                scheme.learner.step()
            save_checkpoint(tmp_path, scheme.learner, CFG, run_id="abc", keep=3)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"ckpt-{s:012d}.pt" for s in (384, 512, 640)]  # 128 env steps per round
    state = load_checkpoint(tmp_path)  # a folder: the newest
    assert state["learner"]["counters"]["env_steps"] == 640 and state["run_id"] == "abc"
    # on-policy storage is used up at a round boundary: flagged, nothing of it saved
    assert [w["storage"] for w in state["learner"]["workers"]] == [None]


def test_a_bad_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    with Scheme(CFG.scheme, CFG.components()) as scheme:
        scheme.learner.step()
        good = save_checkpoint(tmp_path / "good", scheme.learner, CFG, run_id=None)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:])
    for bad in (truncated, flipped):
        with pytest.raises(CheckpointError, match="unreadable"):
            load_checkpoint(bad)
    code = tmp_path / "code.pt"
    torch.save({"format": "colonyrl-checkpoint/1", "payload": Path("x")}, code)  # needs a class: not weights-only
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(code)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(CheckpointError, match="not a colonyrl checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


@pytest.mark.ray
def test_resume_onto_other_worker_counts_keeps_the_mlflow_step_axis(ray_local, tmp_path: Path, mlflow_uri: str) -> None:
    run = RunConfig(total_env_steps=2048, eval_episodes=2, tracking_uri=mlflow_uri, progress=False, log_every_s=0.2,
                    output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt"))
    first = train(CFG.replace(run=run))
    saved = _newest(tmp_path / "ckpt")["learner"]
    scheme = SchemeConfig(num_grad_workers=2, num_col_workers=2, grad_worker_resources=Resources(num_cpus=0.25),
                          col_worker_resources=Resources(num_cpus=0.25), worker_timeout_s=60.0)
    # Resumed onto 2 GWorkers x 2 CWorkers with no steps left: the weights and the optimizer are the
    # saved ones (a resume from fresh weights would fail here), and so is the evaluated policy.
    same = train(CFG.replace(scheme=scheme, run=run.replace(resume=first.run_id)))
    assert same.counters == first.counters
    _assert_same_algo_state(saved["algo"], _newest(tmp_path / "ckpt")["learner"]["algo"])
    np.testing.assert_array_equal(same.evaluation.returns, first.evaluation.returns)
    # the same run continues with 2 GWorkers x 2 CWorkers on Ray, to 4096 env steps
    second = train(CFG.replace(scheme=scheme, run=run.replace(total_env_steps=4096, resume=first.run_id)))
    assert second.run_id == first.run_id
    assert second.counters["env_steps"] >= 4096 > first.counters["env_steps"] >= 2048
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    steps = [m.step for m in client.get_metric_history(first.run_id, "env_steps")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one continuous, increasing axis
    assert min(s for s in steps if s > first.counters["env_steps"]) > first.counters["env_steps"]
    assert read_run(mlflow_uri, first.run_id)["status"] == "FINISHED"


def _ray_processes(driver: int) -> list[psutil.Process]:
    """The Ray processes the run started (its GCS, raylet, workers, actors): the driver's
    descendants, not those of the Ray instances other tests run beside it."""
    out = []
    for p in psutil.Process(driver).children(recursive=True):
        try:
            text = " ".join([p.name()] + p.cmdline())
        except psutil.Error:
            continue
        if "raylet" in text or "gcs_server" in text or "ray::" in text or "default_worker.py" in text:
            out.append(p)
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_a_killed_run_and_no_processes(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "colonyrl.launch.cli", "train", "--preset", "ppo-cartpole-ray",
         "--total-env-steps", "10000000", "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt"),
         "--output-dir", str(tmp_path / "runs"), "--log-every-s", "0.5", "--scheme.object-store-mb", "200",
         "--checkpoint-every", "2000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    deadline = time.monotonic() + 180
    # training has started once the first periodic checkpoint exists (the store is left alone
    # meanwhile: two processes creating one sqlite schema at once would fail)
    while proc.poll() is None and time.monotonic() < deadline and not list((tmp_path / "ckpt").glob("*/ckpt-*.pt")):
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    started = _ray_processes(proc.pid)
    assert any("raylet" in " ".join(p.cmdline()) for p in started), "no raylet under the run: the check would be empty"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    state = load_checkpoint(run_dir)  # the newest: the one written on the way out
    assert state["learner"]["counters"]["env_steps"] > 2000
    assert read_run(uri, run_dir.name)["status"] == "KILLED"
    deadline = time.monotonic() + 30  # is_running: the same process (pid and start time), not a reused pid
    while any(p.is_running() for p in started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p.pid for p in started if p.is_running()], "Ray processes left behind"


def _run(tmp_path: Path, name: str, **run) -> RunConfig:
    return RunConfig(**{"eval_episodes": 3, "track": False, "progress": False, "eval_every": None,
                        "stop_at_return": None, "output_dir": str(tmp_path / name / "runs"),
                        "checkpoint_dir": str(tmp_path / name / "ckpt"), **run})


def _newest(folder: Path) -> dict:
    """The checkpoint with the most env steps in any run folder under ``folder``."""
    return load_checkpoint(max(folder.glob("*/ckpt-*.pt"), key=lambda p: p.name))


def _assert_same_algo_state(a: dict, b: dict) -> None:
    for key, value in a["actor"].items():
        assert torch.equal(value, b["actor"][key]), key
    assert a["optimizer"]["state"], "no optimizer state saved"
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
        assert torch.equal(x["step"], y["step"])


def test_train_ends_at_a_round_boundary_with_every_update_of_the_last_round(tmp_path: Path) -> None:
    """The default preset: 8 envs x 32 steps = 256 env steps a round, 12 epochs x 2 minibatches =
    24 updates a round. 512 env steps are 2 full rounds: 48 updates, not 24 + 1."""
    result = train(BASE.replace(run=_run(tmp_path, "a", total_env_steps=512)))
    assert result.counters["env_steps"] == 512 and result.counters["updates"] == 48
    state = _newest(tmp_path / "a" / "ckpt")
    assert state["learner"]["counters"]["updates"] == 48
    assert state["learner"]["workers"] is not None  # at a round boundary: every worker's state is in it


def test_train_512_then_resume_to_1024_is_bit_identical_to_1024_straight(tmp_path: Path) -> None:
    straight = train(BASE.replace(run=_run(tmp_path, "straight", total_env_steps=1024)))
    first = train(BASE.replace(run=_run(tmp_path, "split", total_env_steps=512)))
    resumed = train(BASE.replace(run=_run(tmp_path, "split", total_env_steps=1024,
                                          resume=str(next((tmp_path / "split" / "ckpt").iterdir())))))
    assert first.counters["env_steps"] == 512
    assert resumed.counters == straight.counters
    a = _newest(tmp_path / "straight" / "ckpt")["learner"]
    b = _newest(tmp_path / "split" / "ckpt")["learner"]
    assert a["counters"] == b["counters"] and a["totals"] == b["totals"]
    _assert_same_algo_state(a["algo"], b["algo"])
    assert resumed.evaluation.mean == straight.evaluation.mean
    np.testing.assert_array_equal(resumed.evaluation.returns, straight.evaluation.returns)


def test_final_evaluation_uses_its_own_seeds_not_the_periodic_ones(tmp_path: Path) -> None:
    """The periodic evaluation at 512 and the final one see the same weights (both at the round
    boundary): on the same seeds they would score the same episodes exactly."""
    result = train(BASE.replace(run=_run(tmp_path, "e", total_env_steps=512, eval_every=512, eval_episodes=10)))
    ((steps, periodic),) = result.evaluations
    assert steps == 512 == result.counters["env_steps"]
    assert result.evaluation.mean != periodic


def test_runtime_changes_survive_a_checkpoint_and_resume(tmp_path: Path) -> None:
    """A replaced test env, a replaced storage and a changed lr are part of the saved config."""
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.launch.train import _resolve_resume

    short_test_env = EnvConfig(id="CartPole-v1", num_envs=2, max_episode_steps=7)
    with Scheme(CFG.scheme, CFG.components()) as scheme:
        learner = scheme.learner
        for _ in range(8):
            learner.step()
        learner.update_algorithm_parameter("lr", 1e-4)
        learner.replace_component("test_env", short_test_env)
        learner.replace_component("storage", CFG.storage.replace(num_steps=8))
        path = save_checkpoint(tmp_path, learner, CFG, run_id=None)
    resumed, _ = _resolve_resume(CFG.replace(run=CFG.run.replace(resume=str(path))))
    assert resumed.test_env == short_test_env and resumed.components().evaluation_env() == short_test_env
    assert resumed.storage.num_steps == 8 and resumed.algo.lr == 1e-4


def test_the_adaptive_kl_coef_is_checkpointed_and_a_resume_is_bit_identical(tmp_path: Path) -> None:
    """ppo-kl-cartpole: beta changes after rounds (a runtime change, from the algorithm's round-end
    hook); the checkpoint's config and algorithm state hold the current beta, and 512 + resume to
    1024 equals 1024 straight, beta included."""
    kl = preset("ppo-kl-cartpole")
    straight = train(kl.replace(run=_run(tmp_path, "straight", total_env_steps=1024)))
    train(kl.replace(run=_run(tmp_path, "split", total_env_steps=512)))
    half = _newest(tmp_path / "split" / "ckpt")
    assert half["config"]["algo"]["kl_coef"] == half["learner"]["algo"]["config"]["kl_coef"] != kl.algo.kl_coef
    resumed = train(kl.replace(run=_run(tmp_path, "split", total_env_steps=1024,
                                        resume=str(next((tmp_path / "split" / "ckpt").iterdir())))))
    assert resumed.counters == straight.counters
    a = _newest(tmp_path / "straight" / "ckpt")
    b = _newest(tmp_path / "split" / "ckpt")
    assert a["config"]["algo"] == b["config"]["algo"] and a["learner"]["algo"]["config"] == b["learner"]["algo"]["config"]
    assert a["config"]["algo"]["kl_coef"] == a["learner"]["algo"]["config"]["kl_coef"]
    _assert_same_algo_state(a["learner"]["algo"], b["learner"]["algo"])
    np.testing.assert_array_equal(resumed.evaluation.returns, straight.evaluation.returns)
