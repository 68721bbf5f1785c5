"""Test helpers for MLflow runs (imported by adding this folder to ``sys.path``: pytest runs with
``--import-mode=importlib``)."""

from __future__ import annotations

from typing import Any


def read_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """What a run holds: ``{"status", "experiment_id", "run_name", "params": {k: v}, "tags": {k: v},
    "metrics": {key: history length}, "artifacts": [file paths, recursive, sorted]}``."""
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
