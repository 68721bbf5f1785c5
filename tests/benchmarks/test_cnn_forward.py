"""benchmarks/cnn_forward.py --quick: the ppo-atari-pong policy's acting time per batch size, in the
JSON and the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("ale_py", reason="needs the atari extra: pip install 'colonyrl[atari]'")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cnn_forward  # noqa: E402


def test_quick_mode_times_acting_per_batch_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cnn.json"
    assert cnn_forward.main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["ms_per_call"] > 0 and r["ms_per_obs"] == pytest.approx(r["ms_per_call"] / r["batch"])
    table = capsys.readouterr().out
    assert "| 1 |" in table and "| 2 |" in table
