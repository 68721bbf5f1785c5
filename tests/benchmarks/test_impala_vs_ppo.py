"""benchmarks/impala_vs_ppo.py: the table from made-up runs, and the script end to end with a tiny
budget (Ray, slow): the system asked for (one here: each costs a Ray start) runs with async
collection, reports a policy lag and a row per evaluation point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import impala_vs_ppo  # noqa: E402


def _run(system: str, seed: int, evals: list[tuple[int, float]], fps: float, lag: float) -> dict:
    return {"system": system, "seed": seed, "evaluations": [list(e) for e in evals], "train_fps": fps,
            "policy_lag_mean": lag, "final_eval": evals[-1][1]}


def test_table_takes_medians_at_each_evaluation_point_and_marks_missing_ones() -> None:
    runs = [_run("impala", 0, [(10240, 100.0), (20480, 300.0)], 2000.0, 9.0),
            _run("impala", 1, [(10240, 200.0), (20480, 500.0)], 2200.0, 11.0),
            _run("ppo-async", 0, [(10240, 50.0)], 1500.0, 24.0),
            {"system": "appo", "seed": 0, "error": "boom"}]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in impala_vs_ppo.table(runs, 10_000, 20_000).splitlines()[2:]}
    assert rows["10000"] == ["150.0", "50.0"] and rows["20000"] == ["400.0", "-"]
    assert rows["train env steps/s"] == ["2100", "1500"] and rows["mean policy lag"] == ["10.0", "24.0"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.own_ray
def test_tiny_run_reports_every_system_with_its_policy_lag(tmp_path: Path) -> None:
    out = tmp_path / "ivp.json"
    proc = subprocess.run([sys.executable, str(BENCH / "impala_vs_ppo.py"), "--seeds", "0", "--budget", "1500",
                           "--eval-every", "1000", "--systems", "appo", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["system"] for r in res["runs"]] == ["appo"]  # the chosen one only
    for r in res["runs"]:
        assert r["env_steps"] >= 1500 and r["train_fps"] > 0 and r["policy_lag_mean"] > 0, r
        assert r["evaluations"] and r["evaluations"][0][0] >= 1000
    assert "| 1000 |" in proc.stdout and "| mean policy lag |" in proc.stdout
