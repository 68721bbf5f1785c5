"""HER end to end: the dqn-her-bitflip preset solves 8-bit flipping where the same DQN with plain
replay does not (same budget, judged by the final evaluation on its own seeds), the preset runs
from the command line, and a HER memory on an env without goals is refused before training.

Measured with seeds 0, 1, 2 at this budget (2,500 env steps, 1,000 updates): HER success 1.0,
1.0, 0.99 (mean return -2.93, -2.85, -3.16; the optimum is about -3.0, one step per differing bit
after the first); plain replay success 0.02, 0.03, 0.02 (mean return about -7.9, -8 = never).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colonyrl.config import ConfigError
from colonyrl.launch.config import TrainConfig
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.storage.her import HERConfig

BUDGET = 2_500


def _final_success(cfg: TrainConfig, tmp_path: Path, name: str) -> tuple[float, float]:
    run = cfg.run.replace(total_env_steps=BUDGET, eval_every=None, eval_episodes=100, seed=0, track=False,
                          progress=False, output_dir=str(tmp_path / name / "runs"),
                          checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_every_min=None)
    evaluation = train(cfg.replace(run=run)).evaluation
    n_bits = cfg.env.kwargs["n_bits"]
    # an episode that never reached the goal returns -max_steps (-1 on every step); one that did, more
    return float(np.mean(evaluation.returns > -n_bits)), evaluation.mean


@pytest.mark.slow
def test_her_solves_bit_flipping_where_plain_replay_does_not(tmp_path: Path) -> None:
    her = preset("dqn-her-bitflip")
    assert her.storage.her == HERConfig(strategy="future", k=4) and her.env.kwargs == {"n_bits": 8}
    plain = her.replace(storage=her.storage.replace(her=None))
    her_success, her_return = _final_success(her, tmp_path, "her")
    plain_success, plain_return = _final_success(plain, tmp_path, "plain")
    assert her_success >= 0.9 and her_return >= -3.6, (her_success, her_return)
    assert plain_success <= 0.2 and plain_return <= -7.0, (plain_success, plain_return)


@pytest.mark.slow  # a subprocess: imports, a short run and the model export, 10-13 s
def test_the_her_preset_trains_from_the_command_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "colonyrl.launch.cli", "train", "--preset", "dqn-her-bitflip", "--total-env-steps", "320",
         "--algo.learning-starts", "128", "--storage.her.strategy", "final", "--eval-episodes", "2", "--no-track",
         "--output-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DQN on colonyrl.envs.goal:colonyrl/BitFlip-v0" in out.stdout
    assert "final evaluation: mean return" in out.stdout and "updates" in out.stdout


def test_her_on_an_env_without_goals_is_refused_before_training(tmp_path: Path) -> None:
    cfg = preset("dqn-cartpole")
    cfg = cfg.replace(storage=cfg.storage.replace(her=HERConfig()),
                      run=cfg.run.replace(total_env_steps=64, track=False, progress=False,
                                          output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt")))
    with pytest.raises(ConfigError, match="ReplayConfig.her"):
        train(cfg)
