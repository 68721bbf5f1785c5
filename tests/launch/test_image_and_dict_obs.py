"""Image (uint8) and Dict observations end to end: every algorithm learns through the Nature CNN and
the Dict encoder from its real storage, and PPO and DQN train two rounds through ``train()`` on small
image and Dict envs (in-process, no Ray) with uint8 kept in storage and finite weights saved."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from colonyrl.agents import ActorCriticConfig, DQNConfig, PPOConfig
from colonyrl.agents.base import initial_state
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import ALGORITHM_CONFIGS, RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.storage.replay import ReplayConfig, ReplayMemory
from colonyrl.storage.rollout import RolloutConfig, RolloutStorage

IMAGE = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)  # channel-first, the smallest the Nature CNN takes


class TinyImageEnv(gym.Env):
    """A bright bar on the left or the right of a uint8 frame (3, 36, 36); reward 1 for the action
    that names its side; 8 steps an episode. ``dict_obs``: the frame under "image" beside a float
    "vec" (the step count and a noisy copy of the side)."""

    metadata = {"render_modes": []}

    def __init__(self, dict_obs: bool = False) -> None:
        self.dict_obs = dict_obs
        vec = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({"image": IMAGE, "vec": vec}) if dict_obs else IMAGE
        self.action_space = gym.spaces.Discrete(2)
        self._t, self._side = 0, 0

    def _obs(self):
        frame = np.zeros(IMAGE.shape, np.uint8)
        columns = slice(0, 18) if self._side == 0 else slice(18, 36)
        frame[:, 8:28, columns] = 255
        if not self.dict_obs:
            return frame
        noise = float(self.np_random.uniform(-0.5, 0.5))
        return {"image": frame, "vec": np.array([self._t / 8.0, 2 * self._side - 1 + noise], np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._side = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._side)
        self._t += 1
        self._side = int(self.np_random.integers(2))
        return self._obs(), reward, False, self._t >= 8, {}


for _id, _kwargs in (("colonyrl-test/TinyImage-v0", {}), ("colonyrl-test/TinyDict-v0", {"dict_obs": True})):
    if _id not in gym.registry:
        gym.register(_id, entry_point=TinyImageEnv, kwargs=_kwargs)


@pytest.mark.parametrize("dict_obs", [False, True], ids=["image", "dict"])
def test_the_test_envs_pass_the_gymnasium_env_checker(dict_obs: bool) -> None:
    check_env(TinyImageEnv(dict_obs), skip_render_check=True)


def _obs_batch(space: gym.Space, n: int, rng: np.random.Generator):
    if isinstance(space, gym.spaces.Dict):
        return {key: _obs_batch(sub, n, rng) for key, sub in space.spaces.items()}
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    return rng.uniform(-1, 1, (n, *space.shape)).astype(np.float32)


DICT_OBS = gym.spaces.Dict({"image": IMAGE, "vec": gym.spaces.Box(-1.0, 1.0, (3,), np.float32)})


@pytest.mark.parametrize("algo_cls", ALGORITHM_CONFIGS, ids=lambda c: c.name)
def test_every_algorithm_learns_through_the_cnn_and_dict_encoders(algo_cls: type) -> None:
    """Acting, storage and one gradient step of every algorithm on a Dict observation with a uint8
    image: finite gradients that reach the CNN's first convolution, finite weights after applying them."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    algo = algo_cls()
    fields = {f.name for f in dataclasses.fields(algo)}
    changes = {"learning_starts": 0, "batch_size": 8, "updates_per_step": 1.0}
    algo = algo.replace(**{k: v for k, v in changes.items() if k in fields})
    recurrent = bool(getattr(algo_cls, "recurrent", False))
    actor = ActorCriticConfig(hidden_sizes=(16,), cnn_features_dim=32, recurrent="gru" if recurrent else None,
                              hidden_state_size=8)
    action_space = (gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if algo.name in ("td3", "ddpg")
                    else gym.spaces.Discrete(3))
    envs, steps = 2, 4
    storage_cfg = RolloutConfig(num_steps=steps) if algo.storage_kind == "rollout" else ReplayConfig(
        num_steps=steps, memory_size=64)
    policy = algo.build_policy(DICT_OBS, action_space, actor)
    cworker = storage_cfg.build(DICT_OBS, action_space, envs, policy.extras)
    state, start = initial_state(policy, envs), np.ones(envs, bool)
    for _ in range(steps):
        obs = _obs_batch(DICT_OBS, envs, rng)
        out = policy.act(obs) if state is None else policy.act(obs, state=state, episode_start=start)
        if state is not None:
            state, start = out.state, np.zeros(envs, bool)
        cworker.insert(obs, out.action, rng.normal(size=envs).astype(np.float32), np.zeros(envs, bool),
                       np.zeros(envs, bool), np.ones(envs, bool), out.extras)
    last = _obs_batch(DICT_OBS, envs, rng)
    cworker.finish(last, policy.bootstrap(last) if state is None else
                   policy.bootstrap(last, state=state, episode_start=start))
    data = cworker.get_data()
    assert data["obs"]["image"].dtype == np.uint8
    learner = algo.build(DICT_OBS, action_space, actor)
    gworker = storage_cfg.build(DICT_OBS, action_space, envs, policy.extras)
    gworker.add_data(data, "c0")
    gworker.before_gradients()
    batch = next(iter(gworker.batches(learner.update_plan(), torch.Generator().manual_seed(0))))
    assert batch.obs["image"].dtype == torch.uint8
    result = learner.compute_gradients(batch)
    grads = [torch.as_tensor(g) for g in result.grads]
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    params = learner.parameters()
    first_convs = [g for p, g in zip(params, grads, strict=True) if p.dim() == 4 and p.shape[1] == 3]
    assert first_convs and any(bool(g.abs().sum() > 0) for g in first_convs)
    learner.apply_gradients(result.grads)
    assert all(bool(torch.isfinite(p).all()) for p in learner.parameters())


def _spy_storage(monkeypatch) -> list[dict[str, np.dtype]]:
    """Record the dtypes the GWorker-side storages hold after every add_data."""
    seen: list[dict[str, np.dtype]] = []
    rollout_add, replay_add = RolloutStorage.add_data, ReplayMemory.add_data

    def rollout_spy(self, data, source=""):
        rollout_add(self, data, source)
        seen.append({key: array.dtype for key, array in self._rollouts[-1].items()})

    def replay_spy(self, data, source):
        replay_add(self, data, source)
        seen.append({key: array.dtype for key, array in self.arrays.items()})

    monkeypatch.setattr(RolloutStorage, "add_data", rollout_spy)
    monkeypatch.setattr(ReplayMemory, "add_data", replay_spy)
    return seen


@pytest.mark.parametrize("env_id", ["colonyrl-test/TinyImage-v0", "colonyrl-test/TinyDict-v0"],
                         ids=["image", "dict"])
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_ppo_and_dqn_train_two_rounds_on_image_and_dict_observations(tmp_path, monkeypatch, env_id: str,
                                                                      algo: str) -> None:
    seen = _spy_storage(monkeypatch)
    if algo == "ppo":
        algo_cfg, storage = PPOConfig(num_epochs=1, minibatch_size=16), RolloutConfig(num_steps=8)
    else:
        algo_cfg = DQNConfig(learning_starts=8, batch_size=8, updates_per_step=0.5, target_update_interval=2)
        storage = ReplayConfig(num_steps=8, memory_size=64)
    cfg = TrainConfig(env=EnvConfig(id=env_id, num_envs=2),
                      actor=ActorCriticConfig(hidden_sizes=(), cnn_features_dim=64),
                      algo=algo_cfg, storage=storage,
                      run=RunConfig(total_env_steps=32, eval_episodes=1, track=False, progress=False,
                                    output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ckpt")))
    result = train(cfg)
    assert result.counters["env_steps"] == 32  # two rounds of 2 envs x 8 steps
    assert len(seen) == 2
    image_key = "obs" if env_id.endswith("TinyImage-v0") else "obs/image"
    for dtypes in seen:  # uint8 kept in storage (replay: obs and next_obs)
        assert dtypes[image_key] == np.uint8
        if algo == "dqn":
            assert dtypes["next_" + image_key] == np.uint8
    state = torch.load(result.model_dir / "model.pt", weights_only=True)["state_dict"]
    assert any(v.dim() == 4 for v in state.values())  # the CNN was trained and saved
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    # the exported program takes the observation as the env gives it: uint8 frames, a dict for Dict
    policy = torch.export.load(str(result.model_dir / "policy.pt2")).module()
    env = TinyImageEnv(dict_obs=env_id.endswith("TinyDict-v0"))
    obs, _ = env.reset(seed=0)
    if isinstance(obs, dict):
        batch = {key: torch.as_tensor(np.stack([value, value])) for key, value in obs.items()}
    else:
        batch = torch.as_tensor(np.stack([obs, obs]))
    action = policy(batch)
    assert action.shape == (2,) and action.dtype == torch.int64
