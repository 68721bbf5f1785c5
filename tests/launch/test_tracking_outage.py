"""Tracking-server outages, against a real ``mlflow server`` process that the tests stop and restart.

Issue 4, item 7: with the tracking server stopped mid-run, training completes and the metrics arrive
afterwards, either flushed when the server returns or imported from the fallback folder.

One server per module (it takes ~8 s to start on 2 cores); each test stops and restarts it on the
same port and store, the way an operator restarts a tracking server, and leaves it running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from colonyrl.launch import cli
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.tracking import (
    FALLBACK_FOLDER,
    JOURNAL_FILE,
    FallbackImportError,
    Tracker,
    TrackingOutageWarning,
    TrackingUnavailableError,
    import_fallback,
)
from colonyrl.launch.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite store and served artifacts under ``root``, so
    artifact uploads go through the server too and fail while it is down. stop() ends the whole
    process group (the CLI starts uvicorn as a child); start() again reuses port and store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 90.0) -> float:
        """Start and wait until /health answers; returns the seconds that took."""
        assert not self.running
        t0 = time.monotonic()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM the server's process group and wait until the port refuses connections."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _port_open(self.port):
            if time.monotonic() > deadline:  # a child that ignored SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        self.proc = None


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(mlflow_server: MlflowServer) -> MlflowServer:
    """The module's server, running (a failed test may have left it stopped)."""
    if not mlflow_server.running:
        mlflow_server.start()
    return mlflow_server


def _outage_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TrackingOutageWarning)]


def _history(uri: str, run_id: str, key: str) -> list:
    import mlflow

    return sorted(mlflow.MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))


def _logged_steps(console_output: str) -> list[int]:
    """The env steps of the rows the console printed: one per logged metric row (``_log``)."""
    lines = console_output.splitlines()
    return [int(row.split()[0].replace(",", "")) for head, row in zip(lines, lines[1:], strict=False)
            if head.split()[:1] == ["steps"]]


def _stop_when_run_has_metrics(server: MlflowServer, experiment: str, restart: bool, events: dict) -> None:
    """Stop the server once the run's first metrics arrived (so the outage is mid-run), then
    restart it at once if ``restart``. Runs in a thread beside the training loop."""
    import mlflow

    client = mlflow.MlflowClient(server.uri)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and runs[0].data.metrics:
            break
        time.sleep(0.3)
    else:
        events["error"] = "the run logged no metrics within 60 s"
        return
    events["stopped_ms"] = int(time.time() * 1000)
    server.stop()
    events["stop_done"] = time.monotonic()
    if restart:
        events["restart_s"] = server.start()
        events["restarted_ms"] = int(time.time() * 1000)
        events["restarted"] = time.monotonic()


def _config(server: MlflowServer, tmp_path: Path, experiment: str, steps: int) -> TrainConfig:
    return TrainConfig(run=RunConfig(
        total_env_steps=steps, eval_episodes=2, tracking_uri=server.uri, experiment=experiment,
        log_every_s=0.25, progress=True, output_dir=str(tmp_path / "runs"),
        checkpoint_dir=str(tmp_path / "checkpoints"), checkpoint_every_min=None,
    ))


@pytest.mark.slow
def test_tracker_buffers_through_outage_and_flushes_in_order_when_server_returns(server, tmp_path):
    t = Tracker(server.uri, "outage-tracker", fallback_dir=tmp_path / "runs", max_buffered=50,
                retry_min_s=0.2, retry_max_s=1.0)
    run_id = t.start({"lr": 0.1})
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\1" * 1000)
    step = 0

    def log_step() -> float:
        nonlocal step
        t.log_metrics({"loss": float(step), "fps": 100.0}, step=step)
        t0 = time.perf_counter()
        t.flush()
        step += 1
        return time.perf_counter() - t0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            log_step()
        assert t.pending == 0
        server.stop()
        blocked = [log_step() for _ in range(100)]  # 200 points, journaled
        t.log_text("written during the outage", "notes/outage.txt")
        t.log_dict({"algo": {"lr": 0.1}}, "config/config.json")
        t.log_artifact(weights, "model")
        assert t.server_down and t.pending_artifacts == 3 and t.pending == 200
        assert (t.fallback_path / JOURNAL_FILE).is_file()
        server.start()
        deadline = time.monotonic() + 30
        while t.server_down and time.monotonic() < deadline:  # training goes on; a retry succeeds
            log_step()
            time.sleep(0.05)
        assert not t.server_down, "the tracker did not notice the server was back"
        assert t.pending == 0 and t.pending_artifacts == 0
        assert not t.fallback_path.exists()  # the journal was replayed and removed
        for _ in range(5):
            log_step()
        t.end()

    msgs = _outage_warnings(caught)
    assert len(msgs) == 1 and server.uri in msgs[0] and "unreachable" in msgs[0]
    print(f"flush while the server is down: max {max(blocked) * 1e3:.1f} ms, mean "
          f"{sum(blocked) / len(blocked) * 1e3:.2f} ms over {len(blocked)} flushes")
    assert max(blocked) < 2.0  # a dead server does not stall the loop (a failed retry: ~3 ms)
    assert t.fallback_written is None and t.outages == 1
    got = read_run(server.uri, run_id)
    assert got["status"] == "FINISHED"
    assert got["metrics"] == {"fps": step, "loss": step}
    loss = _history(server.uri, run_id, "loss")
    assert [m.step for m in loss] == list(range(step)) and [m.value for m in loss] == list(map(float, range(step)))
    assert got["artifacts"] == ["config/config.json", "model/weights.bin", "notes/outage.txt"]
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config/config.json",
                                               dst_path=str(tmp_path / "dl"), tracking_uri=server.uri)
    assert json.loads(Path(path).read_text()) == {"algo": {"lr": 0.1}}  # as log_dict writes it


@pytest.mark.slow
def test_training_goes_on_through_outage_and_metrics_arrive_after_restart(server, tmp_path, capsys, monkeypatch):
    # MLflow's system-metrics thread samples and posts all through (RunConfig.system_metrics); the
    # outage stops it, and neither it nor the run's end hangs on the dead server. Whether a sample
    # reached the server before the outage depends on the machine's load, so it is not asserted
    # here (tests/launch/test_tracking.py checks the samples arrive without an outage).
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    experiment = "outage-train"
    events: dict = {}
    helper = threading.Thread(target=_stop_when_run_has_metrics, args=(server, experiment, True, events))
    helper.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_config(server, tmp_path, experiment, steps=40_000))
    finished = time.monotonic()
    helper.join(timeout=120)
    assert "error" not in events, events
    assert events.get("restarted", finished + 1) < finished, (
        f"the server restart ({events.get('restart_s')} s) outlasted training: the test needs a longer run")

    assert result.counters["env_steps"] >= 40_000  # training completed
    msgs = _outage_warnings(caught)
    assert len(msgs) == 1 and server.uri in msgs[0], msgs
    got = read_run(server.uri, result.run_id)
    assert got["status"] == "FINISHED"
    assert {"config.json", "model/model.pt", "model/policy.pt2"} <= set(got["artifacts"])
    # every metric row the loop logged is there, at its env step, the ones logged while the
    # server was down included
    logged = _logged_steps(capsys.readouterr().out)
    env_steps = _history(server.uri, result.run_id, "env_steps")
    assert [m.step for m in env_steps] == logged and [m.value for m in env_steps] == list(map(float, logged))
    assert any(events["stopped_ms"] < m.timestamp < events["restarted_ms"] for m in env_steps)
    assert got["metrics"]["fps"] == got["metrics"]["updates"] == len(logged)
    assert got["metrics"]["final_eval_return"] == 1
    assert not (tmp_path / "runs" / result.run_id / FALLBACK_FOLDER).exists()


@pytest.mark.slow
def test_server_down_until_the_end_leaves_a_fallback_that_imports(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # its thread is mid-sample at the end
    experiment = "outage-fallback"
    events: dict = {}
    helper = threading.Thread(target=_stop_when_run_has_metrics, args=(server, experiment, False, events))
    helper.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_config(server, tmp_path, experiment, steps=12_000))
    ended = time.monotonic()
    helper.join(timeout=60)
    assert "error" not in events, events
    assert not server.running
    assert ended - events["stop_done"] < 100  # the end did not wait out MLflow's retries (over 2 minutes)
    logged = _logged_steps(capsys.readouterr().out)

    run_dir = tmp_path / "runs" / result.run_id
    folder = run_dir / FALLBACK_FOLDER
    msgs = _outage_warnings(caught)
    assert len(msgs) == 2, msgs
    assert "unreachable" in msgs[0] and f"colonyrl tracking-import {folder}" in msgs[1]
    records = [json.loads(line) for line in (folder / JOURNAL_FILE).read_text().splitlines()]
    head, meta = records[0], records[-1]
    assert head["kind"] == "run" and head["run_id"] == result.run_id and head["tracking_uri"] == server.uri
    assert meta["kind"] == "end" and meta["status"] == "FINISHED"
    files = {(r["artifact_path"], Path(r["local"]).name): r for r in records if r["kind"] == "file"}  # copies
    assert {("model", "model.pt"), ("model", "policy.pt2"), (None, "topology.csv"), (None, "topology.png")} <= set(files)
    assert (folder / files["model", "model.pt"]["local"]).read_bytes() == (run_dir / "model.pt").read_bytes()

    server.start()
    assert read_run(server.uri, result.run_id)["status"] == "RUNNING"
    assert cli.main(["tracking-import", str(run_dir)]) == 0  # the run folder finds its fallback
    out = capsys.readouterr().out
    artifacts = sum(r["kind"] in ("file", "text") for r in records)
    assert re.search(rf"imported [\d,]+ metric points, {artifacts} artifact files and status FINISHED into MLflow "
                     rf"run {result.run_id}", out), out

    got = read_run(server.uri, result.run_id)
    assert got["status"] == "FINISHED"
    assert {"config.json", "model/model.pt", "model/policy.pt2", "topology.csv", "topology.png"} <= set(got["artifacts"])
    env_steps = _history(server.uri, result.run_id, "env_steps")
    assert [m.step for m in env_steps] == logged  # those sent before the outage and the imported ones
    assert got["metrics"]["final_eval_return"] == 1 and got["metrics"]["wall_time_s"] == 1
    import mlflow

    assert mlflow.MlflowClient(server.uri).get_run(result.run_id).info.end_time == meta["end_time"]
    # a second import would duplicate nothing: refused unless forced
    with pytest.raises(FallbackImportError, match="already imported"):
        import_fallback(folder)
    assert cli.main(["tracking-import", str(folder)]) == 2


def test_unreachable_server_at_start_fails_fast_before_training(tmp_path, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailableError, match=re.escape(uri)):
        Tracker(uri, fallback_dir=tmp_path).start({"a": 1})
    assert time.perf_counter() - t0 < 10  # not MLflow's ~4 minutes of retries
    code = cli.main(["train", "--tracking-uri", uri, "--total-env-steps", "64", "--no-progress",
                     "--output-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "--no-track" in err
    assert not (tmp_path / "ck").exists() and not (tmp_path / "runs").exists()  # no training started


def test_import_rejects_a_folder_that_is_no_fallback(tmp_path, capsys):
    with pytest.raises(FallbackImportError, match="not an MLflow fallback folder"):
        import_fallback(tmp_path)
    assert cli.main(["tracking-import", str(tmp_path)]) == 2
    assert "not an MLflow fallback folder" in capsys.readouterr().err
