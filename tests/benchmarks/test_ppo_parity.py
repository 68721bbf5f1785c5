"""benchmarks/ppo_parity.py: the statistics (IQM, bootstrap interval), the translation of RL Zoo's
settings to colonyrl's config, and a ``--quick`` smoke run of the whole script (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import ppo_parity  # noqa: E402


def test_iqm_is_the_25_percent_trimmed_mean() -> None:
    assert ppo_parity.iqm([5.0, 1.0, 100.0, 3.0, -50.0]) == pytest.approx(3.0)  # mean of 1, 3, 5
    assert ppo_parity.iqm([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == pytest.approx(4.5)  # 3..6
    assert ppo_parity.iqm([2.0, 4.0, 9.0]) == pytest.approx(5.0)  # int(0.75) = 0 cut: the mean
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 10.0]])
    np.testing.assert_allclose(ppo_parity.iqm(rows), [2.5, 3.5])


def test_bootstrap_interval_is_reproducible_and_brackets_the_iqm() -> None:
    runs = [-200.0, -180.0, -900.0, -150.0, -170.0]
    point, lo, hi = ppo_parity.bootstrap_iqm(runs)
    assert point == pytest.approx(np.mean([-200.0, -180.0, -170.0]))
    assert min(runs) <= lo <= point <= hi <= max(runs)
    assert ppo_parity.bootstrap_iqm(runs) == (point, lo, hi)  # fixed seed
    same = ppo_parity.bootstrap_iqm(runs, runs)
    assert same[0] == 0.0 and same[1] < 0.0 < same[2]
    assert ppo_parity.bootstrap_iqm([]) is None and ppo_parity.bootstrap_iqm(runs, []) is None
    assert ppo_parity.bootstrap_iqm([7.0]) == (7.0, 7.0, 7.0)


def test_zoo_settings_translate_to_colonyrl(tmp_path, monkeypatch) -> None:
    cfg = ppo_parity.colonyrl_config("MountainCarContinuous-v0", seed=3, budget=10_000, out_dir=str(tmp_path))
    assert cfg.algo.vf_coef == pytest.approx(2 * 0.19)  # SB3's plain MSE vs colonyrl's 0.5 * MSE
    assert (cfg.algo.lr, cfg.algo.minibatch_size, cfg.algo.num_epochs, cfg.algo.clip_range) == (7.77e-05, 256, 10, 0.1)
    assert (cfg.algo.ent_coef, cfg.algo.max_grad_norm) == (0.00429, 5)
    assert (cfg.storage.num_steps, cfg.storage.gamma, cfg.storage.gae_lambda) == (8, 0.9999, 0.9)
    assert (cfg.actor.ortho_init, cfg.actor.log_std_init, cfg.env.num_envs) == (False, -3.29, 1)
    assert (cfg.run.total_env_steps, cfg.run.seed, cfg.run.track, cfg.run.progress) == (10_000, 3, False, False)
    assert ppo_parity.settings("MountainCarContinuous-v0")[1] == ["normalize=True", "use_sde=True"]
    pend = ppo_parity.colonyrl_config("Pendulum-v1", seed=0, budget=50_000, out_dir=str(tmp_path))
    assert pend.algo.vf_coef == 1.0 and pend.algo.minibatch_size == 64 and pend.schedules == ()  # SB3 defaults
    # lin_<x>: from x at env step 0 to 0 at the budget, as SB3's progress_remaining
    monkeypatch.setitem(ppo_parity.ZOO, "CartPole-v1", {"n_envs": 8, "n_timesteps": 1e5, "n_steps": 32,
                                                        "learning_rate": "lin_0.001", "clip_range": "lin_0.2"})
    cart = ppo_parity.colonyrl_config("CartPole-v1", seed=0, budget=1000, out_dir=str(tmp_path))
    assert {s.name: (s.value(0), s.value(500), s.value(1000)) for s in cart.schedules} == {
        "lr": (0.001, 0.0005, 0.0), "clip_range": (0.2, 0.1, 0.0)}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_run_gives_a_row_per_task_and_system(tmp_path) -> None:
    out = tmp_path / "parity.json"
    proc = subprocess.run([sys.executable, str(BENCH / "ppo_parity.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    tasks, systems = ppo_parity.DEFAULT_TASKS, list(ppo_parity.SYSTEMS)
    assert sorted((r["task"], r["system"]) for r in data["runs"]) == sorted((t, s) for t in tasks for s in systems)
    for run in data["runs"]:
        assert "error" not in run, run
        assert run["env_steps"] >= run["budget"] and run["updates"] > 0 and np.isfinite(run["final_return"])
        assert run["torch_threads"] == 1 and len(run["eval_returns"]) == 2
    for task in tasks:
        for system in systems:
            row = data["summary"][task]["systems"][system]
            assert row["runs"] == 1 and row["failed"] == 0 and row["iqm_ci"] is not None
            assert f"| {task} | {ppo_parity.SYSTEMS[system]} | 1 |" in proc.stdout
