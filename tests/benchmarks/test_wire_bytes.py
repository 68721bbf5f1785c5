"""benchmarks/wire_bytes.py --quick: Pong rollouts packed as for another node; the uint8 frames go
lz4-compressed, the ratio is raw over wire bytes, key by key and in total."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("ale_py", reason="needs the atari extra: pip install 'colonyrl[atari]'")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import wire_bytes  # noqa: E402


def test_quick_mode_reports_bytes_per_key(tmp_path: Path) -> None:
    out = tmp_path / "wire.json"
    assert wire_bytes.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["per_key"]
    obs = result["keys"]["obs"]
    assert (obs["dtype"], obs["codec"]) == ("|u1", "lz4")
    assert obs["raw_bytes"] == (32 + 1) * 2 * 4 * 84 * 84  # [T+1, N, 4, 84, 84] uint8
    assert obs["wire_bytes"] < obs["raw_bytes"] / 10  # frames compress many times
    assert result["raw_bytes"] == sum(k["raw_bytes"] for k in result["keys"].values())
    assert result["ratio"] == pytest.approx(result["raw_bytes"] / result["wire_bytes"])
