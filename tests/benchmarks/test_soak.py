"""benchmarks/soak.py end to end, with a tiny budget: the shipped training path on a local Ray
instance, stopped by time through its own StopRequest, with per-process RSS samples written out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.own_ray]


def test_soak_runs_stops_by_time_and_writes_per_process_samples(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "0.3", "--warmup-min", "0.1",
         "--interval-s", "3", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    assert result["config"]["preset"] == "ppo-cartpole-ray"
    assert result["train"]["outcome"].startswith("stopped by signal")
    assert result["train"]["counters"]["env_steps"] > 0
    samples = result["samples"]
    assert len(samples) >= 3 and samples[-1]["t_s"] == pytest.approx(18.0, abs=4.0)
    last = samples[-1]
    kinds = {p["kind"] for p in last["processes"]}
    # The driver and Ray's own processes, and the workers by their process titles.
    assert {"driver", "gcs_server", "raylet", "ray::GWorker", "ray::CWorker"} <= kinds, kinds
    assert last["by_kind"]["ray::CWorker"]["count"] == 4 and last["by_kind"]["ray::GWorker"]["count"] == 2
    assert all(p["rss_mb"] > 0 for p in last["processes"])
    assert last["total_rss_mb"] == pytest.approx(sum(p["rss_mb"] for p in last["processes"]), abs=0.1)
    growth = result["growth"]
    assert growth["total"]["samples"] >= 2 and growth["total"]["mb_per_min"] is not None
    assert growth["gcs_server"]["samples"] >= 2
