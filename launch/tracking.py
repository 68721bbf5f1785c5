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

Not thread-safe: call it from one (driver) thread.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = ["Tracker", "read_run"]

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


def _check_metric_name(name: str) -> None:
    """Raise ValueError now for a name MLflow would reject at flush time (and lose the batch)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"metric name {name!r}: names may only contain alphanumerics, '_', '-', '.', "
                         "' ', ':' and '/'")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise ValueError(f"metric name {name!r} must be a normalized relative path (it would be {norm!r})")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Tracker:
    """One MLflow run, written from the driver in batches.

    Args:
        tracking_uri: Where to track. None: ``MLFLOW_TRACKING_URI`` if set, else MLflow's own
            default, which in MLflow 3.x is ``sqlite:///<cwd>/mlflow.db`` (platform.md §5.1).
        experiment: The experiment's name; created when missing.
        run_name: The new run's name (None: MLflow picks one). Ignored when resuming.
        enabled: False makes every method a no-op that never imports mlflow (tests, ``--no-track``).
        artifact_location: Artifact root for a *newly created* experiment (None: MLflow's default,
            ``./mlruns`` in the working folder for a sqlite store). An existing experiment keeps its own.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "colonyrl",
        run_name: str | None = None,
        enabled: bool = True,
        artifact_location: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.experiment = experiment
        self.run_name = run_name
        self.artifact_location = artifact_location
        self._uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._experiment_id: str | None = None
        self._artifact_uri: str | None = None
        self._active = False
        # (key, value, timestamp_ms, step), written by flush()
        self._buffer: list[tuple[str, float, int, int]] = []
        self._known_names: set[str] = set()
        #: How many non-finite (NaN/inf) metric values log_metrics skipped.
        self.skipped_nonfinite = 0

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
        """Metric points buffered and not yet flushed."""
        return len(self._buffer)

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
            except MlflowException:  # created meanwhile by another process
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
        """
        if not self.enabled:
            return None
        if self._active:
            raise RuntimeError(f"Tracker already has an active run {self._run_id}; end() it first")
        from mlflow.entities import Param, RunTag

        client = self._connect()
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
                    f"{changed}", stacklevel=2,
                )
            to_log = {k: v for k, v in values.items() if k not in old}
            if user_tags:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in user_tags.items()])
        self._run_id = run.info.run_id
        self._experiment_id = run.info.experiment_id
        self._artifact_uri = run.info.artifact_uri
        self._active = True
        for chunk in _chunks(list(to_log.items()), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self._run_id, params=[Param(k, v) for k, v in chunk])
        return self._run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step`` (no I/O). NaN/inf values are skipped and counted in
        :attr:`skipped_nonfinite`; a name MLflow would reject raises ValueError here."""
        if not self.enabled:
            return
        if not self._active:
            raise RuntimeError("Tracker.log_metrics before start() or after end()")
        ts = int(time.time() * 1000)
        step = int(step)
        for key, value in metrics.items():
            if key not in self._known_names:
                _check_metric_name(key)
                self._known_names.add(key)
            v = float(value)  # numpy scalars and 0-d tensors too
            if not math.isfinite(v):
                self.skipped_nonfinite += 1
                continue
            self._buffer.append((key, v, ts, step))

    def flush(self) -> None:
        """Write the buffered metrics with ``MlflowClient.log_batch``, 1000 per request.

        On an error the points not yet written stay buffered (and the error propagates)."""
        if not self.enabled or not self._buffer:
            return
        from mlflow.entities import Metric

        client = self._connect()
        pending, self._buffer = self._buffer, []
        done = 0
        try:
            for chunk in _chunks(pending, MAX_METRICS_PER_BATCH):
                client.log_batch(self._run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in chunk])
                done += len(chunk)
        finally:
            if done < len(pending):
                self._buffer = pending[done:] + self._buffer

    def end(self, status: Status = "FINISHED") -> None:
        """Flush, then end the run with ``status``. Does nothing when no run is active."""
        if status not in _STATUSES:
            raise ValueError(f"status={status!r}: allowed one of {_STATUSES}")
        if not self.enabled or not self._active:
            return
        try:
            self.flush()
        finally:
            self._active = False
            self._connect().set_terminated(self._run_id, status=status)

    # ----------------------------------------------------------------------------- artifacts
    def _need_run(self) -> MlflowClient:
        if self._run_id is None:
            raise RuntimeError("Tracker: start() a run before logging artifacts")
        return self._connect()

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        """Write ``obj`` as ``artifact_file`` (JSON, or YAML for ``.yaml``/``.yml``)."""
        if self.enabled:
            self._need_run().log_dict(self._run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as ``artifact_file`` in the run's artifacts."""
        if self.enabled:
            self._need_run().log_text(self._run_id, text, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file (or folder) into the run's artifacts, under ``artifact_path``."""
        if self.enabled:
            self._need_run().log_artifact(self._run_id, str(local_path), artifact_path)

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
