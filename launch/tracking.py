"""MLflow tracking from the driver only, batched, with one journal of what the server has not taken.

Only the driver talks to MLflow, through :class:`mlflow.MlflowClient` (no global active run:
https://mlflow.org/docs/latest/api_reference/python_api/mlflow.client.html), imported lazily (~1.5 s).
Metrics go in ``log_batch`` requests; NaN as NaN, +-inf as +-:data:`FLOAT_MAX` (what MLflow's SQL
store writes for it), their running count as :data:`NONFINITE_METRIC`.

When the server stops answering mid-run, training goes on after one :class:`TrackingOutageWarning`:
each flush appends what is pending to the journal, ``<fallback_dir>/<run id>/mlflow-fallback/
journal.jsonl``, and, backing off from 2 s to 60 s, retries by replaying it; fully acknowledged, it
is removed. Still down at :meth:`Tracker.end`, the status joins it, left for ``colonyrl
tracking-import`` (:func:`import_fallback`: the same replay).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import posixpath
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from colonyrl.launch.system_metrics import SystemMetrics

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = ["Tracker", "TrackingOutageWarning", "TrackingUnavailableError", "FallbackImportError", "import_fallback",
           "HTTP_SETTINGS", "FALLBACK_FOLDER", "JOURNAL_FILE", "NONFINITE_METRIC", "FLOAT_MAX"]

_log = logging.getLogger(__name__)

# MLflow's limits (mlflow/utils/validation.py), copied (no MLflow import); a test checks them.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
_NAME_RE = re.compile(r"^[/\w.\- :]+$")  # validate_param_and_metric_name (non-Windows)

Status = Literal["FINISHED", "FAILED", "KILLED"]
Record = dict[str, Any]  # a journal line: {"kind": ..., ...} (see _Journal)
#: MLflow's HTTP client retries for minutes per failed call; unless the user set them, the tracker's calls run with
#: these (read per request: https://mlflow.org/docs/latest/api_reference/python_api/mlflow.environment_variables.html):
#: a silent host fails within 2 x 10 s, and waiting for a restart is the tracker's own backoff.
HTTP_SETTINGS: dict[str, str] = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
NONFINITE_METRIC = "nonfinite_metric_values"
FLOAT_MAX = sys.float_info.max
FALLBACK_FOLDER = "mlflow-fallback"  # in <fallback_dir>/<run id>/
JOURNAL_FILE = "journal.jsonl"


class TrackingUnavailableError(RuntimeError):
    """The tracking server does not answer where it must: starting a run, importing a journal."""


class FallbackImportError(RuntimeError):
    """A journal that cannot be imported: missing, malformed, or imported already."""


class TrackingOutageWarning(UserWarning):
    """The tracking server stopped answering mid-run (training goes on), or a journal was left."""


def _is_unreachable(e: BaseException) -> bool:
    """True for "the server does not answer" (MLflow 3.x raises refused connections and timeouts as HTTP
    500 ``MlflowException``s) and 5xx/429; another 4xx (bad name, deleted run) is no outage."""
    import requests
    from mlflow.exceptions import MlflowException
    if not isinstance(e, MlflowException):
        return isinstance(e, (ConnectionError, TimeoutError, requests.RequestException))
    return e.get_http_status_code() >= 500 or e.get_http_status_code() == 429


def _call(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` with :data:`HTTP_SETTINGS`: the error if the server did not answer, else None."""
    added = [k for k in HTTP_SETTINGS if k not in os.environ]
    os.environ.update({k: HTTP_SETTINGS[k] for k in added})
    try:
        fn()
    except Exception as e:
        if not _is_unreachable(e):
            raise
        return e
    finally:
        for k in added:
            os.environ.pop(k, None)
    return None


def _brief(e: BaseException) -> str:
    """The first line of an error, cut: MLflow's messages repeat the whole urllib3 chain."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _send(client: MlflowClient, run_id: str, records: Iterable[Record], folder: Path,
          done: Callable[[list[Record]], None]) -> None:
    """Send ``records`` in order (runs of metric points in ``log_batch`` requests) and hand ``done``
    the records of each request the server took. A ``file`` record's relative path is in ``folder``."""
    from mlflow.entities import Metric
    for is_metric, group in itertools.groupby(records, lambda r: r["kind"] == "metric"):
        if is_metric:
            while chunk := list(itertools.islice(group, MAX_METRICS_PER_BATCH)):
                client.log_batch(run_id, metrics=[Metric(r["key"], float(r["value"]), r["timestamp"], r["step"])
                                                for r in chunk])
                done(chunk)
            continue
        for rec in group:
            if rec["kind"] == "text":
                client.log_text(run_id, rec["text"], rec["artifact_file"])
            elif rec["kind"] == "file":  # a folder keeps its name under artifact_path, as MlflowClient does
                client.log_artifact(run_id, str(folder / rec["local"]), rec["artifact_path"])
            elif rec["kind"] == "end":
                client.set_terminated(run_id, status=rec["status"], end_time=rec["end_time"])
            done([rec])


class _Journal:
    """A run's journal, written at the first :meth:`add`, and what in it the server has not acknowledged.

    Standard JSON lines (NaN as protobuf's JSON string "NaN": https://protobuf.dev/programming-guides/
    json/), fsync'd per batch, each with a ``seq``: ``run`` (seq 0: run_id, experiment_id,
    tracking_uri), ``metric`` (key, value, timestamp, step), ``text`` (artifact_file, text), ``file``
    (local: a copy under ``artifacts/<seq>/``, artifact_path), ``end`` (status, end_time), ``ack``
    (upto: the server took every record up to that seq). A last line cut by a crash is dropped.
    """

    def __init__(self, folder: Path, header: Record) -> None:
        self.folder, self.path, self.header = folder, folder / JOURNAL_FILE, header
        if self.path.is_file():  # drop a last line cut by a crash, so that appends start a line
            os.truncate(self.path, self.path.read_bytes().rfind(b"\n") + 1)
        self.seq = self.acked = -1  # the last record written, the last one the server took
        for rec in self.read():  # streamed, twice: the journal of a days-long outage need not fit in memory
            self.seq = rec["seq"]
            self.header = rec if rec["kind"] == "run" else self.header
            self.acked = max(self.acked, rec["upto"]) if rec["kind"] == "ack" else self.acked
        self.todo = Counter(r["kind"] for r in self.read()  # records not acknowledged, by kind
                            if r["kind"] not in ("run", "ack") and r["seq"] > self.acked)

    def read(self) -> Iterator[Record]:
        if self.path.is_file():
            with open(self.path, "rb") as f:
                yield from map(json.loads, f)

    def add(self, records: list[Record]) -> None:
        """Append ``records`` with the next sequence numbers, in one write and one fsync."""
        if self.seq < 0:
            records = [{"kind": "run", "format": 2, **self.header}, *records]
        lines = []
        for rec in records:
            self.seq += 1
            if rec["kind"] == "metric" and math.isnan(rec["value"]):
                rec = {**rec, "value": "NaN"}
            elif rec["kind"] == "file":  # a copy: the original may go before the server is back
                src = Path(rec["local"])
                rec = {**rec, "local": f"artifacts/{self.seq}/{src.name}"}
                (self.folder / rec["local"]).parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, self.folder / rec["local"])
                os.sync()  # the copy on disk before the record that names it
            self.todo[rec["kind"]] += rec["kind"] not in ("run", "ack")
            lines.append(json.dumps({"seq": self.seq, **rec}, allow_nan=False) + "\n")
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def replay(self, client: MlflowClient, run_id: str, after: int) -> None:
        """Send the records after seq ``after``, in order, acknowledging each request the server took."""
        def done(chunk: list[Record]) -> None:
            self.acked = chunk[-1]["seq"]
            self.todo.subtract(r["kind"] for r in chunk)
            self.add([{"kind": "ack", "upto": self.acked}])

        _send(client, run_id, (r for r in self.read() if r["seq"] > after and r["kind"] not in ("run", "ack")),
              self.folder, done)


class Tracker:
    """One MLflow run, written from one driver thread in batches, surviving tracking-server outages.

    ``tracking_uri`` None: ``MLFLOW_TRACKING_URI``, else MLflow's default. ``enabled=False``: no-ops, no
    mlflow. The journal's folder gets ``-2`` and on for a resumed run whose earlier one was never
    imported; during an outage, ``max_buffered`` points are journaled even before the next flush.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "colonyrl",
                 run_name: str | None = None, enabled: bool = True, artifact_location: str | None = None,
                 fallback_dir: str | Path = "runs", max_buffered: int = 100_000, retry_min_s: float = 2.0,
                 retry_max_s: float = 60.0, system_metrics: bool = False) -> None:
        if max_buffered < 1 or retry_min_s <= 0 or retry_max_s < retry_min_s:
            raise ValueError("Tracker: max_buffered >= 1 and 0 < retry_min_s <= retry_max_s")
        self.enabled, self.experiment, self.run_name = enabled, experiment, run_name
        self.artifact_location, self.fallback_dir = artifact_location, Path(fallback_dir)
        self.max_buffered, self.retry_min_s, self.retry_max_s = max_buffered, retry_min_s, retry_max_s
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.system_metrics = system_metrics
        self.run_id: str | None = None
        self.experiment_id = self.artifact_uri = self.run_id
        self.active = False
        self.nonfinite_values = self.outages = 0  # NaN/inf values logged in the run; outages met
        self.fallback_written: Path | None = None  # the journal's folder, if end() left it
        self._client: MlflowClient | None = None
        self._buffer: list[Record] = []  # records not yet sent or journaled
        self._journal: _Journal | None = None
        self._down_since: float | None = None
        self._next_retry, self._retry_delay = 0.0, retry_min_s
        self._monitor: SystemMetrics | None = None

    @property
    def server_down(self) -> bool:
        """True from a write that found the server unreachable until one succeeds again."""
        return self._down_since is not None

    @property
    def pending(self) -> int:
        """Metric points the server has not taken yet, in memory or journaled."""
        buffered = sum(r["kind"] == "metric" for r in self._buffer)
        return buffered + (self._journal.todo["metric"] if self._journal else 0)

    @property
    def pending_artifacts(self) -> int:
        return self._journal.todo["text"] + self._journal.todo["file"] if self._journal else 0

    @property
    def fallback_path(self) -> Path | None:
        """The journal's folder (whether it exists yet or not); None before :meth:`start`."""
        return self._journal.folder if self._journal else None

    def _connect(self) -> MlflowClient:
        if self._client is None:
            import mlflow  # lazy: ~1.5 s
            self.tracking_uri = self.tracking_uri or mlflow.get_tracking_uri()
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None,
              run_id: str | None = None) -> str | None:
        """Start a new run, or reopen ``run_id``, and log ``params`` (write-once: a resumed run keeps old
        values, with a warning) and ``tags``. :class:`TrackingUnavailableError` if the server is down."""
        if not self.enabled:
            return None
        if self.active:
            raise RuntimeError(f"Tracker already has an active run {self.run_id}; end() it first")
        error = _call(lambda: self._start(self._connect(), params, tags, run_id))
        if error is not None:
            raise TrackingUnavailableError(f"MLflow tracking server {self.tracking_uri} is unreachable ({_brief(error)}): "
                                           "start it, point --tracking-uri at one that runs, or use --no-track") from error
        base = self.fallback_dir / str(self.run_id)  # mlflow-fallback, else the first free mlflow-fallback-N
        names = (FALLBACK_FOLDER + (f"-{n}" if n > 1 else "") for n in itertools.count(1))
        folder = next(base / name for name in names if not (base / name).exists())
        header = {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.tracking_uri}
        self._journal = _Journal(folder, header)
        self.active = True
        if self.system_metrics:
            self._monitor = SystemMetrics(str(self.run_id), self.tracking_uri, resume=run_id is not None)
        return self.run_id

    def _start(self, client: MlflowClient, params: Mapping[str, Any], tags: Mapping[str, str] | None,
               run_id: str | None) -> None:
        from mlflow.entities import Param, RunTag
        user_tags = {str(k): str(v)[:MAX_TAG_VAL_LENGTH] for k, v in (tags or {}).items()}
        values = {str(k): str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
        if run_id is None:  # with the tags mlflow.start_run adds: user, source name/type, git commit (~0.05 s)
            from mlflow.tracking.context.registry import resolve_tags
            run = client.create_run(self._experiment(client), tags=resolve_tags(user_tags), run_name=self.run_name)
        else:
            run = client.get_run(run_id)  # raises MlflowException for an unknown ID
            client.update_run(run_id, status="RUNNING")  # as the fluent start_run(run_id=...) does (deleted: raises)
            changed = sorted(k for k, v in values.items() if run.data.params.get(k, v) != v)
            if changed:
                warnings.warn(f"resuming MLflow run {run_id}: params are write-once, keeping the old values "
                              f"of {changed}", stacklevel=4)
            values = {k: v for k, v in values.items() if k not in run.data.params}
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in user_tags.items()])
        self.run_id, self.experiment_id, self.artifact_uri = run.info.run_id, run.info.experiment_id, run.info.artifact_uri
        self.nonfinite_values = int(run.data.metrics.get(NONFINITE_METRIC, 0)) if run_id else 0
        items = [Param(k, v) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def _experiment(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
            except MlflowException:  # created meanwhile by another process?
                if (exp := client.get_experiment_by_name(self.experiment)) is None:
                    raise
        return exp.experiment_id  # a deleted one: create_run raises, naming it

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step``; a name MLflow would reject (losing the batch) raises now."""
        if not self.enabled:
            return
        if not self.active:
            raise RuntimeError("Tracker.log_metrics before start() or after end()")
        ts, step, nonfinite = int(time.time() * 1000), int(step), 0
        for key, value in metrics.items():
            if key == NONFINITE_METRIC:
                raise ValueError(f"metric name {key!r} is reserved: the tracker counts NaN/inf values in it")
            norm = posixpath.normpath(key) if isinstance(key, str) else ""
            if not _NAME_RE.match(norm) or norm != key or norm == "." or norm.startswith(("..", "/")):
                raise ValueError(f"metric name {key!r}: alphanumerics, '_', '-', '.', ' ', ':' and '/' only, as a "
                                 "normalized relative path")
            v = float(value)  # numpy scalars and 0-d tensors too; +-inf as +-FLOAT_MAX from here on
            nonfinite += not math.isfinite(v)
            v = math.copysign(FLOAT_MAX, v) if math.isinf(v) else v
            self._buffer.append({"kind": "metric", "key": key, "value": v, "timestamp": ts, "step": step})
        if nonfinite:
            self.nonfinite_values += nonfinite
            self._buffer.append({**self._buffer[-1], "key": NONFINITE_METRIC, "value": float(self.nonfinite_values)})
        if self._down_since is not None and len(self._buffer) > self.max_buffered:
            self.flush()  # journals them

    def flush(self) -> None:
        """Send the buffered records; while the server is down, journal them and, when the backoff
        allows, retry by replaying the journal. Other errors raise, the unsent records kept."""
        if not self.enabled or self._journal is None:
            return
        if self._down_since is None and self._buffer:
            error = _call(lambda: _send(self._connect(), str(self.run_id), self._buffer[:], Path(), self._sent))
            if error is not None:
                self._went_down(error)
        if self._down_since is not None:
            if self._buffer:
                self._journal.add(self._buffer)
                self._buffer = []
            if time.monotonic() >= self._next_retry:
                self._retry()

    def _sent(self, chunk: list[Record]) -> None:
        del self._buffer[:len(chunk)]

    def end(self, status: Status = "FINISHED") -> None:
        """Flush and end the run with ``status``; the server down, after one last retry at once, the
        status joins the journal, which stays, and a warning names the command that imports it."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status={status!r}: allowed one of FINISHED, FAILED, KILLED")
        if not self.enabled or not self.active:
            return
        if self._monitor is not None:
            self._monitor.stop(self.server_down)
        self._next_retry = 0.0  # the last chance: no waiting for the backoff
        self._buffer.append({"kind": "end", "status": status, "end_time": int(time.time() * 1000)})
        try:
            self.flush()
        finally:  # also after an unrelated flush error
            self.active = False
        if self._down_since is not None and self._journal is not None:
            self.fallback_written = self._journal.folder
            warnings.warn(f"MLflow tracking server {self.tracking_uri} was still unreachable when run {self.run_id} "
                          f"ended: {self.pending:,} metric points, {self.pending_artifacts} artifacts and the status "
                          f"{status} are in {self._journal.path}. Once the server is back, import them with: "
                          f"colonyrl tracking-import {self._journal.folder}", TrackingOutageWarning, stacklevel=3)

    def _write(self, rec: Record) -> None:
        """Send an artifact now, after the buffered points, or journal it during an outage."""
        if not self.enabled:
            return
        if not self.active:
            raise RuntimeError("Tracker: log artifacts between start() and end()")
        self._buffer.append(rec)
        self.flush()

    def _retry(self) -> None:
        """Replay the journal; once all of it went through, the outage is over: remove it."""
        journal = self._journal
        assert journal is not None  # down: it holds at least what failed
        error = _call(lambda: journal.replay(self._connect(), str(self.run_id), journal.acked))
        if error is not None:
            return self._went_down(error)
        _log.info("MLflow tracking server %s answers again after %.1f s; run %s is up to date",
                  self.tracking_uri, time.monotonic() - (self._down_since or 0.0), self.run_id)
        self._down_since, self._retry_delay = None, self.retry_min_s
        shutil.rmtree(journal.folder, ignore_errors=True)
        self._journal = _Journal(journal.folder, journal.header)

    def _went_down(self, e: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self.outages = now, self.outages + 1
            warnings.warn(f"MLflow tracking server {self.tracking_uri} is unreachable ({_brief(e)}). Training goes on: "
                          f"metrics and artifacts of run {self.run_id} are journaled in {self.fallback_path} and sent "
                          f"when the server answers again (retried every {self.retry_min_s:g}-{self.retry_max_s:g} s).",
                          TrackingOutageWarning, stacklevel=4)
        self._next_retry, self._retry_delay = now + self._retry_delay, min(2 * self._retry_delay, self.retry_max_s)

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        """Write ``obj`` as indented JSON (``MlflowClient.log_dict``'s format for a .json file)."""
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write({"kind": "text", "artifact_file": artifact_file, "text": text})

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts (during an outage, first into the journal)."""
        if self.enabled and not os.path.exists(local_path):  # here, not at a retry minutes later
            raise FileNotFoundError(f"Tracker.log_artifact: {local_path} does not exist")
        self._write({"kind": "file", "local": os.path.abspath(local_path), "artifact_path": artifact_path})

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """End the run: FINISHED, KILLED on KeyboardInterrupt, FAILED on any other exception."""
        if exc_type is None:
            return self.end("FINISHED")
        status: Status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.end(status)
        except Exception:  # do not hide the exception that is propagating
            _log.exception("Tracker: could not end MLflow run %s as %s", self.run_id, status)


def import_fallback(path: str | Path, tracking_uri: str | None = None, force: bool = False) -> dict[str, Any]:
    """Replay the journal in ``path`` (or in its ``mlflow-fallback``) into its run, at ``tracking_uri``
    (None: where it was tracked); ``force`` sends acknowledged records again. Returns what was sent."""
    folder = Path(path) if (Path(path) / JOURNAL_FILE).is_file() else Path(path) / FALLBACK_FOLDER
    if not (folder / JOURNAL_FILE).is_file():
        raise FallbackImportError(f"{path} is not an MLflow fallback folder (no {JOURNAL_FILE} in it or in {folder})")
    try:
        journal = _Journal(folder, {})
        run_id, uri = journal.header["run_id"], tracking_uri or journal.header["tracking_uri"]
    except (ValueError, KeyError, TypeError) as e:
        raise FallbackImportError(f"{folder / JOURNAL_FILE} is malformed: {e!r}") from e
    if not sum(journal.todo.values()) and not force:
        raise FallbackImportError(f"{folder} was already imported into run {run_id} (every record in it is "
                                  "acknowledged); pass force=True (--force) to import it again")
    import mlflow
    client, before = mlflow.MlflowClient(tracking_uri=uri), Counter(journal.todo)
    # get_run first: an unknown run fails before anything is sent
    error = _call(lambda: (client.get_run(run_id), journal.replay(client, run_id, 0 if force else journal.acked)))
    if error is not None:
        raise TrackingUnavailableError(f"MLflow tracking server {uri} is unreachable ({_brief(error)}); "
                                       f"progress is kept in {journal.path}: run the import again") from error
    sent = before - journal.todo  # what replay subtracted: acknowledged records too, when forced
    return {"run_id": run_id, "tracking_uri": uri, "metrics": sent["metric"], "artifacts": sent["file"] + sent["text"],
            "status": next((r["status"] for r in journal.read() if r["kind"] == "end"), None)}
