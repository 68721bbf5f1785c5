"""benchmarks/presets.py: a preset as shipped, per seed, in a fresh process (tiny budget here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import presets  # noqa: E402


def test_a_tiny_run_reports_each_seed_and_the_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "presets.json"
    assert presets.main(["--presets", "ppo-cartpole", "--seeds", "3", "--total-env-steps", "4096", "--eval-every",
                         "2048", "--threshold", "20", "--out", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert (row["preset"], row["seed"], row["threshold"]) == ("ppo-cartpole", 3, 20.0)
    assert row["env_steps"] >= 4096 and row["train_fps"] > 0 and len(row["evaluations"]) == 2
    # the env steps of the first periodic evaluation at or above the threshold, if any
    first = next((steps for steps, mean in row["evaluations"] if mean >= 20), None)
    assert row["env_steps_at_threshold"] == first
    table = capsys.readouterr().out
    assert "| `ppo-cartpole` (>= 20.0) | 3 |" in table
