"""MLflow tracking from the driver only, batched.

Workers return metric dicts with their data; only the Learner's driver talks to MLflow
(platform.md §5.4: each worker would otherwise pay an mlflow import, ~1.5 s and ~170 MB, and
~3 ms per call on a sqlite file shared across processes, which breaks on multi-node clusters).

* Everything goes through :class:`mlflow.MlflowClient`, never the fluent API: no global
  "active run", so several trackers (and tests) do not interfere.
* :meth:`Tracker.log_metrics` only appends to a list; :meth:`Tracker.flush` writes with
  ``log_batch`` in chunks of 1000. Measured (platform.md §5.2, sqlite): ``log_metric`` ~3 ms per
  point, ``log_batch`` ~0.08 ms per point.
* ``import mlflow`` costs ~1.2-1.6 s (platform.md §5.5), so it happens lazily inside the methods,
  never when this module is imported; a disabled tracker never imports it.

Example::

    with Tracker(experiment="cartpole") as tracker:
        tracker.start(to_flat_dict(cfg))
        for it in range(n):
            tracker.log_metrics({"loss": loss, "fps": fps}, step=it)
            if it % 10 == 0:
                tracker.flush()
    # leaving the block flushes and ends the run: FINISHED, FAILED on an exception,
    # KILLED on Ctrl-C

Non-finite values (a diverging run must show it, not hide it):

* NaN is logged as NaN: MLflow's SQL store keeps it as ``value=0, is_nan=True`` and gives NaN back
  (``SqlAlchemyStore.sanitize_metric_value`` and ``SqlMetric.to_mlflow_entity``, in
  ``mlflow/store/tracking/sqlalchemy_store.py`` and ``mlflow/store/tracking/dbmodels/models.py``);
  over HTTP it travels as the JSON string ``"NaN"`` (protobuf's JSON mapping,
  https://protobuf.dev/programming-guides/json/).
* +-inf is logged as +-``sys.float_info.max`` (1.7976931348623157e308): the SQL store cannot hold
  inf and writes exactly that itself (same function), so a run reads back the same whatever the
  store, and the fallback file below stays standard JSON. A value at +-1.8e308 means +-inf.
* Each :meth:`Tracker.log_metrics` call that holds non-finite values also logs the running count
  of them, :data:`NONFINITE_METRIC` (``nonfinite_metric_values``), at that step: a chart of when and
  how often; a run without that metric had none.

Tracking-server outages (an ``http(s)://`` server stopped, restarted or unreachable mid-run):

* Training goes on. The first failed write warns once (:class:`TrackingOutageWarning`, naming the
  URI); metric points stay buffered, artifacts written meanwhile are queued, and the writes are
  retried at later :meth:`Tracker.flush` calls with a backoff (2 s doubling to 60 s), so a dead
  server is not asked on every step. When it answers again everything is written, in order.
* Memory stays bounded: past ``max_buffered`` points the buffer is spilled to
  ``<fallback_dir>/<run id>/mlflow-fallback/metrics.jsonl`` and replayed from there on recovery.
* Still down at :meth:`Tracker.end`: the rest (metrics, queued artifacts, final status) goes to that
  fallback folder, and a warning says so; ``colonyrl tracking-import FOLDER``
  (:func:`import_fallback`) replays it into the run once the server is back.
* MLflow's own HTTP retries (7 retries with exponential backoff, ~4 min per failed call, and a
  120 s timeout) would stall the training loop at every flush; the tracker's calls run with
  1 retry and a 10 s timeout instead (:data:`HTTP_SETTINGS`; ``MLFLOW_HTTP_REQUEST_*`` variables
  set by the user win). A refused connection then fails in milliseconds.
* The run must be created on the server: a server that is unreachable at :meth:`Tracker.start`
  raises :class:`TrackingUnavailableError` at once, before any worker starts, rather than training
  a run nobody can find (train with ``--no-track`` to run without a server).

Not thread-safe: call it from one (driver) thread. The shortened HTTP settings are applied to
``os.environ`` for the duration of each call (MLflow reads them per request and has no per-client
setting), so MLflow calls made meanwhile from other threads of this process see them too.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = ["Tracker", "TrackingOutageWarning", "TrackingUnavailableError", "FallbackImportError",
           "import_fallback", "read_run", "HTTP_SETTINGS", "FALLBACK_FOLDER", "NONFINITE_METRIC", "FLOAT_MAX"]

_log = logging.getLogger(__name__)

# MLflow's limits (mlflow/utils/validation.py, 3.17; the LogBatch REST spec
# https://docs.databricks.com/api/experiments/v1/log-batch): copied, so that this module stays
# import-free; the test checks they still match the installed MLflow.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000

# mlflow.utils.validation.validate_param_and_metric_name (non-Windows): alphanumerics, "_", "-",
# ".", " ", ":" and "/"; plus path_not_unique: the name must be a normalized relative path.
_NAME_RE = re.compile(r"^[/\w.\- :]+$")

Status = Literal["FINISHED", "FAILED", "KILLED"]
_STATUSES = ("FINISHED", "FAILED", "KILLED")

#: MLflow HTTP client settings for the tracker's calls. MLflow's defaults (7 retries, backoff factor
#: 2, 120 s timeout) make one call to a stopped server block for ~4 minutes; with these a refused
#: connection fails in milliseconds and a silent (firewalled) host within 2 x 10 s. The one retry
#: (urllib3 makes it at once) covers a pooled connection the server closed; waiting for a restart is
#: the tracker's own backoff between flushes. Variables the user set in the environment win.
HTTP_SETTINGS: dict[str, str] = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

#: The metric that counts the non-finite (NaN/inf) values logged so far in the run.
NONFINITE_METRIC = "nonfinite_metric_values"
#: What +-inf is logged as: the value MLflow's SQL store writes for it (see the module docstring).
FLOAT_MAX = sys.float_info.max

#: The fallback folder's name, inside ``<fallback_dir>/<run id>/``.
FALLBACK_FOLDER = "mlflow-fallback"
_FALLBACK_FORMAT = 1


class TrackingUnavailableError(RuntimeError):
    """The tracking server could not be reached where it is needed: creating (or reopening) the run,
    or importing a fallback folder."""


class FallbackImportError(RuntimeError):
    """A fallback folder that cannot be imported: missing, malformed, or imported already."""


class TrackingOutageWarning(UserWarning):
    """The tracking server stopped answering mid-run (training goes on), or a fallback was written."""


@contextlib.contextmanager
def _short_http() -> Iterator[None]:
    """Apply :data:`HTTP_SETTINGS` to the environment for one block of MLflow calls (MLflow reads the
    variables per request), leaving variables the user set alone."""
    added = [k for k in HTTP_SETTINGS if k not in os.environ]
    for k in added:
        os.environ[k] = HTTP_SETTINGS[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _is_unreachable(e: BaseException) -> bool:
    """True for errors that mean "the tracking server is not answering" and are worth retrying.

    With an ``http://`` URI, MLflow 3.x wraps connection refused, DNS failures, timeouts and
    exhausted retries into an ``MlflowException`` with error code INTERNAL_ERROR (HTTP 500), and an
    artifact upload can raise ``requests.HTTPError`` for a 5xx answer (a proxy in front of a dead
    server). Server-side errors (5xx) and rate limits (429) are retried too; a 4xx answer means a
    request the server rejected (bad name, deleted run): retrying would not help, so it raises.
    """
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else 500
        return code >= 500 or code == 429
    if isinstance(e, (ConnectionError, TimeoutError, requests.RequestException)):
        return True
    if isinstance(e, MlflowException):
        code = e.get_http_status_code()
        return code >= 500 or code == 429
    return False


def _brief(e: BaseException) -> str:
    """The first line of an error, cut: MLflow's messages repeat the whole urllib3 chain."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _render_dict(obj: dict[str, Any], artifact_file: str) -> str:
    """``obj`` as ``MlflowClient.log_dict`` writes it (YAML for .yaml/.yml, else indented JSON), so a
    dict queued during an outage becomes exactly the file the server would have received."""
    if os.path.splitext(artifact_file)[1] in (".yml", ".yaml"):
        import yaml

        return yaml.dump(obj, indent=2, default_flow_style=False)
    return json.dumps(obj, indent=2, default=str)


@dataclasses.dataclass(frozen=True)
class _QueuedArtifact:
    """An artifact write that waits for the server: ``text`` lands at ``artifact_file``; a local
    ``path`` (file or folder) is copied under ``artifact_path``."""

    artifact_file: str | None = None
    text: str | None = None
    path: str | None = None
    artifact_path: str | None = None


def _check_metric_name(name: str) -> None:
    """Raise ValueError now for a name MLflow would reject at flush time (and lose the batch)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"metric name {name!r}: names may only contain alphanumerics, '_', '-', '.', "
                         "' ', ':' and '/'")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise ValueError(f"metric name {name!r} must be a normalized relative path (it would be {norm!r})")


def _finite_or_nan(v: float) -> float:
    """``v``, with +-inf as +-:data:`FLOAT_MAX` (NaN stays NaN)."""
    return math.copysign(FLOAT_MAX, v) if math.isinf(v) else v


def _to_json(v: float) -> float | str:
    """A metric value for ``metrics.jsonl``: non-finite ones as the strings of protobuf's JSON mapping
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), as MLflow's REST API sends them, since standard
    JSON has no NaN (Python's ``json`` would write bare ``NaN`` tokens that jq and others reject)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _from_json(v: float | str) -> float:
    """The inverse of :func:`_to_json`; also reads the bare ``NaN``/``Infinity`` tokens ``json.loads``
    accepts (files written before non-finite values were logged)."""
    return _finite_or_nan(float(v))


def _metric_from_json(m: Mapping[str, Any]) -> Any:
    from mlflow.entities import Metric

    return Metric(m["key"], _from_json(m["value"]), m["timestamp"], m["step"])


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of ``size`` items (the last may be shorter), from any iterable (itertools.batched is 3.12+)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Tracker:
    """One MLflow run, written from the driver in batches, surviving tracking-server outages.

    Args:
        tracking_uri: Where to track. None: ``MLFLOW_TRACKING_URI`` if set, else MLflow's own
            default, which in MLflow 3.x is ``sqlite:///<cwd>/mlflow.db`` (platform.md §5.1).
        experiment: The experiment's name; created when missing.
        run_name: The new run's name (None: MLflow picks one). Ignored when resuming.
        enabled: False makes every method a no-op that never imports mlflow (tests, ``--no-track``).
        artifact_location: Artifact root for a *newly created* experiment (None: MLflow's default,
            ``./mlruns`` in the working folder for a sqlite store). An existing experiment keeps its own.
        fallback_dir: Where writes the server did not take go during an outage:
            ``<fallback_dir>/<run id>/mlflow-fallback/`` (``train`` passes its output dir, so the
            fallback lies beside the saved model).
        max_buffered: Metric points kept in memory while the server is down; beyond it the buffer
            is spilled to the fallback folder's ``metrics.jsonl`` (a long outage must not grow the
            driver's memory without bound).
        retry_min_s, retry_max_s: Backoff between write attempts while the server is down: the
            first retry after ``retry_min_s``, then doubling up to ``retry_max_s``.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "colonyrl",
        run_name: str | None = None,
        enabled: bool = True,
        artifact_location: str | None = None,
        fallback_dir: str | Path = "runs",
        max_buffered: int = 100_000,
        retry_min_s: float = 2.0,
        retry_max_s: float = 60.0,
    ) -> None:
        if max_buffered < 1 or retry_min_s <= 0 or retry_max_s < retry_min_s:
            raise ValueError("Tracker: max_buffered >= 1 and 0 < retry_min_s <= retry_max_s")
        self.enabled = enabled
        self.experiment = experiment
        self.run_name = run_name
        self.artifact_location = artifact_location
        self.fallback_dir = Path(fallback_dir)
        self.max_buffered = max_buffered
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._experiment_id: str | None = None
        self._artifact_uri: str | None = None
        self._active = False
        # (key, value, timestamp_ms, step), written by flush()
        self._buffer: list[tuple[str, float, int, int]] = []
        self._known_names: set[str] = set()
        # Outage state: artifacts waiting for the server; points spilled to metrics.jsonl (older
        # than everything in _buffer) and how many of those the server already took.
        self._queued: list[_QueuedArtifact] = []
        self._spilled = 0
        self._spill_written = 0
        self._down_since: float | None = None
        self._next_retry = 0.0
        self._retry_delay = retry_min_s
        #: How many non-finite (NaN/inf) metric values the run logged so far (a resumed run goes on
        #: from its last :data:`NONFINITE_METRIC`).
        self.nonfinite_values = 0
        #: How many outages this tracker went through (each warned once).
        self.outages = 0
        self._fallback: Path | None = None
        #: The fallback folder end() wrote because the server was still down; None otherwise.
        self.fallback_written: Path | None = None

    # ----------------------------------------------------------------------------- properties
    @property
    def run_id(self) -> str | None:
        """The run's ID once :meth:`start` returned (kept after :meth:`end`); None when disabled."""
        return self._run_id

    @property
    def artifact_uri(self) -> str | None:
        """The run's artifact root (e.g. ``/abs/mlruns/<exp>/<run>/artifacts``); None before start."""
        return self._artifact_uri

    @property
    def experiment_id(self) -> str | None:
        return self._experiment_id

    @property
    def tracking_uri(self) -> str | None:
        """The tracking URI: resolved to MLflow's default at :meth:`start` when none was given."""
        return self._uri

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`end`."""
        return self._active

    @property
    def pending(self) -> int:
        """Metric points not yet written to the server (in memory or spilled to disk)."""
        return len(self._buffer) + self._spilled - self._spill_written

    @property
    def pending_artifacts(self) -> int:
        """Artifact writes queued during an outage."""
        return len(self._queued)

    @property
    def server_down(self) -> bool:
        """True from a write that found the server unreachable until one succeeds again."""
        return self._down_since is not None

    @property
    def fallback_path(self) -> Path | None:
        """``<fallback_dir>/<run id>/mlflow-fallback``: where spilled points and, if the server is
        still down at the end, the rest of the run go. None before :meth:`start`. A resumed run
        whose earlier fallback was never imported gets ``mlflow-fallback-2`` (and so on), so the
        two sessions' leftovers are not mixed."""
        return self._fallback

    # ----------------------------------------------------------------------------- run life cycle
    def _connect(self) -> MlflowClient:
        if self._client is None:
            import mlflow  # lazy: ~1.5 s (platform.md §5.5)

            if self._uri is None:
                self._uri = mlflow.get_tracking_uri()  # MLflow's own default
            self._client = mlflow.MlflowClient(tracking_uri=self._uri)
        return self._client

    def _experiment(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
            except MlflowException as e:  # created meanwhile by another process
                if _is_unreachable(e):
                    raise
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"MLflow experiment {self.experiment!r} is deleted: restore it "
                f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or use another name"
            )
        return exp.experiment_id

    def start(
        self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> str | None:
        """Start a new run, or reopen ``run_id`` (resume), and log ``params`` and ``tags``.

        Params are ``str()``-ed, cut to MLflow's 6000 characters and sent 100 per request (the
        LogBatch limit). MLflow params are write-once: on resume, keys already logged are skipped,
        and keys whose value changed keep their old value with a warning. Returns the run ID
        (None when disabled).

        Raises :class:`TrackingUnavailableError` when the server does not answer (in milliseconds
        for a refused connection, ~20 s for a host that drops packets, not MLflow's ~4 min of
        retries): the run has to exist before training, and failing here happens before any
        worker starts (a run already created by then stays RUNNING on the server).
        """
        if not self.enabled:
            return None
        if self._active:
            raise RuntimeError(f"Tracker already has an active run {self._run_id}; end() it first")
        client = self._connect()
        try:
            with _short_http():
                self._start(client, params, tags, run_id)
        except Exception as e:
            if not _is_unreachable(e):
                raise
            raise TrackingUnavailableError(
                f"MLflow tracking server {self._uri} is unreachable ({_brief(e)}): start it, point "
                "--tracking-uri (or MLFLOW_TRACKING_URI) at one that runs, or train with --no-track"
            ) from e
        assert self._run_id is not None
        base, name, n = self.fallback_dir / self._run_id, FALLBACK_FOLDER, 1
        while (base / name).exists():
            n += 1
            name = f"{FALLBACK_FOLDER}-{n}"
        self._fallback = base / name
        self._active = True
        return self._run_id

    def _start(self, client: MlflowClient, params: Mapping[str, Any], tags: Mapping[str, str] | None,
               run_id: str | None) -> None:
        from mlflow.entities import Param, RunTag

        user_tags = {str(k): str(v)[:MAX_TAG_VAL_LENGTH] for k, v in (tags or {}).items()}
        values = {str(k): str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
        if run_id is None:
            exp_id = self._experiment(client)
            run_tags = dict(user_tags)
            try:  # what mlflow.start_run adds: user, source name/type, git commit (~0.05 s)
                from mlflow.tracking.context.registry import resolve_tags

                run_tags = resolve_tags(run_tags)
            except Exception as e:  # never fail a run over provenance tags
                _log.debug("mlflow context tags unavailable: %r", e)
            run = client.create_run(exp_id, tags=run_tags, run_name=self.run_name)
            to_log = values
        else:
            run = client.get_run(run_id)  # raises MlflowException for an unknown ID
            if run.info.lifecycle_stage == "deleted":
                raise RuntimeError(f"cannot resume MLflow run {run_id}: it is deleted")
            # the fluent start_run(run_id=...) does the same: status back to RUNNING
            client.update_run(run_id, status="RUNNING")
            old = run.data.params
            changed = sorted(k for k, v in values.items() if k in old and old[k] != v)
            if changed:
                warnings.warn(
                    f"resuming MLflow run {run_id}: params are write-once, keeping the old values of "
                    f"{changed}", stacklevel=3,
                )
            to_log = {k: v for k, v in values.items() if k not in old}
            if user_tags:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in user_tags.items()])
        self._run_id = run.info.run_id
        self._experiment_id = run.info.experiment_id
        self.nonfinite_values = int(run.data.metrics.get(NONFINITE_METRIC, 0)) if run_id is not None else 0
        self._artifact_uri = run.info.artifact_uri
        for chunk in _batched(list(to_log.items()), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self._run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step`` (no I/O); a name MLflow would reject raises ValueError here.

        NaN is logged as NaN, +-inf as +-:data:`FLOAT_MAX` (what MLflow's SQL store makes of it); they
        are counted in :attr:`nonfinite_values`, which is logged as :data:`NONFINITE_METRIC` at this
        step when it grew."""
        if not self.enabled:
            return
        if not self._active:
            raise RuntimeError("Tracker.log_metrics before start() or after end()")
        ts = int(time.time() * 1000)
        step = int(step)
        nonfinite = 0
        for key, value in metrics.items():
            if key not in self._known_names:
                if key == NONFINITE_METRIC:
                    raise ValueError(f"metric name {key!r} is reserved: the tracker logs it (the count of "
                                     "NaN/inf values)")
                _check_metric_name(key)
                self._known_names.add(key)
            v = float(value)  # numpy scalars and 0-d tensors too
            if not math.isfinite(v):
                nonfinite += 1
                v = _finite_or_nan(v)
            self._buffer.append((key, v, ts, step))
        if nonfinite:
            self.nonfinite_values += nonfinite
            self._buffer.append((NONFINITE_METRIC, float(self.nonfinite_values), ts, step))

    def flush(self) -> None:
        """Write what is pending: spilled points, buffered points (``log_batch``, 1000 per request),
        then queued artifacts, in that order.

        While the server is down this returns at once until the next retry is due (spilling the
        buffer to disk past ``max_buffered`` points); a failed retry costs one refused connection
        (milliseconds; at most ~20 s against a host that drops packets). Errors other than an
        unreachable server (a request the server rejects) propagate, with the unwritten points
        still buffered.
        """
        if not self.enabled or self._run_id is None:
            return
        if not self.pending and not self._queued:
            return
        if self._down_since is not None and time.monotonic() < self._next_retry:
            self._spill_if_full()
            return
        client = self._connect()
        try:
            with _short_http():
                self._write_spilled(client)
                self._write_buffer(client)
                self._write_queued(client)
        except Exception as e:
            if not _is_unreachable(e):
                raise
            self._went_down(e)
            self._spill_if_full()
            return
        if self._down_since is not None:
            self._came_back()

    def end(self, status: Status = "FINISHED") -> None:
        """Flush, then end the run with ``status``. Does nothing when no run is active.

        If the server is (still) unreachable, one last attempt is made at once, whatever the
        backoff says; if that fails too, what is left goes to :attr:`fallback_path` (see
        :meth:`_write_fallback`) and a :class:`TrackingOutageWarning` names the command that
        imports it.
        """
        if status not in _STATUSES:
            raise ValueError(f"status={status!r}: allowed one of {_STATUSES}")
        if not self.enabled or not self._active:
            return
        self._active = False
        end_time = int(time.time() * 1000)
        self._next_retry = 0.0  # the last chance: do not wait for the backoff
        try:
            self.flush()
        finally:
            # Skip the status only when the flush just found the server down (it would fail the same
            # way); after an unrelated flush error the run is still ended, as before.
            if self._down_since is None or (not self.pending and not self._queued):
                try:
                    with _short_http():
                        self._connect().set_terminated(self._run_id, status=status, end_time=end_time)
                except Exception as e:
                    if not _is_unreachable(e):
                        raise
                    self._went_down(e)
                else:
                    if self._down_since is not None:
                        self._came_back()
            if self._down_since is not None:
                self._write_fallback(status, end_time)

    # ----------------------------------------------------------------------------- outage handling
    def _write_buffer(self, client: MlflowClient) -> None:
        from mlflow.entities import Metric

        pending, self._buffer = self._buffer, []
        done = 0
        try:
            for chunk in _batched(pending, MAX_METRICS_PER_BATCH):
                client.log_batch(self._run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in chunk])
                done += len(chunk)
        finally:
            if done < len(pending):
                self._buffer = pending[done:] + self._buffer

    def _spill_file(self) -> Path:
        assert self.fallback_path is not None
        return self.fallback_path / "metrics.jsonl"

    def _write_spilled(self, client: MlflowClient) -> None:
        """Replay ``metrics.jsonl`` (from line ``_spill_written`` on), 1000 points per request."""
        if self._spill_written >= self._spilled:
            return
        skip = self._spill_written
        with self._spill_file().open() as f:
            lines = (json.loads(line) for i, line in enumerate(f) if i >= skip)
            for chunk in _batched(lines, MAX_METRICS_PER_BATCH):
                client.log_batch(self._run_id, metrics=[_metric_from_json(m) for m in chunk])
                self._spill_written += len(chunk)
        self._spill_file().unlink()
        self._spilled = self._spill_written = 0

    def _write_queued(self, client: MlflowClient) -> None:
        while self._queued:
            self._write_artifact(client, self._queued[0])
            self._queued.pop(0)

    def _write_artifact(self, client: MlflowClient, item: _QueuedArtifact) -> None:
        assert self._run_id is not None
        if item.text is not None:
            client.log_text(self._run_id, item.text, item.artifact_file)
        elif item.path is not None and os.path.exists(item.path):
            client.log_artifact(self._run_id, item.path, item.artifact_path)
        else:  # removed while the server was down: nothing left to send
            warnings.warn(f"Tracker: {item.path} no longer exists; it was not logged to MLflow run "
                          f"{self._run_id}", TrackingOutageWarning, stacklevel=4)

    def _went_down(self, e: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._retry_delay = self.retry_min_s
            self.outages += 1
            warnings.warn(
                f"MLflow tracking server {self._uri} is unreachable ({_brief(e)}). Training goes on: "
                f"metrics and artifacts of run {self._run_id} are buffered (past {self.max_buffered:,} "
                f"points in {self.fallback_path}) and written when the server answers again "
                f"(retried every {self.retry_min_s:g}-{self.retry_max_s:g} s).",
                TrackingOutageWarning, stacklevel=4,
            )
        else:
            self._retry_delay = min(2 * self._retry_delay, self.retry_max_s)
        self._next_retry = now + self._retry_delay

    def _came_back(self) -> None:
        assert self._down_since is not None
        _log.info("MLflow tracking server %s answers again after %.1f s; run %s is up to date",
                  self._uri, time.monotonic() - self._down_since, self._run_id)
        self._down_since = None
        self._retry_delay = self.retry_min_s
        folder = self.fallback_path
        if folder is not None and folder.is_dir():  # only the spill's run.json can be left
            (folder / "run.json").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _fallback_meta(self, status: Status | None = None, end_time: int | None = None) -> None:
        """Write ``run.json``: which run (and server) the folder belongs to, and how it ended."""
        assert self.fallback_path is not None
        meta = {"format": _FALLBACK_FORMAT, "run_id": self._run_id, "experiment_id": self._experiment_id,
                "tracking_uri": self._uri, "status": status, "end_time": end_time,
                "metrics": self._spilled}
        path = self.fallback_path / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path)  # a crash mid-write leaves the previous run.json, not half of one

    def _spill(self) -> None:
        """Append the buffer to ``metrics.jsonl`` and empty it; the file stays older than the buffer."""
        if not self._buffer:
            return
        self._spill_file().parent.mkdir(parents=True, exist_ok=True)
        with self._spill_file().open("a") as f:
            for k, v, ts, s in self._buffer:
                f.write(json.dumps({"key": k, "value": _to_json(v), "timestamp": ts, "step": s},
                                   allow_nan=False) + "\n")
        self._spilled += len(self._buffer)
        self._buffer = []
        self._fallback_meta()  # so that even a crash leaves a folder import_fallback understands

    def _spill_if_full(self) -> None:
        if len(self._buffer) > self.max_buffered:
            self._spill()

    def _write_fallback(self, status: Status, end_time: int) -> None:
        """Leave everything the server did not take in :attr:`fallback_path`, for :func:`import_fallback`:

        * ``run.json``: run ID, experiment, tracking URI, final status and end time;
        * ``metrics.jsonl``: the points not written, one JSON object per line, in logging order
          (``{"key", "value", "timestamp", "step"}``; a NaN value is the string ``"NaN"``);
        * ``artifacts/``: queued artifacts at their artifact paths (files copied now, since the
          originals may be removed before the server returns).
        """
        folder = self.fallback_path
        assert folder is not None
        if self._spill_written:  # a replay stopped half-way: drop the lines the server has
            spill = self._spill_file()
            tmp = spill.with_suffix(".tmp")
            with spill.open() as src, tmp.open("w") as dst:
                dst.writelines(line for i, line in enumerate(src) if i >= self._spill_written)
            tmp.replace(spill)
            self._spilled -= self._spill_written
            self._spill_written = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._spill()
        artifacts = folder / "artifacts"
        for item in self._queued:
            if item.text is not None and item.artifact_file is not None:
                target = artifacts / item.artifact_file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(item.text)
            elif item.path is not None and os.path.exists(item.path):
                target = artifacts / (item.artifact_path or "") / os.path.basename(os.path.normpath(item.path))
                target.parent.mkdir(parents=True, exist_ok=True)
                if os.path.isdir(item.path):
                    shutil.copytree(item.path, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(item.path, target)
        count = len(self._queued)
        self._queued = []
        self._fallback_meta(status, end_time)
        self.fallback_written = folder
        warnings.warn(
            f"MLflow tracking server {self._uri} was still unreachable when run {self._run_id} ended: "
            f"{self._spilled:,} metric points, {count} artifacts and the status {status} were written to "
            f"{folder}. Once the server is back, import them with: colonyrl tracking-import {folder}",
            TrackingOutageWarning, stacklevel=4,
        )

    # ----------------------------------------------------------------------------- artifacts
    def _need_run(self) -> MlflowClient:
        if self._run_id is None:
            raise RuntimeError("Tracker: start() a run before logging artifacts")
        return self._connect()

    def _log_artifact(self, item: _QueuedArtifact) -> None:
        """Write now, or queue while the server is down (and while earlier writes wait, to keep
        their order). After :meth:`end` nothing is queued any more: errors propagate."""
        client = self._need_run()
        if not self._active or (self._down_since is None and not self._queued):
            try:
                with _short_http():
                    self._write_artifact(client, item)
                return
            except Exception as e:
                if not self._active or not _is_unreachable(e):
                    raise
                self._went_down(e)
        self._queued.append(item)
        self.flush()  # a retry, if one is due

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        """Write ``obj`` as ``artifact_file`` (JSON, or YAML for ``.yaml``/``.yml``)."""
        if self.enabled:
            self._log_artifact(_QueuedArtifact(artifact_file=artifact_file, text=_render_dict(obj, artifact_file)))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as ``artifact_file`` in the run's artifacts."""
        if self.enabled:
            self._log_artifact(_QueuedArtifact(artifact_file=artifact_file, text=text))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file (or folder) into the run's artifacts, under ``artifact_path``.

        During an outage the file is sent when the server returns, so it must stay in place until
        then (it is copied into the fallback folder if the server is still down at :meth:`end`)."""
        if self.enabled:
            if not os.path.exists(local_path):  # here, not at a retry minutes later
                raise FileNotFoundError(f"Tracker.log_artifact: {local_path} does not exist")
            self._log_artifact(_QueuedArtifact(path=os.path.abspath(local_path), artifact_path=artifact_path))

    # ----------------------------------------------------------------------------- context manager
    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End the run: FINISHED, KILLED on KeyboardInterrupt, FAILED on any other exception."""
        if exc_type is None:
            self.end("FINISHED")
            return
        status: Status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.end(status)
        except Exception:  # do not hide the exception that is propagating
            _log.exception("Tracker: could not end MLflow run %s as %s", self._run_id, status)


def _find_fallback(path: str | Path) -> Path:
    """The fallback folder itself, or the run folder (``<output_dir>/<run id>``) that holds one."""
    folder = Path(path)
    if not (folder / "run.json").is_file() and (folder / FALLBACK_FOLDER / "run.json").is_file():
        folder = folder / FALLBACK_FOLDER
    if not (folder / "run.json").is_file():
        raise FallbackImportError(f"{path} is not an MLflow fallback folder (no run.json in it or in "
                                  f"{Path(path) / FALLBACK_FOLDER})")
    return folder


def import_fallback(path: str | Path, tracking_uri: str | None = None, force: bool = False) -> dict[str, Any]:
    """Replay a fallback folder written by :meth:`Tracker.end` into its MLflow run.

    Args:
        path: The ``mlflow-fallback`` folder, or the run folder (``<output_dir>/<run id>``) holding it.
        tracking_uri: Where the run lives (None: the URI the run was tracked to, from ``run.json``).
        force: Import again a folder that was imported already.

    Metrics go first (in logging order, 1000 per request), then the artifacts, then the final
    status and end time. Progress is saved in ``imported.json`` after each step, so an import that
    the server interrupts continues where it stopped when run again, without duplicating points.

    Returns ``{"run_id", "tracking_uri", "metrics", "artifacts", "status"}`` (counts of what was sent).
    Raises :class:`FallbackImportError` for a folder that is not one (or was imported, without
    ``force``) and :class:`TrackingUnavailableError` when the server does not answer.
    """
    folder = _find_fallback(path)
    try:
        meta = json.loads((folder / "run.json").read_text())
        run_id, uri = meta["run_id"], tracking_uri or meta["tracking_uri"]
    except (ValueError, KeyError) as e:
        raise FallbackImportError(f"{folder / 'run.json'} is malformed: {e!r}") from e
    progress_file = folder / "imported.json"
    progress: dict[str, Any] = {"metrics": 0, "artifacts": False, "status": False, "done": False}
    if progress_file.is_file() and not force:
        progress.update(json.loads(progress_file.read_text()))
        if progress["done"]:
            raise FallbackImportError(f"{folder} was already imported into run {run_id} at {progress['tracking_uri']}; "
                                      "pass force=True (--force) to import it again")
    progress["tracking_uri"] = uri

    def save() -> None:
        progress_file.write_text(json.dumps(progress, indent=2))

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    sent = {"metrics": 0, "artifacts": 0}

    def step(fn: Callable[[], None]) -> None:
        try:
            with _short_http():
                fn()
        except Exception as e:
            if not _is_unreachable(e):
                raise
            raise TrackingUnavailableError(f"MLflow tracking server {uri} is unreachable ({_brief(e)}); "
                                           f"progress is kept in {progress_file}: run the import again") from e

    def metrics() -> None:
        client.get_run(run_id)  # an unknown run fails here, before anything is sent
        file = folder / "metrics.jsonl"
        if not file.is_file():
            return
        skip = progress["metrics"]
        with file.open() as f:
            lines = (json.loads(line) for i, line in enumerate(f) if i >= skip)
            for chunk in _batched(lines, MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=[_metric_from_json(m) for m in chunk])
                progress["metrics"] += len(chunk)
                sent["metrics"] += len(chunk)
                save()

    def artifacts() -> None:
        if (folder / "artifacts").is_dir() and not progress["artifacts"]:
            client.log_artifacts(run_id, str(folder / "artifacts"))
            sent["artifacts"] = sum(1 for p in (folder / "artifacts").rglob("*") if p.is_file())
        progress["artifacts"] = True
        save()

    def status() -> None:
        if meta.get("status") and not progress["status"]:
            client.set_terminated(run_id, status=meta["status"], end_time=meta.get("end_time"))
        progress["status"] = True
        save()

    for fn in (metrics, artifacts, status):
        step(fn)
    progress["done"] = True
    save()
    return {"run_id": run_id, "tracking_uri": uri, "status": meta.get("status"), **sent}


def read_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """What a run holds, for tests and inspection.

    Returns ``{"status", "experiment_id", "run_name", "params": {k: v}, "tags": {k: v},
    "metrics": {key: history length}, "artifacts": [file paths, recursive, sorted]}``.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    metrics = {key: len(client.get_metric_history(run_id, key)) for key in sorted(run.data.metrics)}

    def walk(path: str | None) -> list[str]:
        out: list[str] = []
        for info in client.list_artifacts(run_id, path):
            out.extend(walk(info.path) if info.is_dir else [info.path])
        return out

    return {
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "run_name": run.info.run_name,
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": metrics,
        "artifacts": sorted(walk(None)),
    }
