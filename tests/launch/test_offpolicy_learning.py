"""Off-policy learning tests: each algorithm reaches its threshold within its env-step budget, judged
by the final evaluation on its own seeds (not the periodic evaluation that may stop a run early).

Budgets and thresholds are issue 9's (RL Zoo reports SAC -157 at 20k on Pendulum-v1, DQN 500 at
50k on CartPole-v1). Networks are (64, 64) instead of RL Zoo's (256, 256) / (400, 300) so CI stays
within its time (the presets keep RL Zoo's sizes; benchmarks/ runs them). A run stops once a
periodic evaluation clears the threshold with a margin; the final evaluation is what is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from colonyrl.agents.ddpg import DDPGConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.agents.td3 import TD3Config
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import TrainConfig
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig

pytestmark = pytest.mark.slow

SMALL_NET = ActorCriticConfig(hidden_sizes=(64, 64), activation="relu", ortho_init=False)


def _train(cfg: TrainConfig, tmp_path: Path, budget: int, stop_at: float, eval_every: int) -> tuple[float, list]:
    run = cfg.run.replace(total_env_steps=budget, eval_every=eval_every, stop_at_return=stop_at, seed=0, track=False,
                          progress=False, output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt"),
                          checkpoint_every_min=None)
    result = train(cfg.replace(run=run))
    assert result.counters["env_steps"] <= budget + cfg.env_steps_per_round
    return result.evaluation.mean, result.evaluations


@pytest.mark.parametrize(("name", "algo", "budget", "threshold"), [
    ("sac", SACConfig(lr=1e-3), 20_000, -200.0),
    ("td3", TD3Config(lr=1e-3, learning_starts=10_000, action_noise=0.1), 30_000, -200.0),
    ("ddpg", DDPGConfig(lr=1e-3, learning_starts=10_000, action_noise=0.1), 30_000, -250.0),
])
def test_continuous_control_learns_pendulum(tmp_path: Path, name: str, algo, budget: int, threshold: float) -> None:
    base = preset(f"{name}-pendulum")
    final, evals = _train(base.replace(actor=SMALL_NET, algo=algo), tmp_path, budget, threshold + 50.0, 2_000)
    assert final >= threshold, evals


def test_dqn_learns_cartpole(tmp_path: Path) -> None:
    """The dqn-cartpole preset (RL Zoo's settings, its (256, 256) network)."""
    final, evals = _train(preset("dqn-cartpole"), tmp_path, 60_000, 500.0, 5_000)
    assert final >= 475.0, evals


def test_discrete_sac_learns_cartpole(tmp_path: Path) -> None:
    """SAC-Discrete with a lower target entropy (0.3 log|A|): the paper's 0.98 log 2 on CartPole's
    two actions drove alpha up and the critics to diverge in our runs; with 0.3 the periodic
    evaluations reached 420-430 by 5-10k steps and then hovered at 330-390 up to 50k."""
    cfg = TrainConfig(env=EnvConfig(id="CartPole-v1", num_envs=1), actor=SMALL_NET,
                      algo=SACConfig(lr=3e-4, batch_size=64, learning_starts=1000, updates_per_step=0.5,
                                     target_entropy_scale=0.3),
                      storage=ReplayConfig(num_steps=4, memory_size=100_000, gamma=0.99),
                      scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1))
    final, evals = _train(cfg, tmp_path, 50_000, 400.0, 5_000)
    assert final >= 300.0, evals


#: The Ray 2 x 2 run, in a process of its own with its own local Ray (``train`` starts one), so it
#: runs in the ``own_ray`` group beside the session's Ray tests rather than after them
#: (tests/conftest.py): at 100-160 s it was the longest of the session-Ray group, which is CI's
#: critical path.
SAC_ON_RAY = textwrap.dedent("""
    import json, sys
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.launch.presets import preset
    from colonyrl.launch.train import train
    from colonyrl.scheme.scheme import Resources

    update, folder, budget, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    base = preset("sac-pendulum-ray")
    small = Resources(num_cpus=0.25)
    scheme = base.scheme.replace(update=update, grad_worker_resources=small, col_worker_resources=small,
                                 worker_timeout_s=120.0, object_store_mb=200)
    actor = ActorCriticConfig(hidden_sizes=(64, 64), activation="relu", ortho_init=False)
    run = base.run.replace(total_env_steps=budget, eval_every=4_000, stop_at_return=stop_at, seed=0, track=False,
                           progress=False, output_dir=folder + "/runs", checkpoint_dir=folder + "/ckpt",
                           checkpoint_every_min=None)
    cfg = base.replace(actor=actor, scheme=scheme, run=run)
    result = train(cfg)
    print(json.dumps({"final": result.evaluation.mean, "evals": result.evaluations,
                      "env_steps": result.counters["env_steps"], "per_round": cfg.env_steps_per_round,
                      "grad_workers": cfg.scheme.num_grad_workers, "col_workers": cfg.scheme.num_col_workers}))
""")


@pytest.mark.ray
@pytest.mark.own_ray
# Decentralized only (the harder mode: four replicas that must stay equal); central SAC on Ray is
# covered step by step by tests/scheme/test_offpolicy_modes.py and learns in-process above (CI time).
@pytest.mark.parametrize("update", ["decentralized"])
def test_sac_learns_pendulum_on_ray_with_2_gworkers_x_2_cworkers(tmp_path: Path, update: str) -> None:
    budget = 40_000
    proc = subprocess.run([sys.executable, "-c", SAC_ON_RAY, update, str(tmp_path), str(budget), "-150.0"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["grad_workers"], out["col_workers"]) == (2, 2)
    assert out["env_steps"] <= budget + out["per_round"]
    assert out["final"] >= -200.0, out["evals"]
