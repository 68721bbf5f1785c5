"""MLflow's system metrics of the driver, beside a tracked run: CPU, memory, disk, network, and GPU
where pynvml is installed.

It is the sampling thread that ``mlflow.start_run(log_system_metrics=True)`` starts
(https://mlflow.org/docs/latest/ml/tracking/system-metrics/), started for a run the
:class:`~colonyrl.launch.tracking.Tracker` created through ``MlflowClient``. It posts to the server
itself, not through the tracker's journal: during an outage its samples are lost (nothing the
tracker journals is), and stopping it must not wait for MLflow's own retries.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["SystemMetrics", "STOP_WAIT_S"]

#: The longest a run's end waits for the thread's last sample.
STOP_WAIT_S = 10.0


class SystemMetrics:
    """Samples the driver into run ``run_id`` from construction until :meth:`stop`; a resumed run's
    samples go on from its last step."""

    def __init__(self, run_id: str, tracking_uri: str | None, resume: bool) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        self._monitor: Any = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=tracking_uri)
        self._monitor.start()

    def stop(self, server_down: bool) -> None:
        """Post the last sample, waiting at most :data:`STOP_WAIT_S` (not at all while the server is
        down: MLflow's retries could hold it for minutes)."""
        stopping = threading.Thread(target=self._monitor.finish, daemon=True)
        stopping.start()
        stopping.join(0.0 if server_down else STOP_WAIT_S)
