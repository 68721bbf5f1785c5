"""A2C: SB3's defaults and loss, torch's RMSprop step by hand, one gradient per round, and learning
CartPole-v1."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F

from colonyrl.agents import A2C, A2CConfig, ActorCriticConfig, Algorithm
from colonyrl.agents.base import EpochPlan
from colonyrl.agents.on_policy import WHOLE_ROUND
from colonyrl.config import ConfigError
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))


class Batch(NamedTuple):  # duck-typed like colonyrl.storage.rollout.Minibatch
    obs: torch.Tensor
    actions: torch.Tensor
    logp_old: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values_old: torch.Tensor


def _algo(seed: int = 0, **kw) -> A2C:
    torch.manual_seed(seed)
    return A2CConfig(**kw).build(*CARTPOLE, ActorCriticConfig())


def _batch(algo: A2C, n: int = 40, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=g)
    out = algo.policy.act(obs.numpy())
    values = torch.from_numpy(out.extras["values"])
    returns = values + torch.randn(n, generator=g)
    return Batch(obs, torch.from_numpy(out.action), torch.from_numpy(out.extras["logp"]), returns - values,
                 returns, values)


def test_defaults_are_sb3s() -> None:
    """stable_baselines3/a2c/a2c.py: lr 7e-4, ent_coef 0, vf_coef 0.5 on the plain MSE (1.0 on our
    0.5 * MSE), max_grad_norm 0.5, no advantage normalization, RMSprop(alpha=0.99, eps=1e-5)."""
    cfg = A2CConfig()
    assert (cfg.lr, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm, cfg.normalize_advantage) == (7e-4, 0.0, 1.0, 0.5, False)
    algo = _algo()
    assert isinstance(algo, Algorithm) and type(algo.optimizer) is torch.optim.RMSprop
    group = algo.optimizer.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"], group["centered"]) == (7e-4, 0.99, 1e-5, 0, False)
    assert type(_algo(optimizer="adam").optimizer) is torch.optim.Adam
    assert cfg.update_plan() == EpochPlan(1, WHOLE_ROUND)  # one gradient over the whole round


def test_loss_equals_sb3s_formula() -> None:
    """SB3's A2C.train: -(A * log pi).mean() + ent_coef * -(H).mean() + vf_coef * F.mse_loss(R, V),
    with SB3's vf_coef 0.5 = our 1.0."""
    algo = _algo(ent_coef=0.01)
    b = _batch(algo)
    out = algo.loss(b)
    logits, values = algo.actor(b.obs)
    dist = D.Categorical(logits=logits)
    sb3 = -(b.advantages * dist.log_prob(b.actions)).mean() + 0.01 * -dist.entropy().mean() \
        + 0.5 * F.mse_loss(b.returns, values)
    assert out.total.item() == pytest.approx(sb3.item(), rel=1e-6)
    assert set(algo.compute_gradients(b).info) == {"policy_loss", "value_loss", "entropy"}


def test_one_rmsprop_step_by_hand() -> None:
    """torch's RMSprop from a zero square average: v = (1 - alpha) g^2, p -= lr g / (sqrt(v) + eps)
    (eps outside the root; TF's and SB3's RMSpropTFLike put it inside and start v at 1)."""
    algo = _algo(max_grad_norm=None, lr=0.01)
    before = {k: v.copy() for k, v in algo.get_weights().items()}
    grads = [torch.full_like(p, 0.5) for p in algo.parameters()]
    algo.apply_gradients(grads)
    step = 0.01 * 0.5 / (np.sqrt(0.01 * 0.25) + 1e-5)
    for k, v in algo.get_weights().items():
        np.testing.assert_allclose(before[k] - v, step, rtol=1e-4)


def test_max_grad_norm_clips_the_global_norm() -> None:
    algo = _algo()
    grads = [torch.full_like(p, 3.0) for p in algo.parameters()]
    norm = algo.apply_gradients(grads)["grad_norm"]
    assert norm == pytest.approx(3.0 * np.sqrt(sum(p.numel() for p in algo.parameters())), rel=1e-5)
    assert float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in algo.parameters()]))) == \
        pytest.approx(0.5, rel=1e-4)


def test_state_dict_round_trip_keeps_the_rmsprop_state() -> None:
    a = _algo()
    a.apply_gradients(a.compute_gradients(_batch(a)).grads)
    b = _algo(seed=4)
    b.load_state_dict(a.state_dict())
    assert isinstance(b.config, A2CConfig) and b.config == a.config
    batch = _batch(a, seed=7)
    for algo in (a, b):
        algo.apply_gradients(algo.compute_gradients(batch).grads)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def test_config_validation() -> None:
    for field, value in (("optimizer", "sgd"), ("rms_prop_alpha", 1.0), ("optimizer_eps", 0.0), ("vf_coef", -1.0)):
        with pytest.raises(ConfigError, match=f"A2CConfig.{field}"):
            A2CConfig(**{field: value})
    assert set(A2CConfig.runtime_parameters()) == {"lr", "ent_coef", "vf_coef", "max_grad_norm"}


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_one_update_matches_sb3s_a2c_with_its_defaults(optimizer: str) -> None:
    """SB3's A2C (defaults; ``use_rms_prop=False`` for Adam) collects 8 envs x 5 steps and trains;
    our A2C, from the same weights, takes one gradient of the same batch: the same weights after."""
    sb3 = pytest.importorskip("stable_baselines3")
    import warnings

    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from colonyrl.storage.rollout import Minibatch

    names = {"mlp_extractor.policy_net.0": "pi.0", "mlp_extractor.policy_net.2": "pi.2", "action_net": "pi.4",
             "mlp_extractor.value_net.0": "vf.0", "mlp_extractor.value_net.2": "vf.2", "value_net": "vf.4"}

    def ours(state: dict) -> dict:
        return {o + x: state[t + x].clone() for t, o in names.items() for x in (".weight", ".bias")}

    class Nop(BaseCallback):
        def _on_step(self) -> bool:
            return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), seed=0, device="cpu",
                        use_rms_prop=optimizer == "rmsprop")
    algo = _algo(optimizer=optimizer)
    model._setup_learn(40, None)
    callback = Nop()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=5)
    algo.actor.load_state_dict(ours(model.policy.state_dict()))
    (s,) = model.rollout_buffer.get(batch_size=None)
    model.train()
    batch = Minibatch(obs=s.observations, actions=s.actions.long().flatten(), logp_old=s.old_log_prob,
                      advantages=s.advantages, returns=s.returns, values_old=s.old_values)
    algo.apply_gradients(algo.compute_gradients(batch).grads)
    expected = ours(model.policy.state_dict())
    for name, tensor in algo.actor.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a2c_learns_cartpole_within_200k_steps(tmp_path: Path) -> None:
    """The a2c-cartpole preset: >= 475 on the independent final evaluation within 200k env steps."""
    cfg = preset("a2c-cartpole")
    run = cfg.run.replace(total_env_steps=200_000, track=False, progress=False, output_dir=str(tmp_path / "runs"),
                          checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every_min=None)
    result = train(cfg.replace(run=run))
    assert result.counters["env_steps"] <= 200_000 + cfg.env_steps_per_round
    assert result.evaluation.mean >= 475.0, result.evaluations
