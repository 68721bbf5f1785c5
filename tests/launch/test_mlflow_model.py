"""The trained policy as an MLflow model (issue 12, item 1), against real MLflow stores: a sqlite
store in a temporary folder, and a real ``mlflow server`` process for the HTTP paths.

One tiny PPO CartPole run with observation normalization on is shared by the module: its model,
loaded with ``mlflow.pyfunc.load_model("runs:/<id>/model")``, gives the in-framework deterministic
policy's actions on the same raw observations; ``--register-model`` makes versions 1 and 2;
``colonyrl evaluate`` takes a run id, ``runs:/`` and ``models:/`` (subprocess smoke tests);
``mlflow models serve`` answers with the same actions.

``--save-best-model``: a second tiny run in the same store (3 rounds of 256 env steps, an
evaluation after each) is resumed from its 512-step checkpoint onto the same budget. The resumed
run evaluates the same policies again (a resume is bit-identical, tests/launch/test_checkpoint.py),
so none beats the kept best strictly and the best folder must not be written again; a resumed run
that forgot the best so far would replace it at its first evaluation.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
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
from colonyrl.launch.evaluate import ModelFileError, NormalizedPolicy, evaluate, load_model
from colonyrl.launch.mlflow_model import BEST_FOLDER, BestModel, read_best
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (--import-mode=importlib)
from test_tracking_outage import MlflowServer  # noqa: E402
from tracking_helpers import read_run  # noqa: E402

NAME = "cartpole-policy"
# One pytest-xdist worker for the module (.ci/run: --dist loadgroup), so its trained run and its
# server are set up once, not once per worker its tests land on.
pytestmark = pytest.mark.xdist_group("mlflow-model")


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
    # no --save-best-model (the default): no best folder, no best_model artifact
    assert not (trained["model_dir"] / "best").exists() and not [a for a in artifacts if a.startswith("best_model")]


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_framework_policys_actions(trained: dict, tmp_path: Path) -> None:
    """``mlflow models serve -m runs:/<id>/model --env-manager local`` (MLflow's scoring server, uvicorn,
    in this environment: its ``bin/`` on PATH) answers ``/invocations`` with the deterministic actions."""
    port, bin_dir = _free_port(), Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the server
        server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"runs:/{trained['run_id']}/model",
                                   "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"],
                                  env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60.0
        while True:
            assert server.poll() is None, f"mlflow models serve exited ({server.returncode}):\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no /ping answer within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        obs = _observations(300)
        policy, _, _ = load_model(trained["model_dir"])
        expected = policy.act(obs, deterministic=True).env_action
        url = f"http://127.0.0.1:{port}/invocations"
        # the tensor signature's input (float32 values survive JSON exactly), and one DataFrame column per dim
        served = _post(url, {"inputs": obs.tolist()})["predictions"]
        np.testing.assert_array_equal(np.asarray(served), expected)
        split = {"columns": list(range(obs.shape[1])), "data": obs.tolist()}
        np.testing.assert_array_equal(np.asarray(_post(url, {"dataframe_split": split})["predictions"]), expected)
        assert len(set(expected.tolist())) == 2  # both actions occur: an answer of constants would fail
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the CLI and the uvicorn it started, one process group
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# --- --save-best-model --------------------------------------------------------------------------------


def _best_config(tmp: Path, uri: str, **run: object) -> TrainConfig:
    """Seed 4 and 2 episodes: evaluations that rise, then fall (the best is not the final model here)."""
    cfg = preset("ppo-cartpole")
    settings = dict(total_env_steps=768, seed=4, eval_every=256, eval_episodes=2, tracking_uri=uri, progress=False,
                    system_metrics=False, output_dir=str(tmp / "runs"), checkpoint_dir=str(tmp / "checkpoints"),
                    checkpoint_every=256, checkpoint_every_min=None, save_best_model=True)
    return cfg.replace(algo=cfg.algo.replace(num_epochs=1), run=RunConfig(**{**settings, **run}))


#: The registered model of the --save-best-model run: its final model, then its best (alias "best").
BEST_NAME = "colonyrl-best-test"


def _first_best(evaluations: list[tuple[int, float]]) -> tuple[int, float]:
    """(env steps, return) of the first evaluation with the highest return: later equal ones do not replace it."""
    return max(evaluations, key=lambda e: (e[1], -e[0]))


@pytest.fixture(scope="module")
def best_runs(tmp_path_factory, trained: dict) -> dict:
    """The --save-best-model run and its resume, in the module's store (its tables made once)."""
    tmp, uri = tmp_path_factory.mktemp("best-model"), trained["uri"]
    first = train(_best_config(tmp, uri, register_model=BEST_NAME))
    best = first.model_dir / BEST_FOLDER
    before = {"info": (best / "best.json").read_text(), "inode": (best / "model.pt").stat().st_ino,
              "artifacts": read_run(uri, first.run_id)["artifacts"]}
    checkpoint = tmp / "checkpoints" / first.run_id / "ckpt-000000000512.pt"
    resumed = train(_best_config(tmp, uri, resume=str(checkpoint)))
    return {"tmp": tmp, "uri": uri, "first": first, "resumed": resumed, "best": best, "before": before}


def test_best_folder_holds_the_model_of_the_first_highest_periodic_evaluation(best_runs: dict) -> None:
    first = best_runs["first"]
    steps, value = _first_best(first.evaluations)
    assert read_best(best_runs["best"]) == {"eval_return": value, "env_steps": steps}
    policy, cfg, counters = load_model(best_runs["best"])
    assert counters["env_steps"] == steps  # the model as it was then, not the final one
    # the periodic evaluation's episodes (same seeds, same worker index) again give its return
    again = evaluate(policy, cfg.components().evaluation_env(), cfg.run.eval_episodes, cfg.run.seed)
    assert again.mean == value
    assert sorted(p.name for p in best_runs["best"].iterdir()) == ["best.json", "best_model", "model.pt", "policy.pt2"]
    assert not list(best_runs["best"].parent.glob(".best*"))  # no temporary or old folder left behind


def test_run_logs_the_best_model_with_its_return_and_env_steps(best_runs: dict) -> None:
    import mlflow

    first, uri = best_runs["first"], best_runs["uri"]
    steps, value = _first_best(first.evaluations)
    assert {"best_model/MLmodel", "best_model/model.pt", "best_model/policy.pt2", "best_model/artifacts/policy.pt2",
            "model/MLmodel", "model/model.pt"} <= set(best_runs["before"]["artifacts"])
    run = mlflow.MlflowClient(uri).get_run(first.run_id)
    assert run.data.metrics["best_eval_return"] == value and run.data.metrics["best_env_steps"] == steps
    mlflow.set_tracking_uri(uri)  # runs:/ URIs resolve against the global tracking URI
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{first.run_id}/best_model")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.metadata == {"best_eval_return": value, "best_env_steps": steps}
    obs = np.random.default_rng(0).normal(0.0, 1.0, size=(500, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs), load_model(best_runs["best"])[0].act(obs, deterministic=True).env_action)


def test_evaluate_command_takes_the_best_model_uri(best_runs: dict, capsys) -> None:
    steps, _ = _first_best(best_runs["first"].evaluations)
    ref = f"runs:/{best_runs['first'].run_id}/best_model"
    assert cli.main(["evaluate", ref, "--episodes", "2", "--tracking-uri", best_runs["uri"]]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1: mean return" in out and f"(model trained for {steps:,} env steps)" in out


def test_register_model_with_save_best_model_registers_the_best_under_the_alias_best(best_runs: dict,
                                                                                      capsys) -> None:
    import mlflow

    first, uri = best_runs["first"], best_runs["uri"]
    client = mlflow.MlflowClient(uri)
    versions = sorted(client.search_model_versions(f"name='{BEST_NAME}'"), key=lambda v: int(v.version))
    assert [(str(v.version), v.run_id, v.source.rsplit("/", 1)[-1]) for v in versions] == [
        ("1", first.run_id, "model"), ("2", first.run_id, "best_model")]
    assert str(client.get_model_version_by_alias(BEST_NAME, "best").version) == "2"
    steps, value = _first_best(first.evaluations)
    assert steps < first.counters["env_steps"]  # the best is not the final model: the versions differ
    assert cli.main(["evaluate", f"models:/{BEST_NAME}@best", "--episodes", "2", "--tracking-uri", uri]) == 0
    assert f"(model trained for {steps:,} env steps)" in capsys.readouterr().out


def test_a_resumed_run_keeps_the_best_so_far_and_does_not_write_a_worse_one(best_runs: dict) -> None:
    first, resumed = best_runs["first"], best_runs["resumed"]
    assert resumed.run_id == first.run_id
    assert resumed.evaluations == [e for e in first.evaluations if e[0] > 512]  # the same policies again
    assert best_runs["before"]["info"] == (best_runs["best"] / "best.json").read_text()
    assert (best_runs["best"] / "model.pt").stat().st_ino == best_runs["before"]["inode"]  # never replaced
    steps, value = _first_best(first.evaluations)
    import mlflow

    metrics = mlflow.MlflowClient(best_runs["uri"]).get_run(first.run_id).data.metrics
    assert (metrics["best_eval_return"], metrics["best_env_steps"]) == (value, steps)


def test_no_periodic_evaluation_logs_no_best_model(best_runs: dict) -> None:
    result = train(_best_config(best_runs["tmp"], best_runs["uri"], total_env_steps=256, eval_every=None, checkpoint_every=None))
    assert not (result.model_dir / BEST_FOLDER).exists()
    artifacts = read_run(best_runs["uri"], result.run_id)["artifacts"]
    assert "model/MLmodel" in artifacts and not [a for a in artifacts if a.startswith("best_model")]


def _writer(tag: str, fail: bool = False):
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.pt").write_text(tag)
        if fail:
            raise OSError("disk full")
        (folder / "policy.pt2").write_text(tag)
    return write


def test_best_folder_is_replaced_whole_only_by_a_strictly_better_return(tmp_path: Path) -> None:
    best = BestModel(tmp_path, resume=False)
    assert best.offer(10.0, 256, _writer("a"))
    assert not best.offer(10.0, 512, _writer("b"))  # equal: the first one stays
    assert not best.offer(math.nan, 768, _writer("c"))
    with pytest.raises(OSError, match="disk full"):  # a crash mid-write leaves the previous best whole
        best.offer(20.0, 1024, _writer("d", fail=True))
    assert (tmp_path / "best" / "model.pt").read_text() == "a" and (tmp_path / "best" / "policy.pt2").exists()
    assert best.offer(30.0, 1280, _writer("e"))
    assert read_best(tmp_path / "best") == {"eval_return": 30.0, "env_steps": 1280}
    assert (tmp_path / "best" / "model.pt").read_text() == "e"
    assert json.loads((tmp_path / "best" / "best.json").read_text())["env_steps"] == 1280


def test_a_crash_between_the_two_renames_is_recovered_and_a_fresh_run_starts_empty(tmp_path: Path) -> None:
    BestModel(tmp_path, resume=False).offer(5.0, 256, _writer("a"))
    os.replace(tmp_path / "best", tmp_path / ".best.old")  # the old best moved aside, the new one not yet in
    kept = BestModel(tmp_path, resume=True)
    assert (kept.eval_return, kept.env_steps) == (5.0, 256)
    assert (tmp_path / "best" / "model.pt").read_text() == "a" and not (tmp_path / ".best.old").exists()
    assert not kept.offer(4.0, 512, _writer("b"))
    fresh = BestModel(tmp_path, resume=False)  # not a resume: a stale folder is no best of this run
    assert fresh.eval_return == -math.inf and not (tmp_path / "best").exists()
