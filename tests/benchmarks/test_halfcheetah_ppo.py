"""benchmarks/halfcheetah_ppo.py --quick: colonyrl's ppo-halfcheetah and SB3's PPO with the same
settings each train 512 steps of HalfCheetah-v5; both rates and their ratio in the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mujoco", reason="needs the mujoco extra: pip install 'colonyrl[mujoco]'")
pytest.importorskip("stable_baselines3", reason="needs the bench extra (stable-baselines3)")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import halfcheetah_ppo  # noqa: E402


def test_quick_mode_times_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "hc.json"
    assert halfcheetah_ppo.main(["--quick", "--in-process", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for side in ("colonyrl", "sb3"):
        assert result[side]["env_steps"] == 512 and result[side]["seconds"] > 0
        assert result[side]["fps"] == pytest.approx(512 / result[side]["seconds"])
    assert result["speedup"] == pytest.approx(result["colonyrl"]["fps"] / result["sb3"]["fps"])


def test_fast_preset_is_timed_against_sb3_at_its_own_and_at_cleanrls_settings(tmp_path: Path) -> None:
    out = tmp_path / "hc.json"
    assert halfcheetah_ppo.main(["--quick", "--in-process", "--preset", "ppo-halfcheetah-fast",
                                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["num_envs"] == 8 and result["config"]["minibatch_size"] == 256
    for side in ("colonyrl", "sb3", "sb3-cleanrl"):
        assert result[side]["env_steps"] == 512 and result[side]["seconds"] > 0
    assert result["speedup"] == pytest.approx(result["colonyrl"]["fps"] / result["sb3"]["fps"])
    assert result["speedup_vs_sb3_cleanrl"] == pytest.approx(result["colonyrl"]["fps"] / result["sb3-cleanrl"]["fps"])
