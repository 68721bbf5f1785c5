"""Parity with Stable-Baselines3's PPO (the ``bench`` extra), pinned numerically (docs/ppo-parity.md).

With SB3's weights copied into an :class:`ActorCritic`, the networks, the action distributions and a
whole PPO update (every minibatch SB3 trains on, Adam, global grad-norm clipping) must agree with
SB3's to float precision, given colonyrl's ``vf_coef = 2 x`` SB3's (our value loss has CleanRL's
0.5 factor, SB3's ``F.mse_loss`` none). Skipped where SB3 is not installed.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from colonyrl.agents import PPO, ActorCriticConfig, PPOConfig  # noqa: E402
from colonyrl.storage.rollout import Minibatch  # noqa: E402

#: SB3 ActorCriticPolicy parameter -> ActorCritic parameter (separate pi / vf MLPs, 64-64).
NAMES = {"mlp_extractor.policy_net.0": "pi.0", "mlp_extractor.policy_net.2": "pi.2", "action_net": "pi.4",
         "mlp_extractor.value_net.0": "vf.0", "mlp_extractor.value_net.2": "vf.2", "value_net": "vf.4"}
#: SB3's orthogonal gains (stable_baselines3/common/policies.py, ActorCriticPolicy._build).
GAINS = {"mlp_extractor.policy_net.0": math.sqrt(2), "mlp_extractor.policy_net.2": math.sqrt(2),
         "action_net": 0.01, "mlp_extractor.value_net.0": math.sqrt(2), "mlp_extractor.value_net.2": math.sqrt(2),
         "value_net": 1.0}
ENVS = ["CartPole-v1", "Pendulum-v1"]  # Discrete (Categorical) and Box (diagonal Gaussian, clipped)


def _sb3(env_id: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb3.PPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, device="cpu", **kw)


def _ours_from(sb3_state: dict) -> dict:
    out = {ours + s: sb3_state[theirs + s].clone() for theirs, ours in NAMES.items() for s in (".weight", ".bias")}
    if "log_std" in sb3_state:
        out["log_std"] = sb3_state["log_std"].clone()
    return out


def _actor(env_id: str, **kw):
    env = gym.make(env_id)
    return ActorCriticConfig(**kw).build(env.observation_space, env.action_space)


@pytest.mark.parametrize("env_id", ENVS)
def test_parameters_and_init_match_sb3(env_id: str) -> None:
    torch.manual_seed(0)
    model, actor = _sb3(env_id), _actor(env_id)
    theirs, ours = model.policy.state_dict(), actor.state_dict()
    assert set(_ours_from(theirs)) == set(ours)
    for name, gain in GAINS.items():  # orthogonal: every singular value equals the gain; zero bias
        for w, b in ((theirs[name + ".weight"], theirs[name + ".bias"]),
                     (ours[NAMES[name] + ".weight"], ours[NAMES[name] + ".bias"])):
            torch.testing.assert_close(torch.linalg.svdvals(w.double()), torch.full((min(w.shape),), gain,
                                       dtype=torch.float64), atol=1e-5, rtol=0)
            assert not b.any()
        assert theirs[name + ".weight"].shape == ours[NAMES[name] + ".weight"].shape
    if "log_std" in theirs:  # SB3 log_std_init 0.0
        torch.testing.assert_close(ours["log_std"], theirs["log_std"])
    assert isinstance(actor.pi[1], type(model.policy.mlp_extractor.policy_net[1]))  # Tanh


@pytest.mark.parametrize("env_id", ENVS)
def test_values_logp_entropy_and_deterministic_actions_match_sb3(env_id: str) -> None:
    model, actor = _sb3(env_id), _actor(env_id)
    actor.load_state_dict(_ours_from(model.policy.state_dict()))
    if not actor.is_discrete:  # a log-std other than the initial 0, the same in both
        with torch.no_grad():
            model.policy.log_std.fill_(0.3)
            actor.log_std.fill_(0.3)
    space = actor.observation_space
    space.seed(1)
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(32)]))
    with torch.no_grad():
        actions = model.policy.get_distribution(obs).get_actions()
        if actor.is_discrete:
            actions = actions.long().flatten()
        else:
            actions = actions * 3.0  # also samples far outside the bounds
        values, logp, entropy = model.policy.evaluate_actions(obs, actions)
        dist, v = actor.distribution(obs)
        torch.testing.assert_close(v, values.flatten(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dist.log_prob(actions), logp, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(dist.entropy(), entropy, rtol=1e-6, atol=1e-6)
        # Deterministic evaluation: argmax, or the mean clipped to the bounds (SB3 predict's np.clip).
        expected = model.predict(obs.numpy(), deterministic=True)[0]
        got = actor.to_env_action(dist.mode()).numpy()
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6, atol=1e-6)
    if not actor.is_discrete:  # the env gets np.clip(sample) (SB3 collect_rollouts); the rollout keeps the sample
        bounds = actor.action_space
        np.testing.assert_array_equal(actor.to_env_action(actions).numpy(),
                                      np.clip(actions.numpy(), bounds.low, bounds.high))


class _Nop(BaseCallback):
    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("env_id", ENVS)
def test_one_ppo_update_matches_sb3_with_doubled_vf_coef(env_id: str) -> None:
    """SB3 collects a rollout and runs ``train()``; colonyrl's PPO replays the very minibatches
    SB3 trained on, in SB3's order, through ``compute_gradients`` / ``apply_gradients``."""
    hp = dict(learning_rate=1e-3, n_steps=32, batch_size=16, n_epochs=2, ent_coef=0.01, vf_coef=0.5,
              max_grad_norm=0.5, clip_range=0.2, clip_range_vf=0.3)
    model = _sb3(env_id, **hp)
    algo = PPO(PPOConfig(lr=1e-3, num_epochs=2, minibatch_size=16, ent_coef=0.01, vf_coef=2 * 0.5, max_grad_norm=0.5,
                         clip_range=0.2, clip_range_vf=0.3), _actor(env_id))
    model._setup_learn(64, None)
    callback = _Nop()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)
    algo.actor.load_state_dict(_ours_from(model.policy.state_dict()))
    seen = []
    get = model.rollout_buffer.get

    def recording_get(batch_size):
        for samples in get(batch_size):
            seen.append(samples)
            yield samples

    model.rollout_buffer.get = recording_get
    model.train()
    assert len(seen) == 2 * (64 // 16)
    for s in seen:
        actions = s.actions.long().flatten() if algo.actor.is_discrete else s.actions
        batch = Minibatch(obs=s.observations, actions=actions, logp_old=s.old_log_prob, advantages=s.advantages,
                          returns=s.returns, values_old=s.old_values)
        grads, info = algo.compute_gradients(batch)[:2]
        assert grads is not None
        algo.apply_gradients(grads)
    expected = _ours_from(model.policy.state_dict())
    for name, tensor in algo.actor.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
