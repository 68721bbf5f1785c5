"""benchmarks/atari_collection.py --quick: ale-py's own vector env rate and one in-process CWorker
collecting Pong with the ppo-atari-pong CNN, plain and double-buffered, in the JSON and the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("ale_py", reason="needs the atari extra: pip install 'colonyrl[atari]'")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import atari_collection  # noqa: E402


def test_quick_mode_measures_the_reference_and_a_cworker(tmp_path: Path, capsys) -> None:
    out = tmp_path / "atari.json"
    assert atari_collection.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert set(summary) == {"ale-py", "in-process", "in-process, double-buffered"}
    assert summary["ale-py"]["fps"] > 0 and summary["ale-py"]["fraction_of_ale_py"] == 1.0
    for row in ("in-process", "in-process, double-buffered"):
        cworker = [r for r in result["rows"] if r["row"] == row]
        assert cworker[0]["env_steps"] % (2 * 16) == 0 and cworker[0]["env_steps"] > 0  # whole 2 x 16-step rollouts
        assert 0 < summary[row]["fraction_of_ale_py"] == pytest.approx(summary[row]["fps"] / summary["ale-py"]["fps"])
    table = capsys.readouterr().out
    assert "| in-process |" in table and "| in-process, double-buffered |" in table
