"""benchmarks/offpolicy.py: the time-to-threshold accounting and the tables on made-up runs, and the
script end to end with a tiny budget (slow): SAC Pendulum-v1 and DQN CartPole-v1, colonyrl and SB3
each in their own process, both evaluated at the same env steps, one Markdown table per algorithm
with numbers for both sides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import offpolicy  # noqa: E402

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _run(system: str, seed: int, evals: list[tuple[int, float, float]], train_s: float = 10.0) -> dict:
    """A made-up SAC run: evaluations (env steps, mean, end wall-clock), 0.1 s each, setup 0.5 s."""
    ev = [{"env_steps": s, "mean": m, "eval_s": 0.1, "wall_s": w} for s, m, w in evals]
    extra = {"env_steps": 3000, "train_s": train_s, "setup_s": 0.5}
    return {"algo": "sac", "system": system, "seed": seed, **offpolicy.summarize("sac", ev, extra)}


def test_time_to_threshold_excludes_evaluations_and_medians_count_misses() -> None:
    run = _run("colonyrl", 0, [(1000, -900.0, 2.0), (2000, -150.0, 4.0), (3000, -140.0, 6.0)])
    assert run["reached"] and run["threshold_env_steps"] == 2000
    assert run["threshold_time_s"] == pytest.approx(4.0 - 0.2)  # both evaluations so far subtracted
    assert run["train_fps"] == pytest.approx(300.0) and run["final_eval"] == -140.0
    runs = [run, _run("sb3", 0, [(1000, -900.0, 3.0), (3000, -190.0, 9.0)], train_s=20.0),
            _run("colonyrl", 1, [(1000, -100.0, 2.0)]), _run("sb3", 1, [(1000, -900.0, 3.0)], train_s=20.0),
            _run("colonyrl", 2, [(1000, -300.0, 2.0)]), {"algo": "sac", "system": "sb3", "seed": 2, "error": "x"}]
    text, summary = offpolicy.table("sac", runs, [0, 1, 2])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]}
    assert rows["0"][1:4] == ["3.8", "8.8", "0.43"]
    assert rows["1"][2] == "not reached" and rows["1"][3] == "-"
    assert rows["2"][2] == "failed" and rows["2"][7] == "failed"
    # colonyrl's median: 1.9, 3.8 and not reached -> 3.8; SB3's: 8.8 and not reached -> not reached
    assert rows["median"][1:3] == ["3.8", "not reached"]
    lines = offpolicy.verdicts("sac", summary)
    # SB3's median is bounded below by counting its miss as its whole run: median(8.8, 20.5) = 14.65
    assert f"below {3.8 / 14.65:.2f}" in lines[0] and lines[0].endswith("target <= 0.5: met")
    assert lines[1].startswith("- training env steps/s, colonyrl / SB3: 2.00") and lines[1].endswith("met")


def _row(stdout: str, title: str, first_cell: str) -> list[str]:
    """The cells of the table row starting with ``first_cell`` in the section headed ``## <title>``."""
    section = stdout.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in the {title} table:\n{section}")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_tiny_run_prints_both_tables_with_both_sides(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "offpolicy.json"
    # 1,100 env steps: SAC trains 1,000 updates; DQN collects 5 rounds of 256, past learning_starts (1,000)
    proc = subprocess.run(
        [sys.executable, str(BENCH / "offpolicy.py"), "--algo", "both", "--seeds", "0", "--budget", "1100",
         "--eval-every", "500", "--wait-quiet", "0", "--retries", "0", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for title in ("SAC Pendulum-v1", "DQN CartPole-v1"):
        assert f"## {title}" in proc.stdout, proc.stdout
        for first in ("0", "median"):
            cells = _row(proc.stdout, title, first)
            assert len(cells) == 11, cells
            # time to threshold (a number or "not reached"), both sides
            assert all(NUMBER.match(c) or c == "not reached" for c in cells[1:3]), cells
            assert all(NUMBER.match(c) or c == "not reached" for c in cells[4:6]), cells
            # env steps/s and final evaluation: numbers on both sides, and the throughput ratio
            assert all(NUMBER.match(c) for c in cells[6:11]), cells
            assert all(float(c) > 0 for c in cells[6:9]), cells
    data = json.loads(out.read_text())
    runs = {(r["algo"], r["system"]): r for r in data["runs"]}
    assert sorted(runs) == sorted((a, s) for a in ("sac", "dqn") for s in ("colonyrl", "sb3"))
    for run in runs.values():
        assert "error" not in run, run
        assert run["torch_threads"] == 1 and run["env_steps"] >= 1100 and run["updates"] > 0
        assert run["train_fps"] > 0 and run["train_s"] > 0 and run["eval_s"] > 0
    for algo, steps in (("sac", [500, 1000]), ("dqn", [512, 1024])):
        for system in ("colonyrl", "sb3"):  # the same evaluation points on both sides
            assert [e["env_steps"] for e in runs[algo, system]["evals"]] == steps, (algo, system)
    # SB3 gets the hyperparameters colonyrl's presets have (each worker checks its preset too)
    assert runs["sac", "sb3"]["hparams"]["learning_rate"] == runs["sac", "colonyrl"]["config"]["algo"]["lr"] == 1e-3
    assert runs["dqn", "sb3"]["hparams"]["gradient_steps"] == 128 and runs["dqn", "sb3"]["hparams"]["train_freq"] == 256


@pytest.mark.slow
def test_sac_update_script_times_both_systems_and_counts_the_update_flops(tmp_path: Path) -> None:
    """benchmarks/sac_update.py end to end with a few updates: both systems timed, and the profiler's
    FLOP count of one update near the products of the [256, 256] twin-critic SAC (about 0.55 GFLOP)."""
    out = tmp_path / "update.json"
    proc = subprocess.run([sys.executable, str(BENCH / "sac_update.py"), "--fill", "300", "--warmup", "2",
                           "--updates", "3", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["threads"] == 1 and res["colonyrl_ms"] > 0 and res["sb3_ms"] > 0
    # 8 forward and 8 backward 256x256x256 products (2 * 256^3 FLOP each) plus the small layers
    assert 0.5 < res["update_gflop"] < 0.6
    assert res["floor_ms"] == pytest.approx(res["update_gflop"] / res["matmul_256_gflops"] * 1e3)
    assert "| colonyrl" in proc.stdout and "| SB3" in proc.stdout
