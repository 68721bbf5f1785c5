"""Tracker on a real MLflow sqlite store.

Creating a sqlite store runs MLflow's migrations (~1.7 s), so these tests share
one store per module (``store``) instead of the function-scoped ``mlflow_uri`` fixture; every test
makes its own runs, so they do not depend on each other.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from colonyrl.launch import tracking
from colonyrl.launch.tracking import Tracker

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

EXPERIMENT = "colonyrl-tests"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """One migrated sqlite DB and artifact folder for this module."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = str(root / "artifacts")
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=artifacts)
    return {"uri": uri, "artifacts": artifacts}


def _tracker(store: dict[str, str], **kw) -> Tracker:
    return Tracker(tracking_uri=store["uri"], experiment=EXPERIMENT, **kw)


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    import mlflow

    return sorted(m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key))


def test_start_log_flush_end_read_back(store, tmp_path):
    t = _tracker(store, run_name="roundtrip")
    params = {"lr": 3e-4, "env": "CartPole-v1", "long": "x" * 7000, **{f"p{i}": i for i in range(150)}}
    run_id = t.start(params, tags={"kind": "test"})
    assert run_id == t.run_id and t.active
    assert t.artifact_uri.startswith(store["artifacts"])
    for step in range(1200):  # 2400 points: three log_batch requests
        t.log_metrics({"loss": 1.0 / (step + 1), "fps": np.float32(100.0)}, step=step)
    assert t.pending == 2400 and t.nonfinite_values == 0
    assert read_run(store["uri"], run_id)["metrics"] == {}  # buffered: nothing written yet
    t.flush()
    assert t.pending == 0
    t.log_dict({"algo": {"lr": 3e-4}}, "config/config.json")
    t.log_text("hello", "notes.txt")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    t.log_artifact(f, artifact_path="checkpoints")
    t.log_metrics({"loss": 0.0}, step=1200)
    t.end()  # flushes the last point
    assert not t.active

    got = read_run(store["uri"], run_id)
    assert got["status"] == "FINISHED"
    assert got["run_name"] == "roundtrip"
    assert got["tags"]["kind"] == "test"
    assert len(got["params"]) == 153
    assert got["params"]["lr"] == "0.0003" and got["params"]["p149"] == "149"
    assert got["params"]["long"] == "x" * 6000  # cut to MLflow's limit
    assert got["metrics"] == {"fps": 1200, "loss": 1201}
    assert _steps(store["uri"], run_id, "loss") == list(range(1201))
    assert got["artifacts"] == ["checkpoints/weights.bin", "config/config.json", "notes.txt"]
    assert (Path(t.artifact_uri) / "config" / "config.json").read_text().count("lr") == 1


def test_resume_by_run_id_appends(store):
    first = _tracker(store)
    run_id = first.start({"lr": 0.1, "seed": 1})
    for step in range(5):
        first.log_metrics({"loss": float(step)}, step=step)
    first.end()

    again = _tracker(store)
    with pytest.warns(UserWarning, match="lr"):
        assert again.start({"lr": 0.2, "seed": 1, "resumed_from": 5}, run_id=run_id) == run_id
    assert read_run(store["uri"], run_id)["status"] == "RUNNING"
    for step in range(5, 10):
        again.log_metrics({"loss": float(step)}, step=step)
    again.end()

    got = read_run(store["uri"], run_id)
    assert got["status"] == "FINISHED"
    assert got["params"] == {"lr": "0.1", "seed": "1", "resumed_from": "5"}  # params are write-once
    assert got["metrics"] == {"loss": 10}
    assert _steps(store["uri"], run_id, "loss") == list(range(10))


def test_keyboard_interrupt_gives_killed_and_error_gives_failed(store):
    with pytest.raises(KeyboardInterrupt), _tracker(store) as t:
        t.start({})
        t.log_metrics({"x": 1.0}, step=0)
        raise KeyboardInterrupt
    got = read_run(store["uri"], t.run_id)
    assert got["status"] == "KILLED" and got["metrics"] == {"x": 1}  # flushed on the way out

    with pytest.raises(ZeroDivisionError), _tracker(store) as t2:
        t2.start({})
        _ = 1 / 0
    assert read_run(store["uri"], t2.run_id)["status"] == "FAILED"

    with _tracker(store) as t3:
        t3.start({})
    assert read_run(store["uri"], t3.run_id)["status"] == "FINISHED"


def test_disabled_tracker_writes_nothing(tmp_path):
    t = Tracker(tracking_uri=f"sqlite:///{tmp_path / 'never.db'}", enabled=False)
    with t:
        assert t.start({"a": 1}) is None
        t.log_metrics({"x": 1.0}, step=0)
        t.flush()
        t.log_dict({"a": 1}, "a.json")
        t.log_text("t", "t.txt")
        t.log_artifact(tmp_path / "missing.txt")
    t.end()
    assert t.run_id is None and t.pending == 0
    assert list(tmp_path.iterdir()) == []


def test_mlflow_not_imported_until_needed():
    code = ("import sys, colonyrl.launch.tracking as tr\n"
            "t = tr.Tracker(enabled=False); t.start({}); t.log_metrics({'a': 1.0}, 0); t.end()\n"
            "assert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_env_var_tracking_uri(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)  # MLflow's default store would land here
    t = Tracker(experiment=EXPERIMENT)
    assert t.tracking_uri == store["uri"]
    run_id = t.start({"k": "v"})
    t.end()
    assert read_run(store["uri"], run_id)["params"] == {"k": "v"}
    assert not (tmp_path / "mlflow.db").exists()


def test_new_experiment_created_by_name(store, tmp_path):
    t = _tracker(store, artifact_location=str(tmp_path / "art"))
    t.experiment = "colonyrl-tests-other"
    run_id = t.start({})
    t.log_text("x", "x.txt")
    t.end()
    import mlflow

    exp = mlflow.MlflowClient(store["uri"]).get_experiment_by_name("colonyrl-tests-other")
    assert read_run(store["uri"], run_id)["experiment_id"] == exp.experiment_id == t.experiment_id
    assert (tmp_path / "art" / run_id / "artifacts" / "x.txt").is_file()
    # the same name again reuses it
    t2 = _tracker(store)
    t2.experiment = "colonyrl-tests-other"
    t2.start({})
    t2.end()
    assert t2.experiment_id == t.experiment_id


def test_misuse_is_reported_early(store):
    t = _tracker(store)
    with pytest.raises(RuntimeError, match="before start"):
        t.log_metrics({"x": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="start"):
        t.log_text("x", "x.txt")
    t.start({})
    try:
        with pytest.raises(ValueError, match="bad|name"):
            t.log_metrics({"bad*name": 1.0}, step=0)
        with pytest.raises(ValueError, match="normalized"):
            t.log_metrics({"a//b": 1.0}, step=0)
        with pytest.raises(RuntimeError, match="already"):
            t.start({})
        with pytest.raises(ValueError, match="status"):
            t.end("DONE")  # type: ignore[arg-type]
    finally:
        t.end()
    t.end()  # a second end does nothing


def test_limits_match_installed_mlflow():
    from mlflow.utils import validation

    assert tracking.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH
    assert tracking.MAX_PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert tracking.MAX_PARAM_VAL_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert tracking.MAX_TAG_VAL_LENGTH == validation.MAX_TAG_VAL_LENGTH
    for name in ("loss", "eval/return mean", "a.b-c:d_e"):
        assert bool(tracking._NAME_RE.match(name)) == bool(validation.validate_param_and_metric_name(name))


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    import mlflow

    return [(m.step, m.value) for m in sorted(mlflow.MlflowClient(uri).get_metric_history(run_id, key),
                                              key=lambda m: (m.step, m.timestamp))]


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Equal step by step, NaN equal to NaN."""
    return len(a) == len(b) and all(sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb)))
                                    for (sa, va), (sb, vb) in zip(a, b, strict=True))


# What a diverging run shows in MLflow: NaN as NaN (the SQL store keeps an is_nan flag), +-inf as
# +-float max (MLflow's SQL store cannot hold inf and stores +-1.7976931348623157e308 itself).
FMAX = 1.7976931348623157e308


def test_nonfinite_values_reach_mlflow_and_are_counted(store):
    t = _tracker(store)
    run_id = t.start({})
    t.log_metrics({"loss": 1.0, "x": 2.0}, step=0)
    t.log_metrics({"loss": math.nan, "x": math.inf}, step=1)
    t.log_metrics({"loss": np.float32("nan"), "x": -math.inf}, step=2)
    t.log_metrics({"loss": 0.5, "x": 3.0}, step=3)
    t.end()

    assert _same(_history(store["uri"], run_id, "loss"), [(0, 1.0), (1, math.nan), (2, math.nan), (3, 0.5)])
    assert _history(store["uri"], run_id, "x") == [(0, 2.0), (1, FMAX), (2, -FMAX), (3, 3.0)]
    # the running count, logged where it grows: a dashboard shows when and how often
    assert _history(store["uri"], run_id, tracking.NONFINITE_METRIC) == [(1, 2.0), (2, 4.0)]
    assert t.nonfinite_values == 4

    again = _tracker(store)  # a resumed run goes on counting from the run's last value
    again.start({}, run_id=run_id)
    again.log_metrics({"loss": math.nan}, step=4)
    again.end()
    assert _history(store["uri"], run_id, tracking.NONFINITE_METRIC)[-1] == (4, 5.0)
    with _tracker(store) as t3:  # the counter's name is the tracker's own
        t3.start({})
        with pytest.raises(ValueError, match="reserved"):
            t3.log_metrics({tracking.NONFINITE_METRIC: 1.0}, step=0)


def _strict_json(line: str) -> dict:
    """JSON as the standard has it: no NaN/Infinity tokens (jq, JavaScript and most readers reject them)."""
    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=reject)


def _records(journal: Path) -> list[dict]:
    return [_strict_json(line) for line in journal.read_text().splitlines()]


def test_nonfinite_values_survive_journal_replay_and_import(store, monkeypatch):
    import requests

    t = _tracker(store, fallback_dir=store["artifacts"] + "-fallback", max_buffered=2,
                 retry_min_s=1e-3, retry_max_s=1e-3)
    run_id = t.start({})
    client = t._connect()
    real = client.log_batch

    def down(*a, **kw):
        raise requests.ConnectionError("connection refused")

    values = [1.0, math.nan, math.inf, -math.inf, 2.0]
    with pytest.warns(tracking.TrackingOutageWarning):
        monkeypatch.setattr(client, "log_batch", down)
        for step, v in enumerate(values):  # journaled
            t.log_metrics({"loss": v}, step=step)
            t.flush()
        lines = _records(t.fallback_path / tracking.JOURNAL_FILE)
        assert [r["seq"] for r in lines] == list(range(len(lines)))
        loss = [r["value"] for r in lines if r["kind"] == "metric" and r["key"] == "loss"]
        assert loss == [1.0, "NaN", FMAX, -FMAX, 2.0]
        monkeypatch.setattr(client, "log_batch", real)  # back: the journal is replayed
        time.sleep(0.01)
        t.flush()
        assert not t.server_down and t.pending == 0 and not t.fallback_path.exists()
        monkeypatch.setattr(client, "log_batch", down)  # down again until the end: fallback
        for step, v in enumerate(values, start=len(values)):
            t.log_metrics({"loss": v}, step=step)
        t.end()
    assert t.fallback_written is not None
    lines = _records(t.fallback_written / tracking.JOURNAL_FILE)
    assert lines[0]["kind"] == "run" and lines[0]["run_id"] == run_id and lines[-1]["kind"] == "end"
    monkeypatch.setattr(client, "log_batch", real)
    tracking.import_fallback(t.fallback_written, tracking_uri=store["uri"])

    expected = [(s, v if math.isfinite(v) or math.isnan(v) else math.copysign(FMAX, v))
                for s, v in enumerate(values + values)]
    assert _same(_history(store["uri"], run_id, "loss"), expected)
    assert _history(store["uri"], run_id, tracking.NONFINITE_METRIC) == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                                         (6, 4.0), (7, 5.0), (8, 6.0)]


def test_journal_with_bare_nan_tokens_or_a_cut_last_line_imports_and_resumes(store, tmp_path, monkeypatch):
    """Python's json (or any tool) may write NaN and Infinity as bare tokens; a driver killed mid-write
    leaves a last line without its newline. An import interrupted by the server goes on where it
    stopped, duplicating nothing, and a finished one is not repeated."""
    import requests

    t = _tracker(store)
    run_id = t.start({})
    t.end()
    folder = tmp_path / "fb"
    folder.mkdir()
    head = {"seq": 0, "kind": "run", "run_id": run_id, "experiment_id": t.experiment_id,
            "tracking_uri": store["uri"]}
    points = [{"seq": 1 + i, "kind": "metric", "key": "a", "value": v, "timestamp": 1, "step": i}
              for i, v in enumerate([math.nan, math.inf] + [1.0] * 1500)]
    (folder / tracking.JOURNAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in [head, *points])
                                                + '{"seq": 1503, "kind": "met')
    import mlflow

    real = mlflow.MlflowClient.log_batch
    calls = []

    def second_fails(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise requests.ConnectionError("connection refused")
        return real(self, *a, **kw)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", second_fails)
    with pytest.raises(tracking.TrackingUnavailableError, match="run the import again"):
        tracking.import_fallback(folder)
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", real)
    assert tracking.import_fallback(folder)["metrics"] == 502
    assert _same(_history(store["uri"], run_id, "a")[:2], [(0, math.nan), (1, FMAX)])
    assert [s for s, _ in _history(store["uri"], run_id, "a")] == list(range(1502))
    with pytest.raises(tracking.FallbackImportError, match="already imported"):
        tracking.import_fallback(folder)


def _system_steps(uri: str, run_id: str) -> list[int]:
    return _steps(uri, run_id, "system/cpu_utilization_percentage")


def test_system_metrics_are_logged_when_on_and_absent_when_off(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # MLflow's default: 10 s
    on = _tracker(store, system_metrics=True)
    run_id = on.start({})
    deadline = time.monotonic() + 30
    while not _system_steps(store["uri"], run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    on.end()
    assert time.monotonic() - t0 < 5  # the thread's last sample, not a sampling interval more
    system = {k for k in read_run(store["uri"], run_id)["metrics"] if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    steps = _system_steps(store["uri"], run_id)
    assert steps == list(range(len(steps)))

    again = _tracker(store, system_metrics=True)  # a resumed run's samples go on from its last step
    again.start({}, run_id=run_id)
    deadline = time.monotonic() + 30
    while len(_system_steps(store["uri"], run_id)) == len(steps) and time.monotonic() < deadline:
        time.sleep(0.1)
    again.end()
    assert _system_steps(store["uri"], run_id)[:len(steps) + 1] == list(range(len(steps) + 1))

    off = _tracker(store)  # the default: off (train() turns them on: RunConfig.system_metrics)
    off_id = off.start({})
    time.sleep(0.5)
    off.log_metrics({"x": 1.0}, step=0)
    off.end()
    assert list(read_run(store["uri"], off_id)["metrics"]) == ["x"]
