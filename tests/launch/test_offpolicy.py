"""Off-policy runs through train(): exact resume with the replay memory, offline datasets, CRC checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.checkpoint import load_checkpoint
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.storage.replay import ReplayConfig, ReplayCorruptionError, ReplayMemory, load_dataset

#: A small SAC on Pendulum: 2 envs x 4 steps a round, 8 updates a round once 64 are stored.
SAC_SMALL = TrainConfig(
    env=EnvConfig(id="Pendulum-v1", num_envs=2),
    actor=ActorCriticConfig(hidden_sizes=(32, 32), activation="relu", ortho_init=False),
    algo=SACConfig(lr=1e-3, batch_size=32, learning_starts=64, updates_per_step=1.0),
    storage=ReplayConfig(num_steps=4, memory_size=10_000),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
)


def _run(tmp_path: Path, name: str, **run: Any) -> RunConfig:
    return RunConfig(**{"eval_episodes": 2, "track": False, "progress": False, "eval_every": None,
                        "output_dir": str(tmp_path / name / "runs"), "checkpoint_dir": str(tmp_path / name / "ckpt"),
                        **run})


def _newest(folder: Path) -> dict:
    return load_checkpoint(max(folder.glob("*/ckpt-*.pt"), key=lambda p: p.name))


def _assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts/lists of tensors, arrays and plain values are exactly equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if key not in ("episode_start_times", "time_queue"):  # wall-clock (RecordEpisodeStatistics)
                _assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def test_sac_resume_is_bit_identical_to_training_straight_through(tmp_path: Path) -> None:
    """Replay contents, update-to-data credit, warm-up state, optimizers, target critics and env
    state all resume: 400 steps + resume to 800 equals 800 straight (in-process)."""
    straight = train(SAC_SMALL.replace(run=_run(tmp_path, "straight", total_env_steps=800)))
    first = train(SAC_SMALL.replace(run=_run(tmp_path, "split", total_env_steps=400)))
    memory = _newest(tmp_path / "split" / "ckpt")["learner"]["workers"][0]["storage"]
    assert first.counters["env_steps"] == 400 and int(memory["size"]) == 400  # the memory is in the checkpoint
    resumed = train(SAC_SMALL.replace(run=_run(tmp_path, "split", total_env_steps=800,
                                               resume=str(next((tmp_path / "split" / "ckpt").iterdir())))))
    # 800 env steps store 798 transitions (Pendulum truncates at 200: each env's autoreset step is
    # not one); the round that brings the memory to 64 is trained on in full, the 7 before are not.
    assert straight.counters["updates"] == 798 - 7 * 8 and resumed.counters == straight.counters
    a = _newest(tmp_path / "straight" / "ckpt")["learner"]
    b = _newest(tmp_path / "split" / "ckpt")["learner"]
    _assert_equal(a["algo"], b["algo"], "algo")
    _assert_equal(a["workers"], b["workers"], "workers")
    np.testing.assert_array_equal(resumed.evaluation.returns, straight.evaluation.returns)


def test_scripted_sac_on_two_loss_threads_trains_and_resumes_exactly_as_eager_sac(tmp_path: Path) -> None:
    """``SACConfig.scripted`` with ``loss_threads`` 2 (as the presets ship), 400 steps then resumed
    to 800, ends where eager SAC on one thread does straight through: same counters, same
    checkpointed weights, optimizers and memory, same final evaluation."""
    eager = train(SAC_SMALL.replace(run=_run(tmp_path, "eager", total_env_steps=800)))
    fast = SAC_SMALL.replace(algo=SAC_SMALL.algo.replace(scripted=True, loss_threads=2))
    train(fast.replace(run=_run(tmp_path, "scripted", total_env_steps=400)))
    resumed = train(fast.replace(run=_run(tmp_path, "scripted", total_env_steps=800,
                                          resume=str(next((tmp_path / "scripted" / "ckpt").iterdir())))))
    assert resumed.counters == eager.counters and eager.counters["updates"] > 700
    a, b = _newest(tmp_path / "eager" / "ckpt")["learner"], _newest(tmp_path / "scripted" / "ckpt")["learner"]
    assert b["algo"]["config"]["scripted"] and not a["algo"]["config"]["scripted"]
    a["algo"]["config"], b["algo"]["config"] = {}, {}  # the only intended difference
    _assert_equal(a["algo"], b["algo"], "algo")
    _assert_equal(a["workers"], b["workers"], "workers")
    np.testing.assert_array_equal(resumed.evaluation.returns, eager.evaluation.returns)


def test_a_dataset_written_from_one_run_starts_another_runs_learning(tmp_path: Path) -> None:
    train(SAC_SMALL.replace(run=_run(tmp_path, "source", total_env_steps=400)))
    dataset = tmp_path / "pendulum.npz"
    out = subprocess.run([sys.executable, "-m", "colonyrl.launch.cli", "dataset", str(next((tmp_path / "source" / "ckpt").iterdir())),
                          str(dataset)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 400 transitions" in out.stdout
    data = load_dataset(dataset)
    assert data["obs"].shape == (400, 3) and data["actions"].shape == (400, 1) and data["next_obs"].dtype == np.float32

    # learning_starts 300 > the 48 env steps of this run: without the dataset nothing is learned ...
    algo = SAC_SMALL.algo.replace(learning_starts=300)
    fresh = train(SAC_SMALL.replace(algo=algo, run=_run(tmp_path, "fresh", total_env_steps=48)))
    assert fresh.counters["updates"] == 0
    # ... with it, the memory starts with 400 transitions and every new one is trained on.
    seeded = train(SAC_SMALL.replace(algo=algo, storage=SAC_SMALL.storage.replace(dataset_path=str(dataset)),
                                     run=_run(tmp_path, "seeded", total_env_steps=48)))
    assert seeded.counters["updates"] == 48
    memory = _newest(tmp_path / "seeded" / "ckpt")["learner"]["workers"][0]["storage"]
    assert int(memory["size"]) == 400 + 48


def test_crc_debug_names_the_cworker_of_a_transition_corrupted_in_the_memory() -> None:
    cfg = SAC_SMALL.replace(storage=SAC_SMALL.storage.replace(crc_debug=True))
    with Scheme(cfg.scheme, cfg.components()) as scheme:
        learner = scheme.learner
        while learner.num_updates < 20:  # clean data: every sampled transition verifies
            learner.step()
        memory = learner.gworkers.workers[0].storage
        memory.arrays["obs"][: len(memory)] += 1.0  # bytes flipped after the CWorker checksummed them
        with pytest.raises(ReplayCorruptionError, match=r"g0\.c0"):
            for _ in range(20):
                learner.step()


@pytest.mark.ray
def test_resume_onto_two_gworkers_deals_the_memory_out_and_trains_without_a_burst(ray_local, tmp_path: Path) -> None:
    first = train(SAC_SMALL.replace(run=_run(tmp_path, "one", total_env_steps=400)))
    assert first.counters["updates"] == 400 - 7 * 8
    two = SchemeConfig(num_grad_workers=2, num_col_workers=1, grad_worker_resources=Resources(num_cpus=0.25),
                       col_worker_resources=Resources(num_cpus=0.25), worker_timeout_s=120.0)
    resumed = train(SAC_SMALL.replace(scheme=two, run=_run(tmp_path, "one", total_env_steps=480,
                                                             resume=str(next((tmp_path / "one" / "ckpt").iterdir())))))
    new_steps = resumed.counters["env_steps"] - 400
    assert new_steps >= 80
    memories = [int(w["storage"]["size"]) for w in _newest(tmp_path / "one" / "ckpt")["learner"]["workers"]]
    assert sum(memories) == 400 + new_steps and min(memories) >= 200  # 200 saved transitions each, plus new ones
    # each GWorker: one update per new transition at most (sync gradients: the two are averaged into one)
    assert 0 < resumed.counters["updates"] - first.counters["updates"] <= new_steps / 2


@pytest.mark.ray
def test_resume_onto_two_gworkers_keeps_an_n_step_prioritized_memory(ray_local) -> None:
    """An n-step memory is dealt out as stored (n-step returns, discounts, lookahead observations,
    priorities): the two new GWorkers hold exactly the saved transitions, in order. Only each
    sub-env's waiting tail (its last n - 1 steps, targets not known yet) is not carried."""
    cfg = SAC_SMALL.replace(storage=SAC_SMALL.storage.replace(n_step=3, prioritized=True))
    with Scheme(cfg.scheme, cfg.components()) as scheme:
        learner = scheme.learner
        while learner.env_steps < 120:  # 2 envs x 60 steps, inside Pendulum's first 200-step episode
            learner.step()
        learner.finish_round()
        saved = learner.state_dict()
    memory = saved["workers"][0]["storage"]
    waiting = sum(int(tail["needed"].sum()) for tail in memory["pending"].values())
    assert waiting == 2 * (3 - 1) and int(memory["size"]) == 120 - waiting
    two = SchemeConfig(num_grad_workers=2, num_col_workers=1, grad_worker_resources=Resources(num_cpus=0.25),
                       col_worker_resources=Resources(num_cpus=0.25), worker_timeout_s=120.0)
    with Scheme(two, cfg.components()) as scheme:
        assert scheme.learner.load_state_dict(saved) is False  # other worker counts: envs start afresh
        parts = [w["storage"] for w in scheme.learner.gworkers.get_states()]
    assert [int(p["size"]) for p in parts] == [58, 58]
    for name, column in memory["arrays"].items():
        assert torch.equal(torch.cat([p["arrays"][name] for p in parts]), column), name
    assert torch.equal(torch.cat([p["priorities"] for p in parts]), memory["priorities"])


def test_redistributed_crc_memories_keep_their_order_checksums_and_worker_names() -> None:
    """The memory side of a resume onto other worker counts: two wrapped n-step rings dealt over
    three memories keep every stored slot oldest first, every slot still verifies, and a slot
    corrupted afterwards names the CWorker that sent it (not the GWorker that now holds it)."""
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Discrete(2)
    config = ReplayConfig(num_steps=5, memory_size=16, n_step=2, crc_debug=True)
    rng = np.random.default_rng(0)
    memories = []
    for g in range(2):
        cworker, memory = config.build(obs_space, act_space, 2), config.build(obs_space, act_space, 2)
        for _ in range(4):  # 4 rounds x 5 steps x 2 envs: 38 stored (one waits per env), 16 kept
            for _ in range(5):
                cworker.insert(rng.normal(size=(2, 3)).astype(np.float32), rng.integers(0, 2, 2), rng.normal(size=2),
                               np.zeros(2, bool), np.zeros(2, bool), np.ones(2, bool), {})
            cworker.finish(rng.normal(size=(2, 3)).astype(np.float32), {})
            memory.add_data(cworker.get_data(), f"g{g}.c0")
        memories.append(memory)
    parts = ReplayMemory.redistribute(memories, 3)
    seeded = [config.build(obs_space, act_space, 2) for _ in parts]
    for memory, part in zip(seeded, parts, strict=True):
        memory.seed(part)
    assert [len(m) for m in seeded] == [10, 10, 12]  # chunks of 5, 5 and 6 of each memory
    for memory, (lo, hi) in zip(seeded, ((0, 5), (5, 10), (10, 16)), strict=True):
        expected = np.concatenate([m.transitions()["obs"][lo:hi] for m in memories])
        np.testing.assert_array_equal(memory.transitions()["obs"], expected)
        memory.sample(256, torch.Generator().manual_seed(0))  # crc_debug: every sampled slot verifies
    seeded[0].arrays["obs"][7] += 1.0  # slots 5-9 of the first came from g1's memory
    with pytest.raises(ReplayCorruptionError, match=r"worker 'g1\.c0'"):
        seeded[0].sample(256, torch.Generator().manual_seed(0))


def test_replacing_the_env_keeps_the_memory() -> None:
    with Scheme(SAC_SMALL.scheme, SAC_SMALL.components()) as scheme:
        learner = scheme.learner
        while learner.env_steps < 200:
            learner.step()
        learner.finish_round()
        memory = learner.gworkers.workers[0].storage
        size = len(memory)
        learner.replace_component("env", SAC_SMALL.env.replace(kwargs={"g": 12.0}))
        assert learner.gworkers.workers[0].storage is memory and len(memory) == size
        learner.step()
        assert len(memory) == size + 8 and learner.gworkers.workers[0].cworkers.inspect()[0]["components"].env.kwargs == {"g": 12.0}
