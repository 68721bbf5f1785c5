"""MLflow tracking from the driver only, batched, with one journal of what the server has not taken.

Only the driver talks to MLflow, through :class:`mlflow.MlflowClient` (no global active run:
https://mlflow.org/docs/latest/api_reference/python_api/mlflow.client.html), importing mlflow
(~1.5 s) lazily. :meth:`Tracker.flush` sends buffered metrics with ``log_batch``, at most 1000 metrics
or 100 params per request (https://mlflow.org/docs/latest/api_reference/rest-api.html#log-batch).
NaN is logged as NaN, +-inf as +-:data:`FLOAT_MAX` (what MLflow's SQL store writes for it), and
their running count as :data:`NONFINITE_METRIC`.

When the server stops answering mid-run, training goes on after one :class:`TrackingOutageWarning`:
each flush appends what is pending to the journal, ``<fallback_dir>/<run id>/mlflow-fallback/
journal.jsonl``, and, backing off from 2 s to 60 s, retries by replaying it; fully acknowledged, it
is removed. Still down at :meth:`Tracker.end`, the status joins it, left for ``colonyrl
tracking-import`` (:func:`import_fallback`: the same replay). Its records are standard JSON lines (NaN
as protobuf's JSON string "NaN": https://protobuf.dev/programming-guides/json/), fsync'd per batch,
each with a ``seq``: ``run`` (seq 0: run_id, experiment_id, tracking_uri), ``metric`` (key, value,
timestamp, step), ``text`` (artifact_file, text), ``file`` (local: a copy under ``artifacts/<seq>/``,
artifact_path), ``end`` (status, end_time), ``ack`` (upto: the server took every record up to that
seq). A last line cut by a crash, never fsync'd, is dropped.

MLflow's HTTP client retries for minutes per failed call; the tracker's calls run with
:data:`HTTP_SETTINGS` as the ``MLFLOW_HTTP_REQUEST_*`` variables MLflow reads per request
(https://mlflow.org/docs/latest/api_reference/python_api/mlflow.environment_variables.html), set in
``os.environ`` around each call (ones the user set win): call the tracker from one thread.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = ["Tracker", "TrackingOutageWarning", "TrackingUnavailableError", "FallbackImportError", "import_fallback",
           "HTTP_SETTINGS", "FALLBACK_FOLDER", "JOURNAL_FILE", "NONFINITE_METRIC", "FLOAT_MAX"]

_log = logging.getLogger(__name__)

# MLflow's limits (mlflow/utils/validation.py, the LogBatch spec above), copied so that importing this
# module imports no MLflow; a test checks them against the installed MLflow.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
# mlflow.utils.validation.validate_param_and_metric_name (non-Windows).
_NAME_RE = re.compile(r"^[/\w.\- :]+$")

Status = Literal["FINISHED", "FAILED", "KILLED"]
#: A refused connection fails in milliseconds, a silent host within 2 x 10 s; the one retry (made at
#: once) covers a pooled connection the server closed. Waiting for a restart is the tracker's backoff.
HTTP_SETTINGS: dict[str, str] = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
#: The metric that counts the non-finite (NaN/inf) values logged so far in the run.
NONFINITE_METRIC = "nonfinite_metric_values"
#: What +-inf is logged as: the value MLflow's SQL store writes for it.
FLOAT_MAX = sys.float_info.max
#: The journal's folder inside ``<fallback_dir>/<run id>/``, and its file.
FALLBACK_FOLDER = "mlflow-fallback"
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
    if isinstance(e, MlflowException):
        code = e.get_http_status_code()
    elif isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else 500
    else:
        return isinstance(e, (ConnectionError, TimeoutError, requests.RequestException))
    return code >= 500 or code == 429


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


def _finite_or_nan(v: float) -> float:
    return math.copysign(FLOAT_MAX, v) if math.isinf(v) else v


def _send(client: MlflowClient, run_id: str, rec: Mapping[str, Any], folder: Path) -> None:
    """Send one record that is no metric point: an artifact, or the run's end."""
    if rec["kind"] == "text":
        client.log_text(run_id, rec["text"], rec["artifact_file"])
    elif rec["kind"] == "file":  # a folder keeps its name under artifact_path, as MlflowClient does
        client.log_artifact(run_id, str(folder / rec["local"]), rec["artifact_path"])
    elif rec["kind"] == "end":
        client.set_terminated(run_id, status=rec["status"], end_time=rec["end_time"])


class _Journal:
    """A run's journal and what in it the server has not acknowledged (written at the first add())."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.folder, self.path, self.header = folder, folder / JOURNAL_FILE, header
        self.seq = self.acked = -1  # the last record written, the last one the server took
        self.todo: Counter[str] = Counter()  # records not acknowledged, by kind
        self.sent: Counter[str] = Counter()  # records replay() sent, by kind
        self.status_sent: str | None = None
        if self.path.is_file():  # drop a last line cut by a crash, so that appends start a line
            os.truncate(self.path, self.path.read_bytes().rfind(b"\n") + 1)
        kinds = []
        for rec in self.read():
            self.seq = rec["seq"]
            if rec["kind"] == "run":
                self.header = rec
            elif rec["kind"] == "ack":
                self.acked = max(self.acked, rec["upto"])
            else:
                kinds.append((rec["seq"], rec["kind"]))
        self.todo.update(kind for seq, kind in kinds if seq > self.acked)

    def read(self) -> Iterator[dict[str, Any]]:
        if self.path.is_file():
            with open(self.path, "rb") as f:
                yield from map(json.loads, f)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` with the next sequence numbers, in one write and one fsync."""
        if self.seq < 0:
            records = [{"kind": "run", "format": 2, **self.header}, *records]
        lines = []
        for rec in records:
            self.seq += 1
            if rec["kind"] == "file":  # a copy: the original may go before the server is back
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
        """Send the records after seq ``after``, in order, acknowledging each step the server took."""
        from mlflow.entities import Metric
        batch: list[dict[str, Any]] = []

        def done(seq: int, kinds: Counter[str]) -> None:
            self.acked = seq
            self.todo.subtract(kinds)
            self.sent.update(kinds)
            self.add([{"kind": "ack", "upto": seq}])

        def send_batch() -> None:
            if batch:
                client.log_batch(run_id, metrics=[Metric(m["key"], _finite_or_nan(float(m["value"])),
                                                         m["timestamp"], m["step"]) for m in batch])
                done(batch[-1]["seq"], Counter(metric=len(batch)))
                batch.clear()

        for rec in self.read():
            if rec["seq"] <= after or rec["kind"] in ("run", "ack"):
                continue
            if rec["kind"] == "metric":
                batch.append(rec)
                if len(batch) == MAX_METRICS_PER_BATCH:
                    send_batch()
                continue
            send_batch()
            _send(client, run_id, rec, self.folder)
            self.status_sent = rec.get("status", self.status_sent)
            done(rec["seq"], Counter({rec["kind"]: 1}))
        send_batch()


class Tracker:
    """One MLflow run, written from the driver in batches, surviving tracking-server outages.

    ``tracking_uri`` None: ``MLFLOW_TRACKING_URI``, else MLflow's default (resolved at :meth:`start`,
    which sets ``run_id``, ``experiment_id``, ``artifact_uri``). ``enabled=False``: no-ops, no mlflow.
    The journal's folder gets ``-2`` and on for a resumed run whose earlier one was never imported;
    during an outage, ``max_buffered`` points are journaled even before the next flush.
    ``nonfinite_values`` counts NaN/inf values, ``outages`` outages; ``fallback_written`` is the
    journal's folder if :meth:`end` left it.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "colonyrl",
                 run_name: str | None = None, enabled: bool = True, artifact_location: str | None = None,
                 fallback_dir: str | Path = "runs", max_buffered: int = 100_000, retry_min_s: float = 2.0,
                 retry_max_s: float = 60.0) -> None:
        if max_buffered < 1 or retry_min_s <= 0 or retry_max_s < retry_min_s:
            raise ValueError("Tracker: max_buffered >= 1 and 0 < retry_min_s <= retry_max_s")
        self.enabled, self.experiment, self.run_name = enabled, experiment, run_name
        self.artifact_location, self.fallback_dir = artifact_location, Path(fallback_dir)
        self.max_buffered, self.retry_min_s, self.retry_max_s = max_buffered, retry_min_s, retry_max_s
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.run_id: str | None = None
        self.experiment_id = self.artifact_uri = self.run_id
        self.active = False
        self._client: MlflowClient | None = None
        self._buffer: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._known_names: set[str] = set()
        self._journal: _Journal | None = None
        self._down_since: float | None = None
        self._next_retry, self._retry_delay = 0.0, retry_min_s
        self.nonfinite_values = self.outages = 0
        self.fallback_written: Path | None = None

    @property
    def server_down(self) -> bool:
        """True from a write that found the server unreachable until one succeeds again."""
        return self._down_since is not None

    @property
    def pending(self) -> int:
        """Metric points the server has not taken yet, in memory or journaled."""
        return len(self._buffer) + (self._journal.todo["metric"] if self._journal else 0)

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
            raise TrackingUnavailableError(
                f"MLflow tracking server {self.tracking_uri} is unreachable ({_brief(error)}): start it, point "
                "--tracking-uri (or MLFLOW_TRACKING_URI) at one that runs, or train with --no-track") from error
        base, name, n = self.fallback_dir / str(self.run_id), FALLBACK_FOLDER, 1
        while (base / name).exists():
            n += 1
            name = f"{FALLBACK_FOLDER}-{n}"
        header = {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.tracking_uri}
        self._journal = _Journal(base / name, header)
        self.active = True
        return self.run_id

    def _start(self, client: MlflowClient, params: Mapping[str, Any], tags: Mapping[str, str] | None,
               run_id: str | None) -> None:
        from mlflow.entities import Param, RunTag
        user_tags = {str(k): str(v)[:MAX_TAG_VAL_LENGTH] for k, v in (tags or {}).items()}
        values = {str(k): str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
        if run_id is None:
            run_tags = dict(user_tags)
            try:  # what mlflow.start_run adds: user, source name/type, git commit (~0.05 s)
                from mlflow.tracking.context.registry import resolve_tags
                run_tags = resolve_tags(run_tags)
            except Exception as e:  # never fail a run over provenance tags
                _log.debug("mlflow context tags unavailable: %r", e)
            run = client.create_run(self._experiment(client), tags=run_tags, run_name=self.run_name)
        else:
            run = client.get_run(run_id)  # raises MlflowException for an unknown ID
            if run.info.lifecycle_stage == "deleted":
                raise RuntimeError(f"cannot resume MLflow run {run_id}: it is deleted")
            client.update_run(run_id, status="RUNNING")  # as the fluent start_run(run_id=...) does
            changed = sorted(k for k, v in values.items() if run.data.params.get(k, v) != v)
            if changed:
                warnings.warn(f"resuming MLflow run {run_id}: params are write-once, keeping the old values "
                              f"of {changed}", stacklevel=4)
            values = {k: v for k, v in values.items() if k not in run.data.params}
            if user_tags:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in user_tags.items()])
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        self.artifact_uri = run.info.artifact_uri
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
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise RuntimeError(f"MLflow experiment {self.experiment!r} is deleted: restore it (`mlflow "
                               f"experiments restore --experiment-id {exp.experiment_id}`) or use another name")
        return exp.experiment_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step``; a name MLflow would reject (losing the batch) raises now."""
        if not self.enabled:
            return
        if not self.active:
            raise RuntimeError("Tracker.log_metrics before start() or after end()")
        ts, step, nonfinite = int(time.time() * 1000), int(step), 0
        for key, value in metrics.items():
            if key not in self._known_names:
                if key == NONFINITE_METRIC:
                    raise ValueError(f"metric name {key!r} is reserved: the tracker logs it (the count of "
                                     "NaN/inf values)")
                norm = posixpath.normpath(key) if isinstance(key, str) else ""
                if not _NAME_RE.match(norm) or norm != key or norm == "." or norm.startswith(("..", "/")):
                    raise ValueError(f"metric name {key!r}: alphanumerics, '_', '-', '.', ' ', ':' and '/' "
                                     "only, as a normalized relative path")
                self._known_names.add(key)
            v = float(value)  # numpy scalars and 0-d tensors too
            nonfinite += not math.isfinite(v)
            self._buffer.append((key, _finite_or_nan(v), ts, step))
        if nonfinite:
            self.nonfinite_values += nonfinite
            self._buffer.append((NONFINITE_METRIC, float(self.nonfinite_values), ts, step))
        if self._down_since is not None and len(self._buffer) > self.max_buffered:
            self._journal_buffer()

    def flush(self) -> None:
        """Send the buffered points; while the server is down, journal them and, when the backoff
        allows, retry by replaying the journal. Other errors raise, the unsent points kept."""
        if not self.enabled or self.run_id is None:
            return
        if self._down_since is None and self._buffer:
            error = _call(self._send_buffer)
            if error is not None:
                self._went_down(error)
        if self._down_since is not None:
            self._journal_buffer()
            if time.monotonic() >= self._next_retry:
                self._retry()

    def _send_buffer(self) -> None:
        from mlflow.entities import Metric
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self._connect().log_batch(str(self.run_id), metrics=[Metric(*m) for m in chunk])
            del self._buffer[:len(chunk)]

    def end(self, status: Status = "FINISHED") -> None:
        """Flush and end the run with ``status``; the server down, after one last retry at once, the
        status joins the journal, which stays, and a warning names the command that imports it."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status={status!r}: allowed one of FINISHED, FAILED, KILLED")
        if not self.enabled or not self.active:
            return
        self._next_retry = 0.0  # the last chance: no waiting for the backoff
        try:
            self.flush()
        finally:  # also after an unrelated flush error
            self._write({"kind": "end", "status": status, "end_time": int(time.time() * 1000)})
            self.active = False
        if self._down_since is not None and self._journal is not None:
            self.fallback_written = self._journal.folder
            warnings.warn(
                f"MLflow tracking server {self.tracking_uri} was still unreachable when run {self.run_id} "
                f"ended: {self.pending:,} metric points, {self.pending_artifacts} artifacts and the status "
                f"{status} are in {self._journal.path}. Once the server is back, import them with: "
                f"colonyrl tracking-import {self._journal.folder}", TrackingOutageWarning, stacklevel=3)

    def _write(self, rec: dict[str, Any]) -> None:
        """Send an artifact or the end now, or journal it (after the buffered points) during an outage."""
        journal = self._journal
        if self.run_id is None or journal is None:
            raise RuntimeError("Tracker: start() a run before logging artifacts")
        if self._down_since is None or not self.active:  # after end(), errors raise
            error = _call(lambda: _send(self._connect(), str(self.run_id), rec, journal.folder))
            if error is None:
                return
            if not self.active:
                raise error
            self._went_down(error)
        self._journal_buffer()
        journal.add([rec])
        self.flush()  # a retry, if one is due

    def _journal_buffer(self) -> None:
        if self._buffer and self._journal is not None:  # NaN as protobuf's JSON string, inf is gone
            self._journal.add([{"kind": "metric", "key": k, "value": "NaN" if math.isnan(v) else v,
                                "timestamp": ts, "step": s} for k, v, ts, s in self._buffer])
            self._buffer = []

    def _retry(self) -> None:
        """Replay the journal; once all of it went through, the outage is over: remove it."""
        journal = self._journal
        if journal is None or not sum(journal.todo.values()):
            return  # nothing to send, nothing to tell whether the server is back
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
            self._down_since, self._retry_delay = now, self.retry_min_s
            self.outages += 1
            warnings.warn(
                f"MLflow tracking server {self.tracking_uri} is unreachable ({_brief(e)}). Training goes on: "
                f"metrics and artifacts of run {self.run_id} are journaled in {self.fallback_path} and sent "
                f"when the server answers again (retried every {self.retry_min_s:g}-{self.retry_max_s:g} s).",
                TrackingOutageWarning, stacklevel=4)
        else:
            self._retry_delay = min(2 * self._retry_delay, self.retry_max_s)
        self._next_retry = now + self._retry_delay

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        """Write ``obj`` as ``MlflowClient.log_dict`` would: YAML for .yaml/.yml, else indented JSON."""
        if os.path.splitext(artifact_file)[1] in (".yml", ".yaml"):
            import yaml
            return self.log_text(yaml.dump(obj, indent=2, default_flow_style=False), artifact_file)
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self._write({"kind": "text", "artifact_file": artifact_file, "text": text})

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts (during an outage, first into the journal)."""
        if self.enabled:
            if not os.path.exists(local_path):  # here, not at a retry minutes later
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
        raise FallbackImportError(f"{path} is not an MLflow fallback folder (no {JOURNAL_FILE} in it or in "
                                  f"{folder})")
    try:
        journal = _Journal(folder, {})
        run_id, uri = journal.header["run_id"], tracking_uri or journal.header["tracking_uri"]
    except (ValueError, KeyError, TypeError) as e:
        raise FallbackImportError(f"{folder / JOURNAL_FILE} is malformed: {e!r}") from e
    if not sum(journal.todo.values()) and not force:
        raise FallbackImportError(f"{folder} was already imported into run {run_id} (every record in it is "
                                  "acknowledged); pass force=True (--force) to import it again")
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    # get_run first: an unknown run fails before anything is sent
    error = _call(lambda: (client.get_run(run_id), journal.replay(client, run_id, 0 if force else journal.acked)))
    if error is not None:
        raise TrackingUnavailableError(f"MLflow tracking server {uri} is unreachable ({_brief(error)}); "
                                       f"progress is kept in {journal.path}: run the import again") from error
    return {"run_id": run_id, "tracking_uri": uri, "metrics": journal.sent["metric"],
            "artifacts": journal.sent["file"] + journal.sent["text"], "status": journal.status_sent}
