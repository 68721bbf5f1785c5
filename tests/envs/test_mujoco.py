"""MuJoCo v5 through gymnasium (the mujoco extra): HalfCheetah-v5 builds in the factory, and a CWorker
collects from it for a PPO and a SAC gradient step (the ppo-halfcheetah / sac-halfcheetah presets'
algorithms, tiny sizes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco", reason="needs the mujoco extra: pip install 'colonyrl[mujoco]'")

from colonyrl.agents import ActorCriticConfig, PPOConfig, SACConfig  # noqa: E402
from colonyrl.envs.factory import EnvConfig  # noqa: E402
from colonyrl.envs.normalization import NormalizeConfig  # noqa: E402
from colonyrl.launch.config import TrainConfig  # noqa: E402
from colonyrl.launch.presets import preset  # noqa: E402
from colonyrl.scheme.c_worker import CWorker  # noqa: E402
from colonyrl.storage.replay import ReplayConfig  # noqa: E402
from colonyrl.storage.rollout import RolloutConfig  # noqa: E402

CHEETAH = EnvConfig(id="HalfCheetah-v5", num_envs=2)


def test_halfcheetah_v5_builds_with_its_spaces_and_time_limit() -> None:
    observation, action = CHEETAH.spaces()
    assert observation.shape == (17,) and action.shape == (6,)
    assert np.all(action.low == -1.0) and np.all(action.high == 1.0)
    env, obs = CHEETAH.replace(max_episode_steps=3).make(seed=0)
    try:
        assert obs.shape == (2, 17) and obs.dtype == np.float64
        truncated = [env.step(env.action_space.sample())[3] for _ in range(3)]
    finally:
        env.close()
    assert [bool(t.all()) for t in truncated] == [False, False, True]  # v5's limit is 1000; 3 set here
    assert preset("ppo-halfcheetah").env.id == preset("sac-halfcheetah").env.id == "HalfCheetah-v5"


def test_mujoco_warnings_go_to_python_not_to_a_log_file_in_the_working_folder(tmp_path, monkeypatch) -> None:
    import mujoco

    from colonyrl.envs.factory import _mujoco_warning

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        CHEETAH.spaces()  # HalfCheetah's XML uses the deprecated settotalmass: MuJoCo warns on every build
    assert mujoco.get_mju_user_warning() is _mujoco_warning
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_ppo_and_sac_take_a_gradient_step_on_halfcheetah(algo: str) -> None:
    torch.manual_seed(0)
    if algo == "ppo":  # as ppo-halfcheetah: normalized observations and rewards
        env = CHEETAH.replace(normalize=NormalizeConfig(obs=True, reward=True))
        algo_cfg, storage = PPOConfig(num_epochs=1, minibatch_size=16), RolloutConfig(num_steps=16)
    else:
        env = CHEETAH
        algo_cfg = SACConfig(learning_starts=0, batch_size=16, updates_per_step=0.25)
        storage = ReplayConfig(num_steps=16, memory_size=64)
    components = TrainConfig(env=env, actor=ActorCriticConfig(hidden_sizes=(32, 32)), algo=algo_cfg,
                             storage=storage).components()
    cworker = CWorker(components, 0, "g0.c0", torch_threads=None)
    try:
        rollout = cworker.collect()
    finally:
        cworker.close()
    assert rollout.env_steps == 32 and np.isfinite(rollout.data["rewards"]).all()
    spaces = components.spaces()
    learner = components.build_algorithm(spaces)
    memory = storage.build(spaces.observation, spaces.action, 2, cworker.policy.extras)
    memory.add_data(rollout.data, "g0.c0")
    memory.before_gradients()
    before = [p.detach().clone() for p in learner.parameters()]
    batch = next(iter(memory.batches(learner.update_plan(), torch.Generator().manual_seed(0))))
    result = learner.compute_gradients(batch)
    assert result.info and all(np.isfinite(v) for v in result.info.values())
    learner.apply_gradients(result.grads)
    after = learner.parameters()
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    ("script", "extra"),
    [
        pytest.param("ppo_halfcheetah", ["--storage.num-steps", "256", "--algo.num-epochs", "1"], id="ppo"),
        pytest.param("ppo_halfcheetah_fast", ["--algo.num-epochs", "1"], id="ppo-fast"),
        pytest.param("sac_halfcheetah", ["--algo.learning-starts", "400"], id="sac"),
    ],
)
def test_halfcheetah_launch_script_runs_end_to_end(script: str, extra: list[str], tmp_path) -> None:
    """Each HalfCheetah launch script as a user runs it, in its own process, on a tiny budget."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", f"colonyrl.launch.scripts.{script}", "--total-env-steps", "512",
                          "--eval-episodes", "1", "--no-track", "--output-dir", str(tmp_path / "runs"),
                          "--checkpoint-dir", str(tmp_path / "ckpt"), *extra],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "final evaluation: mean return" in out.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert saved["counters"]["env_steps"] >= 512
    assert saved["config"]["env"]["num_envs"] == preset(script.replace("_", "-")).env.num_envs
