"""Atari through ale-py's vector env (EnvConfig(vectorization="ale"), envs/atari.py): uint8 frame
stacks, seeding, episodic life for training only, the next-step autoreset contract, config errors,
and a CNN PPO and a CNN DQN training on Pong through ``train()`` with uint8 kept on the wire, in
rollouts and in replay."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py", reason="needs the atari extra: pip install 'colonyrl[atari]'")

from colonyrl.agents import ActorCriticConfig, DQNConfig, PPOConfig  # noqa: E402
from colonyrl.agents.dqn import DQN  # noqa: E402
from colonyrl.agents.ppo import PPO  # noqa: E402
from colonyrl.config import ConfigError  # noqa: E402
from colonyrl.envs.factory import EnvConfig, WrapperConfig  # noqa: E402
from colonyrl.launch.config import RunConfig, TrainConfig  # noqa: E402
from colonyrl.launch.train import train  # noqa: E402
from colonyrl.scheme import g_worker  # noqa: E402
from colonyrl.scheme.c_worker import CWorker  # noqa: E402
from colonyrl.scheme.wire import Compressor, Packed  # noqa: E402
from colonyrl.storage.replay import ReplayConfig, ReplayMemory  # noqa: E402
from colonyrl.storage.rollout import RolloutConfig, RolloutStorage  # noqa: E402

PONG = EnvConfig(id="ALE/Pong-v5", num_envs=2, vectorization="ale")
BREAKOUT = EnvConfig(id="ALE/Breakout-v5", num_envs=1, vectorization="ale")


def test_observations_are_uint8_frame_stacks_of_84x84() -> None:
    observation, action = PONG.spaces()
    assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8 and action.n == 6
    env, obs = PONG.make(seed=0)
    try:
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        obs, reward, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.int64))
        assert obs.dtype == np.uint8 and reward.dtype == np.float64 and terminated.dtype == bool
        assert obs[:, -1].std() > 0  # a real frame (Pong's field), not a blank one
    finally:
        env.close()


def _trajectory(cfg: EnvConfig, seed: int, worker_index: int, steps: int = 20) -> np.ndarray:
    env, obs = cfg.make(seed=seed, worker_index=worker_index)
    frames = [obs]
    try:
        actions = np.random.default_rng(0).integers(0, 6, (steps, cfg.num_envs))
        for a in actions:
            frames.append(env.step(a)[0])
    finally:
        env.close()
    return np.stack(frames)


def test_seeds_are_reproducible_per_worker_and_sub_env() -> None:
    first, again = _trajectory(PONG, 3, 0), _trajectory(PONG, 3, 0)
    np.testing.assert_array_equal(first, again)  # sticky actions and no-ops come from the seed
    other_worker = _trajectory(PONG, 3, 1)
    assert (first != other_worker).any()
    assert (first[:, 0] != first[:, 1]).any()  # the two sub-envs differ


def _run_until_termination(env, max_steps: int = 3000) -> tuple[int, int]:
    """Random play until sub-env 0 terminates: (lives at that step, lives on the step after)."""
    rng = np.random.default_rng(1)
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(rng.integers(0, 4, 1))
        if terminated[0]:
            lives = int(info["lives"][0])
            _, reward, terminated, truncated, info = env.step(rng.integers(0, 4, 1))
            assert reward[0] == 0.0 and not terminated[0] and not truncated[0]  # masked by the storage
            return lives, int(info["lives"][0])
        assert not truncated[0]
    raise AssertionError("no termination")


def test_episodic_life_in_training_only() -> None:
    """Training: a lost life ends the episode, the game goes on (DeepMind's EpisodicLifeEnv);
    evaluation (Components.evaluation_env -> EnvConfig.evaluation): only game over ends it, and the
    step after it is the autoreset step (a new game with every life)."""
    assert BREAKOUT.atari.episodic_life and BREAKOUT.atari.reward_clipping
    env, _ = BREAKOUT.make(seed=0)
    try:
        lives_at_end, lives_after = _run_until_termination(env)
    finally:
        env.close()
    assert lives_at_end == 4 and lives_after == 4  # one life lost, the same game continues
    evaluation = TrainConfig(env=BREAKOUT).components().evaluation_env()
    assert not evaluation.atari.episodic_life and not evaluation.atari.reward_clipping
    env, _ = evaluation.make(seed=0)
    try:
        lives_at_end, lives_after = _run_until_termination(env)
    finally:
        env.close()
    assert lives_at_end == 0 and lives_after == 5  # game over; the next step started a new game


@pytest.mark.parametrize(("changes", "field"), [
    ({"id": "CartPole-v1"}, "EnvConfig.vectorization"),
    ({"wrappers": (WrapperConfig(name="ClipReward", kwargs={"min_reward": -1, "max_reward": 1}),)},
     "EnvConfig.wrappers"),
    ({"kwargs": {"frameskip": 2}}, "EnvConfig.kwargs.frameskip"),
    ({"kwargs": {"not_an_argument": 1}}, "EnvConfig.kwargs.not_an_argument"),
    ({"step_delay_s": 0.01}, "EnvConfig.step_delay_s"),
])
def test_what_the_ale_vector_env_cannot_do_is_a_config_error(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        PONG.replace(**changes)


def test_without_ale_py_an_atari_id_is_a_config_error_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # what an environment without the extra gives
    with pytest.raises(ConfigError, match=r"EnvConfig\.id='ALE/Pong-v5'.*colonyrl\[atari\]"):
        EnvConfig(id="ALE/Pong-v5", vectorization="ale")


def test_max_episode_steps_truncates_in_agent_steps() -> None:
    env, _ = PONG.replace(num_envs=1, max_episode_steps=5).make(seed=0)
    try:
        truncated = [bool(env.step(np.zeros(1, dtype=np.int64))[3][0]) for _ in range(5)]
    finally:
        env.close()
    assert truncated == [False] * 4 + [True]


def _spy(monkeypatch) -> dict[str, list]:
    """Record what crossed the wire (the packed arrays' dtypes and codecs), what the GWorker-side
    storages hold, and every loss computed."""
    seen: dict[str, list] = {"wire": [], "storage": [], "losses": []}
    unpack = g_worker.unpack

    def unpack_spy(packed: Packed):
        seen["wire"].append({key: (p.dtype, p.codec) for key, p in packed.arrays.items()})
        return unpack(packed)

    rollout_add, replay_add = RolloutStorage.add_data, ReplayMemory.add_data

    def rollout_spy(self, data, source=""):
        rollout_add(self, data, source)
        seen["storage"].append({key: a.dtype for key, a in self._rollouts[-1].items()})

    def replay_spy(self, data, source):
        replay_add(self, data, source)
        seen["storage"].append({key: a.dtype for key, a in self.arrays.items()})

    def gradients_spy(original):
        def spy(self, batch):
            result = original(self, batch)
            seen["losses"].append(result.info)
            return result
        return spy

    monkeypatch.setattr(g_worker, "unpack", unpack_spy)
    monkeypatch.setattr(RolloutStorage, "add_data", rollout_spy)
    monkeypatch.setattr(ReplayMemory, "add_data", replay_spy)
    monkeypatch.setattr(PPO, "compute_gradients", gradients_spy(PPO.compute_gradients))
    monkeypatch.setattr(DQN, "compute_gradients", gradients_spy(DQN.compute_gradients))
    return seen


@pytest.fixture
def wire_on(monkeypatch) -> None:
    """In one process a CWorker hands its numpy arrays over as they are (no wire: scheme/c_worker.py);
    give it the compressor a remote CWorker gets with ``SchemeConfig(compress=True)``, so every
    rollout is packed with lz4 and unpacked by the GWorker as across nodes."""
    init = CWorker.__init__

    def init_with_wire(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.compressor = Compressor(True, same_node=False)

    monkeypatch.setattr(CWorker, "__init__", init_with_wire)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_cnn_ppo_and_dqn_train_on_pong_through_the_wire_with_uint8_kept(tmp_path, monkeypatch, wire_on,
                                                                        algo: str) -> None:
    """Pong, 2 envs x 8 steps a round, three rounds, through ``train()`` in-process with the wire on."""
    seen = _spy(monkeypatch)
    if algo == "ppo":
        algo_cfg, storage = PPOConfig(num_epochs=1, minibatch_size=8), RolloutConfig(num_steps=8)
    else:
        algo_cfg = DQNConfig(learning_starts=16, batch_size=8, updates_per_step=0.25, target_update_interval=2)
        storage = ReplayConfig(num_steps=8, memory_size=64)
    cfg = TrainConfig(
        env=PONG, test_env=PONG.replace(num_envs=1, max_episode_steps=10),
        actor=ActorCriticConfig(hidden_sizes=(), shared_trunk=True, cnn_features_dim=32),
        algo=algo_cfg, storage=storage,
        run=RunConfig(total_env_steps=48, eval_episodes=1, track=False, progress=False,
                      output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt")))
    result = train(cfg)
    assert result.counters["env_steps"] == 48  # 3 rounds of 2 envs x 8 steps
    assert len(seen["wire"]) == 3
    for arrays in seen["wire"]:  # frames went as uint8, compressed
        assert arrays["obs"] == ("|u1", "lz4")
    obs_keys = ("obs", "next_obs") if algo == "dqn" else ("obs",)
    assert len(seen["storage"]) == 3
    for dtypes in seen["storage"]:  # and stayed uint8 in the rollout storage / replay memory
        for key in obs_keys:
            assert dtypes[key] == np.uint8
    assert len(seen["losses"]) >= (4 if algo == "ppo" else 6)
    assert all(np.isfinite(v) for info in seen["losses"] for v in info.values())
    state = torch.load(result.model_dir / "model.pt", weights_only=True)["state_dict"]
    assert any(v.dim() == 4 for v in state.values())  # the Nature CNN was trained and saved
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
