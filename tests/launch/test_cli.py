"""Subprocess smoke tests of the `colonyrl` command line and of every launch script."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from colonyrl.launch.presets import preset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _colonyrl(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "colonyrl.launch.cli", *args], cwd, timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One short `colonyrl train` run into a temporary MLflow store, shared by the tests below."""
    work = tmp_path_factory.mktemp("train")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    out = _colonyrl("train", "--total-env-steps", "3000", "--tracking-uri", uri, "--output-dir",
                    str(work / "runs"), "--log-every-s", "0.2", "--eval-episodes", "3", cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    run_dirs = list((work / "runs").iterdir())
    assert len(run_dirs) == 1
    return {"work": work, "uri": uri, "out": out.stdout, "model_dir": run_dirs[0], "run_id": run_dirs[0].name}


def test_train_prints_progress_table_and_final_evaluation(trained: dict) -> None:
    out = trained["out"]
    assert "in-process" in out and "CartPole-v1" in out
    assert "return" in out and "fps" in out  # the periodic metric table
    assert "final evaluation: mean return" in out and "over 3 episodes" in out


def test_train_records_config_metrics_and_model_in_mlflow(trained: dict) -> None:
    run = read_run(trained["uri"], trained["run_id"])
    assert run["status"] == "FINISHED"
    params = run["params"]
    assert params["algo.lr"] == str(preset("ppo-cartpole").algo.lr) and params["env.id"] == "CartPole-v1"
    assert params["scheme.num_grad_workers"] == "1" and params["run.total_env_steps"] == "3000"
    for key in ("episode_return", "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl",
                "clipfrac", "explained_variance", "grad_norm", "fps", "policy_lag", "time_share_collection",
                "time_share_gradients", "time_share_update", "bytes_sent", "compression_ratio",
                "final_eval_return"):
        assert run["metrics"].get(key, 0) >= 1, key
    assert {"config.json", "model/model.pt", "model/policy.pt2"} <= set(run["artifacts"])


def test_saved_model_loads_in_plain_torch(trained: dict) -> None:
    state = torch.load(trained["model_dir"] / "model.pt", weights_only=True)
    assert state["format"] == "colonyrl-model/1" and state["counters"]["env_steps"] >= 3000
    policy = torch.export.load(trained["model_dir"] / "policy.pt2").module()
    actions = policy(torch.zeros(5, 4))
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1}


def test_evaluate_command_reports_mean_and_std(trained: dict) -> None:
    out = _colonyrl("evaluate", str(trained["model_dir"]), "--episodes", "4", cwd=trained["work"])
    assert out.returncode == 0, out.stderr
    assert "CartPole-v1: mean return" in out.stdout and "over 4 episodes" in out.stdout


def test_evaluate_rejects_a_corrupted_model_clearly(tmp_path: Path, trained: dict) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes((trained["model_dir"] / "model.pt").read_bytes()[:500])
    out = _colonyrl("evaluate", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a readable colonyrl model" in out.stderr


def test_invalid_value_is_rejected_naming_the_field_before_any_worker_starts(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = _colonyrl("train", "--preset", "ppo-cartpole-ray", "--algo.clip-range", "-0.1", cwd=tmp_path)
    assert out.returncode == 2
    assert "PPOConfig.clip_range=-0.1 is invalid: allowed a number >= 0" in out.stderr
    assert "Ray" not in out.stderr and not (tmp_path / "mlflow.db").exists()
    assert time.perf_counter() - start < 60
    out = _colonyrl("train", "--env.id", "CartPole-v9", cwd=tmp_path)
    assert out.returncode == 2 and "EnvConfig.id='CartPole-v9'" in out.stderr and "CartPole-v1" in out.stderr
    out = _colonyrl("train", "--preset", "nope", cwd=tmp_path)
    assert out.returncode == 2 and "preset='nope'" in out.stderr and "ppo-cartpole" in out.stderr
    out = _colonyrl("train", "algo:sac", "storage:rollout", cwd=tmp_path)  # SAC learns from a replay memory
    assert out.returncode == 2 and "TrainConfig.storage" in out.stderr and "ReplayConfig" in out.stderr


def test_an_algorithm_is_chosen_by_name_and_its_storage_follows(tmp_path: Path) -> None:
    out = _colonyrl("train", "algo:dqn", "--algo.learning-starts", "64", "--storage.num-steps", "32",
                    "--total-env-steps", "256", "--eval-episodes", "2", "--no-track", "--output-dir", str(tmp_path / "runs"),
                    "--checkpoint-dir", str(tmp_path / "ckpt"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DQN on CartPole-v1" in out.stdout and "final evaluation: mean return" in out.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = torch.load(run_dir / "model.pt", weights_only=True)["config"]
    assert "epsilon" in config["algo"] and "memory_size" in config["storage"]


def test_presets_and_help_list_the_generated_flags(tmp_path: Path) -> None:
    out = _colonyrl("presets", cwd=tmp_path)
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert set(lines) == {"ppo-cartpole", "ppo-cartpole-ray", "ppo-pendulum", "sac-pendulum", "sac-pendulum-ray",
                          "td3-pendulum", "ddpg-pendulum", "dqn-cartpole", "pg-cartpole", "a2c-cartpole", "ppo-kl-cartpole",
                          "ppo-lstm-cartpole-novel", "impala-cartpole-ray", "appo-cartpole-ray", "dqn-her-bitflip",
                          "ppo-atari-pong", "dqn-atari-pong", "ppo-halfcheetah", "ppo-halfcheetah-fast",
                          "sac-halfcheetah", "a3c-cartpole-ray", "ddppo-cartpole-ray", "apex-dqn-cartpole-ray"}
    assert "(default)" in lines["ppo-cartpole"]
    for name, line in lines.items():  # each with its algorithm and env
        # the algorithm's name ends with the preset's first word ("recurrent-ppo" for "ppo-lstm-..."),
        # or, for a preset named after its scheme, with that scheme's algorithm (A3C runs A2C's loss)
        word = {"a3c": "a2c", "ddppo": "ppo", "apex": "dqn"}.get(name.split("-")[0], name.split("-")[0])
        assert line.split()[1 + ("(default)" in line)].split("-")[-1] == word, line
    out = _colonyrl("train", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for flag in ("--algo.lr", "--scheme.num-grad-workers", "--env.num-envs", "--tracking-uri", "--total-env-steps"):
        assert flag in out.stdout, flag


@pytest.mark.parametrize(
    ("script", "extra"),
    [
        pytest.param("cartpole_inprocess", [], id="cartpole_inprocess"),
        pytest.param("pendulum", ["--storage.num-steps", "128"], id="pendulum"),
        pytest.param("cartpole_ray", ["--scheme.object-store-mb", "200"], id="cartpole_ray",
                     marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("sac_pendulum", ["--algo.learning-starts", "900"], id="sac_pendulum"),
        pytest.param("td3_pendulum", ["--algo.learning-starts", "900"], id="td3_pendulum"),
        pytest.param("ddpg_pendulum", ["--algo.learning-starts", "900"], id="ddpg_pendulum"),
        pytest.param("dqn_cartpole", ["--algo.learning-starts", "900", "--storage.num-steps", "100"], id="dqn_cartpole"),
        pytest.param("sac_pendulum_ray", ["--algo.learning-starts", "900", "--scheme.object-store-mb", "200"],
                     id="sac_pendulum_ray", marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("pg_cartpole", [], id="pg_cartpole"),
        pytest.param("a2c_cartpole", [], id="a2c_cartpole"),
        pytest.param("ppo_kl_cartpole", [], id="ppo_kl_cartpole"),
        pytest.param("impala_cartpole_ray", ["--scheme.object-store-mb", "200"], id="impala_cartpole_ray",
                     marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("appo_cartpole_ray", ["--scheme.object-store-mb", "200"], id="appo_cartpole_ray",
                     marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("a3c_cartpole_ray", ["--scheme.object-store-mb", "200"], id="a3c_cartpole_ray",
                     marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("ddppo_cartpole_ray", ["--scheme.object-store-mb", "200"], id="ddppo_cartpole_ray",
                     marks=(pytest.mark.ray, pytest.mark.own_ray)),
        pytest.param("apex_dqn_cartpole_ray", ["--algo.learning-starts", "900", "--scheme.object-store-mb", "200"],
                     id="apex_dqn_cartpole_ray", marks=(pytest.mark.ray, pytest.mark.own_ray)),
    ],
)
def test_launch_script_runs_end_to_end(script: str, extra: list[str], tmp_path: Path, mlflow_uri: str) -> None:
    uri = mlflow_uri
    out = _run([sys.executable, "-m", f"colonyrl.launch.scripts.{script}", "--total-env-steps", "1000",
                "--eval-episodes", "2", "--tracking-uri", uri, "--output-dir", str(tmp_path / "runs"), *extra],
               tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "final evaluation: mean return" in out.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    returns = read_run(uri, run_dir.name)["metrics"]
    assert returns.get("final_eval_return", 0) == 1
    assert np.isfinite(torch.load(run_dir / "model.pt", weights_only=True)["counters"]["env_steps"])
