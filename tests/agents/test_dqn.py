"""DQN: the (double) Q target, the Huber loss, the dueling head, gradient clipping, target
refreshes, epsilon-greedy acting, and the Algorithm / Policy contracts."""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import ReplayPlan
from colonyrl.agents.dqn import DQNConfig, q_loss, q_target
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.q_networks import QNetwork
from colonyrl.config import ConfigError

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTIONS = gym.spaces.Discrete(4, start=-1)


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


def make_batch(n: int = 8, seed: int = 0, reward_scale: float = 1.0) -> Batch:
    rng = np.random.default_rng(seed)
    OBS.seed(seed)
    obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    next_obs = torch.as_tensor(np.stack([OBS.sample() for _ in range(n)]))
    return Batch(obs, torch.as_tensor(rng.integers(0, 4, n)), torch.as_tensor(reward_scale * rng.normal(size=n),
                                                                              dtype=torch.float32),
                 next_obs, torch.as_tensor((rng.random(n) < 0.3).astype(np.float32)), torch.full((n,), 0.99),
                 torch.as_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)), torch.arange(n))


def build(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return DQNConfig(**kw).build(OBS, ACTIONS, NET)


def q_arrays(algo, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in algo.get_weights().items() if k.startswith(prefix)}


def test_q_target_and_double_q_target():
    target = torch.tensor([[1.0, 5.0], [3.0, 2.0], [4.0, 0.0]])
    online = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.0, 9.0]])
    r, disc, term = torch.ones(3), torch.full((3,), 0.5), torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(q_target(r, disc, term, target), torch.tensor([1 + 0.5 * 5, 1 + 0.5 * 3, 1.0]))
    # double Q: argmax from the online net ([0, 1, 1]), its value from the target net ([1, 2, 0])
    torch.testing.assert_close(q_target(r, disc, term, target, online), torch.tensor([1 + 0.5 * 1, 1 + 0.5 * 2, 1.0]))


def test_huber_loss_weighted_and_priorities():
    loss, td_abs = q_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), torch.ones(2))
    assert loss.item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)  # quadratic below 1, linear above
    torch.testing.assert_close(td_abs, torch.tensor([0.5, 3.0]))
    weighted, _ = q_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(2.0 * 0.125 / 2)


def test_dueling_head_is_value_plus_centred_advantage():
    torch.manual_seed(0)
    net = QNetwork(OBS, 4, NET, dueling=True)
    obs = make_batch().obs
    h = net.trunk(net.encoder(obs))
    q = net(obs)
    torch.testing.assert_close(q.mean(-1), net.value(h).squeeze(-1))  # mean_a Q = V (eq. 9)
    adv = net.advantage(h)
    torch.testing.assert_close(q - q.mean(-1, keepdim=True), adv - adv.mean(-1, keepdim=True))
    assert len(net.trunk) == 2 and len(net.value) == 3  # shared 16, then a 16-unit layer per stream


@pytest.mark.parametrize("double_q", [False, True])
def test_loss_matches_hand_computation(double_q):
    algo, batch = build(double_q=double_q), make_batch()
    algo.q_net_target.q[-1].bias.data += 1.0  # make online and target differ
    with torch.no_grad():
        nt, no = algo.q_net_target(batch.next_obs), algo.q_net(batch.next_obs)
        next_v = nt.gather(1, no.argmax(1, keepdim=True)).squeeze(1) if double_q else nt.max(1).values
        y = batch.rewards + 0.99 * (1 - batch.terminated) * next_v
        q = algo.q_net(batch.obs)[torch.arange(8), batch.actions]
        expected = (batch.weights * torch.nn.functional.smooth_l1_loss(q, y, reduction="none")).mean()
    result = algo.compute_gradients(batch)
    assert result.info["loss"] == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(result.priorities, (q - y).abs().numpy(), rtol=1e-5)


def test_half_batch_gradients_average_to_the_full_batch_gradient():
    algo, batch = build(double_q=True, dueling=True), make_batch()
    full = algo.compute_gradients(batch)
    first = algo.compute_gradients(Batch(*(t[:3] for t in batch)))
    second = algo.compute_gradients(Batch(*(t[3:] for t in batch)))
    for g, g1, g2 in zip(full.grads, first.grads, second.grads, strict=True):
        torch.testing.assert_close(g, (3 * g1 + 5 * g2) / 8, atol=1e-6, rtol=1e-5)


def test_target_is_copied_every_interval():
    algo, batch = build(target_update_interval=3), make_batch()
    initial = q_arrays(algo, "q_net_target.")
    for step in range(1, 7):
        algo.apply_gradients(algo.compute_gradients(batch).grads)
        online, target = q_arrays(algo, "q_net."), q_arrays(algo, "q_net_target.")
        if step % 3 == 0:
            assert all(np.array_equal(online[k], target[k]) for k in online)  # an exact copy
            initial = target
        else:
            assert all(np.array_equal(initial[k], target[k]) for k in target)
            assert not all(np.array_equal(online[k], target[k]) for k in online)


def test_polyak_target_with_tau():
    algo = build(target_update_interval=1, tau=0.2)
    before = q_arrays(algo, "q_net_target.")
    algo.apply_gradients(algo.compute_gradients(make_batch()).grads)
    online, target = q_arrays(algo, "q_net."), q_arrays(algo, "q_net_target.")
    for k in target:
        np.testing.assert_allclose(target[k], 0.8 * before[k] + 0.2 * online[k], rtol=1e-5, atol=1e-7)


def test_max_grad_norm_clips_the_applied_gradient():
    algo = build(max_grad_norm=0.05)  # Huber's gradient is at most 1 per sample: a small norm to clip
    metrics = algo.apply_gradients(algo.compute_gradients(make_batch(reward_scale=100.0)).grads)
    assert metrics["grad_norm"] > 0.05  # the norm before clipping
    applied = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in algo.parameters()]))
    assert applied.item() == pytest.approx(0.05, rel=1e-4)


def test_epsilon_greedy_acting():
    algo = build(epsilon=0.0, learning_starts=0)  # no warm-up: the policy acts from the first step
    obs = make_batch(n=4000).obs.numpy()
    greedy = algo.q_net(torch.as_tensor(obs)).argmax(-1).numpy()
    out = algo.policy.act(obs)
    np.testing.assert_array_equal(out.action, greedy)
    np.testing.assert_array_equal(out.env_action, greedy - 1)  # Discrete(4, start=-1)
    assert out.action.dtype == np.int64 and out.extras == {}
    algo.update_parameter("epsilon", 1.0)
    assert algo.policy.config.epsilon == 1.0 and algo.policy.state_dict() == {"parameters": {"epsilon": 1.0}, "warmup_left": 0}
    torch.manual_seed(0)
    counts = np.bincount(algo.policy.act(obs).action, minlength=4)
    assert counts.min() > 900 and counts.max() < 1100  # uniform, per observation
    np.testing.assert_array_equal(algo.policy.act(obs, deterministic=True).action, greedy)
    with pytest.raises(ConfigError):
        algo.update_parameter("epsilon", 1.5)
    with pytest.raises(ConfigError):
        algo.policy.update_parameter("lr", 1e-3)


def test_build_policy_takes_acting_weights_only():
    algo = build(dueling=True)
    acting, weights = algo.acting_weights(), algo.get_weights()
    assert acting and all(k.startswith("q_net.") for k in acting)
    assert any(k.startswith("q_net_target.") for k in weights) and "n_updates" in weights
    policy = DQNConfig(dueling=True, epsilon=0.0, learning_starts=0).build_policy(OBS, ACTIONS, NET)
    for v in acting.values():
        v.flags.writeable = False
    policy.set_weights(acting)
    obs = make_batch().obs.numpy()
    np.testing.assert_array_equal(policy.act(obs).action, algo.policy.act(obs, deterministic=True).action)
    policy.load_state_dict({"parameters": {"epsilon": 0.3}, "warmup_left": 5})
    assert policy.config.epsilon == 0.3 and policy.warmup_left == 5


def test_warmup_acts_uniformly_for_learning_starts_steps_then_greedily():
    """SB3's off-policy warm-up: random actions until learning_starts (here per policy = CWorker)."""
    algo = build(epsilon=0.0, learning_starts=3000)
    obs = make_batch(n=1000).obs.numpy()
    greedy = algo.policy.act(obs, deterministic=True).action  # deterministic: never warm-up
    torch.manual_seed(0)
    warm = [algo.policy.act(obs).action for _ in range(3)]
    assert all(np.bincount(w, minlength=4).min() > 180 for w in warm)  # uniform over 4 actions
    assert algo.policy.warmup_left == 0
    np.testing.assert_array_equal(algo.policy.act(obs).action, greedy)


def test_state_dict_round_trip_keeps_the_target_interval_phase():
    algo, batch = build(seed=1, target_update_interval=2), make_batch()
    algo.apply_gradients(algo.compute_gradients(batch).grads)
    state = algo.state_dict()
    restored = build(seed=2, target_update_interval=5)
    restored.load_state_dict(state)
    assert restored.config.target_update_interval == 2 and restored.n_updates == 1
    for a in (algo, restored):
        for _ in range(3):
            a.apply_gradients(a.compute_gradients(batch).grads)
    for k, v in algo.get_weights().items():
        np.testing.assert_array_equal(v, restored.get_weights()[k], err_msg=k)


def test_discrete_observations_are_one_hot_and_export_works():
    obs_space = gym.spaces.Discrete(5, start=2)
    torch.manual_seed(0)
    algo = DQNConfig().build(obs_space, ACTIONS, NET)
    obs = torch.tensor([2, 6, 4])
    torch.testing.assert_close(algo.q_net.encoder(obs), torch.eye(5)[[0, 4, 2]])
    program = torch.export.export(algo.policy.export_module(), (obs[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    np.testing.assert_array_equal(program.module()(obs).numpy(), algo.policy.act(obs.numpy(), True).env_action)


def test_export_box_observations():
    policy = build(dueling=True).policy
    program = torch.export.export(policy.export_module(), (make_batch(n=2).obs,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    obs = make_batch(n=7, seed=2).obs
    np.testing.assert_array_equal(program.module()(obs).numpy(), policy.act(obs.numpy(), True).env_action)


def test_config_plan_and_bad_action_space():
    assert DQNConfig().update_plan() == ReplayPlan(32, 100, 0.25)
    assert DQNConfig.name == "dqn" and DQNConfig.acting_parameters == frozenset({"epsilon"})
    with pytest.raises(ConfigError, match="DQNConfig.action_space"):
        DQNConfig().build(OBS, gym.spaces.Box(-1, 1, (2,), np.float32), NET)
    with pytest.raises(ConfigError, match="DQNConfig.action_space"):
        DQNConfig().build_policy(OBS, gym.spaces.Box(-1, 1, (2,), np.float32), NET)
    with pytest.raises(ConfigError, match="DQNConfig.epsilon"):
        DQNConfig(epsilon=-0.1)
