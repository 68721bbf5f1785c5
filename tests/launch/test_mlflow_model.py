"""The trained policy as an MLflow model (issue 12, item 1), against real MLflow stores: a sqlite
store in a temporary folder, and a real ``mlflow server`` process for the HTTP paths.

One tiny PPO CartPole run with observation normalization on is shared by the module: its model,
loaded with ``mlflow.pyfunc.load_model("runs:/<id>/model")``, gives the in-framework deterministic
policy's actions on the same raw observations; ``--register-model`` makes versions 1 and 2;
``colonyrl evaluate`` takes a run id, ``runs:/`` and ``models:/`` (subprocess smoke tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.config import ConfigError
from colonyrl.envs.normalization import NormalizeConfig
from colonyrl.launch import cli
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.evaluate import ModelFileError, NormalizedPolicy, load_model
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (--import-mode=importlib)
from test_tracking_outage import MlflowServer  # noqa: E402
from tracking_helpers import read_run  # noqa: E402

NAME = "cartpole-policy"


def _config(tmp: Path, uri: str, register: str | None = NAME, seed: int = 0) -> TrainConfig:
    """One collection round (8 envs x 32 steps), one epoch: the actions need not be good, only equal."""
    cfg = preset("ppo-cartpole")
    return cfg.replace(
        env=cfg.env.replace(normalize=NormalizeConfig(obs=True)),
        algo=cfg.algo.replace(num_epochs=1),
        run=RunConfig(total_env_steps=256, seed=seed, eval_episodes=1, tracking_uri=uri, progress=False, output_dir=str(tmp / "runs"),
                      checkpoint_dir=str(tmp / "checkpoints"), checkpoint_every_min=None, register_model=register))


@pytest.fixture(scope="module")
def http_server(tmp_path_factory) -> Iterator[tuple[MlflowServer, threading.Thread]]:
    """A real ``mlflow server`` (sqlite store, served artifacts), starting in a thread while the
    module's run trains: its start-up (~8 s) overlaps the training on the other core."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    yield server, starting
    starting.join()
    server.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, http_server) -> dict:
    tmp = tmp_path_factory.mktemp("mlflow-model")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = train(_config(tmp, uri))
    return {"tmp": tmp, "uri": uri, "run_id": result.run_id, "model_dir": result.model_dir}


def _observations(n: int = 2000) -> np.ndarray:
    """Real CartPole observations from random play, and wider ones (clipped by the normalizer)."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(1)
    obs, rows = env.reset(seed=1)[0], []
    while len(rows) < n // 2:
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            obs = env.reset()[0]
    wide = rng.normal(0.0, 3.0, size=(n - len(rows), 4))
    return np.concatenate([np.asarray(rows), wide]).astype(np.float32)


def test_logged_model_acts_as_the_framework_policy_with_the_normalizer_inside(trained: dict) -> None:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(trained["uri"])  # runs:/ URIs resolve against the global tracking URI
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")
    finally:
        mlflow.set_tracking_uri(None)
    policy, _, _ = load_model(trained["model_dir"])
    assert isinstance(policy, NormalizedPolicy)
    assert np.abs(policy.normalizer.rms.mean).max() > 1e-3  # statistics were learned, not the identity
    obs = _observations()
    expected = policy.act(obs, deterministic=True).env_action
    predicted = model.predict(obs)
    assert predicted.dtype == np.int64 and predicted.shape == (len(obs),)
    np.testing.assert_array_equal(predicted, expected)
    np.testing.assert_array_equal(model.predict(pd.DataFrame(obs)), expected)
    # the normalizer matters on these observations: the policy without it acts otherwise
    assert (policy.policy.act(obs, deterministic=True).env_action != expected).any()
    (inputs,), (outputs,) = model.metadata.signature.inputs.inputs, model.metadata.signature.outputs.inputs
    assert (inputs.type, inputs.shape, outputs.type, outputs.shape) == (np.float32, (-1, 4), np.int64, (-1,))

def test_run_artifacts_hold_the_mlflow_model_beside_the_loose_files(trained: dict) -> None:
    artifacts = set(read_run(trained["uri"], trained["run_id"])["artifacts"])
    assert {"model/MLmodel", "model/model.pt", "model/policy.pt2", "model/artifacts/policy.pt2",
            "model/requirements.txt", "model/input_example.json"} <= artifacts
    program = torch.export.load(trained["model_dir"] / "model" / "artifacts" / "policy.pt2").module()
    assert program(torch.zeros(3, 4)).shape == (3,)  # the model folder is also in the run folder


def test_register_model_creates_version_1_then_2_on_a_second_run(trained: dict, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trained["uri"])
    first = client.get_model_version(NAME, "1")
    assert first.run_id == trained["run_id"] and first.status == "READY"
    second = train(_config(tmp_path, trained["uri"], seed=1))
    versions = {int(v.version): v.run_id for v in client.search_model_versions(f"name = '{NAME}'")}
    assert versions == {1: trained["run_id"], 2: second.run_id}
    obs = _observations(500)
    act = {ref: load_model(ref, trained["uri"])[0].act(obs, deterministic=True).env_action
           for ref in (f"models:/{NAME}/1", f"models:/{NAME}/2")}
    np.testing.assert_array_equal(act[f"models:/{NAME}/2"],
                                  load_model(second.model_dir)[0].act(obs, deterministic=True).env_action)
    assert (act[f"models:/{NAME}/1"] != act[f"models:/{NAME}/2"]).any()  # another seed: other weights

@pytest.mark.parametrize("name", ["", " ", "a/b", "a:b", ".."])
def test_register_model_names_mlflow_rejects_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="RunConfig.register_model"):
        RunConfig(register_model=name)
    with pytest.raises(ConfigError, match="track is False"):
        RunConfig(register_model="ok", track=False)


def test_evaluate_command_takes_a_registered_model(trained: dict, tmp_path: Path) -> None:
    """The subprocess smoke test: ``colonyrl evaluate models:/<name>/<version> --tracking-uri URI``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "colonyrl.launch.cli", "evaluate", f"models:/{NAME}/1", "--episodes",
                          "2", "--tracking-uri", trained["uri"]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "CartPole-v1: mean return" in out.stdout and "over 2 episodes" in out.stdout
    assert "(model trained for 256 env steps)" in out.stdout


@pytest.mark.parametrize("form", ["run id", "runs:/"])
def test_evaluate_command_takes_a_run_id_and_a_runs_uri(trained: dict, form: str, capsys) -> None:
    ref = trained["run_id"] if form == "run id" else f"runs:/{trained['run_id']}/model"
    assert cli.main(["evaluate", ref, "--episodes", "2", "--tracking-uri", trained["uri"]]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1: mean return" in out and "(model trained for 256 env steps)" in out
    unknown = "f" * 32
    assert cli.main(["evaluate", unknown, "--tracking-uri", trained["uri"]]) == 2
    assert f"no colonyrl model at runs:/{unknown}/model" in capsys.readouterr().err


def test_unknown_run_ids_and_versions_are_clear_model_file_errors(trained: dict) -> None:
    with pytest.raises(ModelFileError, match="no colonyrl model at runs:/0{32}/model"):
        load_model("0" * 32, trained["uri"])
    with pytest.raises(ModelFileError, match=f"no colonyrl model at models:/{NAME}/99"):
        load_model(f"models:/{NAME}/99", trained["uri"])
    with pytest.raises(ModelFileError, match="an MLflow run id, runs:/<run id>/model or models:/"):
        load_model("no-such-folder", trained["uri"])


def test_model_logged_and_loaded_over_http_through_a_real_mlflow_server(http_server, tmp_path: Path) -> None:
    import mlflow

    server, starting = http_server
    starting.join()
    assert server.running
    result = train(_config(tmp_path, server.uri))
    mlflow.set_tracking_uri(server.uri)  # runs:/ and models:/ resolve against the global URIs
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    finally:
        mlflow.set_tracking_uri(None)
    obs = _observations(200)
    policy, _, _ = load_model(f"runs:/{result.run_id}/model", server.uri)
    np.testing.assert_array_equal(model.predict(obs), policy.act(obs, deterministic=True).env_action)
    assert mlflow.MlflowClient(server.uri).get_model_version(NAME, "1").run_id == result.run_id
    assert "model/MLmodel" in read_run(server.uri, result.run_id)["artifacts"]
