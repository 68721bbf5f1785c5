"""Deep Q-Network (Mnih et al. 2015, "Human-level control through deep reinforcement learning").

The update of SB3's stable_baselines3/dqn/dqn.py and CleanRL's cleanrl/dqn.py: the Huber loss
(``smooth_l1_loss``, beta 1) between Q(s, a) and the target r + gamma^n (1 - d) max_a' Q'(s', a'),
gradient-norm clipping, and a target network refreshed every ``target_update_interval`` updates
by Polyak averaging with ``tau`` (``tau = 1``: a hard copy, the paper's). Options:

* ``double_q`` (van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461): the online network
  picks a' = argmax_a Q(s', a), the target network values it, Q'(s', a') (paper eq. 4);
* ``dueling`` (Wang et al. 2016): the Q-network's dueling head (``q_networks.QNetwork``).

Acting is epsilon-greedy; ``epsilon`` is a runtime acting parameter (SB3's linear exploration
schedule, ``exploration_fraction`` / ``exploration_final_eps``, is the launcher's to drive).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from colonyrl.agents.base import ActOut, GradientResult
from colonyrl.agents.off_policy import (
    OffPolicyAlgorithm,
    OffPolicyPolicy,
    ReplayConfigMixin,
    as_tensor,
    grads_of,
    polyak_update,
    td_target,
    uniform_discrete_actions,
)
from colonyrl.agents.q_networks import ArgmaxExport, QNetwork, discrete_action_space
from colonyrl.config import Config, param

__all__ = ["DQNConfig", "DQN", "EpsilonGreedyPolicy", "DQNLoss", "RL_ZOO", "q_target", "q_loss"]

#: RL Zoo's tuned values (DLR-RM/rl-baselines3-zoo, hyperparams/dqn.yml at 22e3ff2), SB3 names
#: mapped to colonyrl's: ``train_freq 256, gradient_steps 128`` -> ``updates_per_step`` 0.5. SB3
#: counts ``target_update_interval`` (10) in env steps and trains in bursts of 128 updates every
#: 256 steps, so its target is refreshed once per burst: ``target_update_interval_sb3_steps`` is
#: the raw value, ``target_update_interval`` the update count between refreshes it amounts to.
RL_ZOO: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"n_timesteps": 50_000, "lr": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                    "learning_starts": 1000, "gamma": 0.99, "target_update_interval_sb3_steps": 10,
                    "target_update_interval": 128, "train_freq": 256, "gradient_steps": 128,
                    "updates_per_step": 0.5, "exploration_fraction": 0.16, "exploration_final_eps": 0.04,
                    "hidden_sizes": (256, 256)},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DQNConfig(ReplayConfigMixin, Config):
    """Defaults are SB3's (stable_baselines3/dqn/dqn.py)."""

    lr: float = param(1e-4, ge=0, runtime=True)
    batch_size: int = param(32, ge=1, runtime=True)
    learning_starts: int = param(100, ge=0, runtime=True)
    updates_per_step: float = param(0.25, gt=0, runtime=True)  # SB3 gradient_steps / train_freq = 1 / 4
    tau: float = param(1.0, gt=0, le=1, runtime=True)  # 1: hard copy
    #: Updates between target refreshes. SB3's default is 10000 *env steps*, i.e. 2500 updates at
    #: its 0.25 updates per step.
    target_update_interval: int = param(2500, ge=1, runtime=True)
    max_grad_norm: float | None = param(10.0, gt=0, runtime=True)  # None: no clipping
    #: Probability of a uniformly random action. SB3 anneals it from 1.0 to 0.05 over the first 10%
    #: of training; a fixed value here, which schedules change at runtime.
    epsilon: float = param(0.05, ge=0, le=1, runtime=True)
    double_q: bool = False
    dueling: bool = False
    name: ClassVar[str] = "dqn"
    acting_parameters: ClassVar[frozenset[str]] = frozenset({"epsilon"})

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> DQN:
        return DQN(self, observation_space, action_space, network)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> EpsilonGreedyPolicy:
        space = discrete_action_space(action_space, "DQNConfig.action_space")
        return EpsilonGreedyPolicy(self, QNetwork(observation_space, int(space.n), network, self.dueling),
                                   int(space.start))


class DQNLoss(NamedTuple):
    loss: torch.Tensor
    td_abs: torch.Tensor  # [B], |Q(s, a) - y| (the new priorities)
    q_mean: torch.Tensor


def q_target(rewards: torch.Tensor, discounts: torch.Tensor, terminated: torch.Tensor,
             next_q_target: torch.Tensor, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """y = r + gamma^n (1 - d) Q'(s', a'): a' = argmax Q' (DQN), or argmax of the online network's
    ``next_q_online`` when given (double DQN). Q values are [B, n]."""
    if next_q_online is None:
        next_v = next_q_target.amax(-1)
    else:
        next_v = next_q_target.gather(-1, next_q_online.argmax(-1, keepdim=True)).squeeze(-1)
    return td_target(rewards, discounts, terminated, next_v)


def q_loss(q_taken: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mean(w * Huber(Q(s, a) - y)) (SB3: ``F.smooth_l1_loss``, beta 1) and |Q(s, a) - y| [B]."""
    loss = (weights * F.smooth_l1_loss(q_taken, target, reduction="none")).mean()
    return loss, (q_taken - target).detach().abs()


class EpsilonGreedyPolicy(OffPolicyPolicy):
    """argmax_a Q(s, a), or with probability epsilon (per observation) a uniform action, drawn from
    torch's global RNG (CWorkers seed torch per worker). SB3 and CleanRL draw one coin for the whole
    batch of envs; one per env is the per-actor rule of Ape-X (Horgan et al. 2018)."""

    def __init__(self, config: DQNConfig, q_net: QNetwork, start: int = 0) -> None:
        super().__init__(config, {"q_net": q_net})
        self.q_net, self.start = q_net, int(start)

    @torch.inference_mode()
    def policy_act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        q = self.q_net(as_tensor(obs))
        action = q.argmax(-1)
        eps = self.config.epsilon
        if not deterministic and eps > 0:
            explore = torch.rand(action.shape[0]) < eps
            action = torch.where(explore, torch.randint(q.shape[-1], action.shape), action)
        return ActOut(action.numpy(), (action + self.start).numpy(), {})

    def random_act(self, n: int) -> ActOut:
        return uniform_discrete_actions(self.q_net.n_actions, self.start, n)

    def export_module(self) -> torch.nn.Module:
        return ArgmaxExport(self.q_net, self.start)


class DQN(OffPolicyAlgorithm):
    """DQN; ``parameters()`` = the Q-network's."""

    def __init__(self, config: DQNConfig, observation_space: gym.Space, action_space: gym.Space,
                 network: Any) -> None:
        self.config = config
        space = discrete_action_space(action_space, "DQNConfig.action_space")
        self.q_net = QNetwork(observation_space, int(space.n), network, config.dueling)
        self.q_net_target = copy.deepcopy(self.q_net).requires_grad_(False)
        self.policy = EpsilonGreedyPolicy(config, self.q_net, int(space.start))
        self.nets = {"q_net": self.q_net, "q_net_target": self.q_net_target}
        self.acting = ("q_net",)
        self._params = list(self.q_net.parameters())
        self.optimizers = {"q_net": torch.optim.Adam(self._params, lr=config.lr, fused=True)}
        self.n_updates = 0

    def loss(self, batch: Any) -> DQNLoss:
        with torch.no_grad():
            online = self.q_net(batch.next_obs) if self.config.double_q else None
            y = q_target(batch.rewards, batch.discounts, batch.terminated, self.q_net_target(batch.next_obs), online)
        q = self.q_net(batch.obs).gather(-1, batch.actions.long().reshape(-1, 1)).squeeze(-1)
        loss, td_abs = q_loss(q, y, batch.weights)
        return DQNLoss(loss, td_abs, q.detach().mean())

    def compute_gradients(self, batch: Any) -> GradientResult:
        out = self.loss(batch)
        info = dict(zip(("loss", "q_mean"), torch.stack([out.loss.detach(), out.q_mean]).tolist(), strict=True))
        return GradientResult(grads_of(out.loss, self._params), info, priorities=out.td_abs.cpu().numpy())

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Clip the gradient norm, step, and refresh the target every ``target_update_interval``-th
        update (SB3 does it by env steps, in ``_on_step``)."""
        self._load_grads(grads)
        max_norm = self.config.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm if max_norm is not None else float("inf"))
        self.optimizers["q_net"].step()
        self.n_updates += 1
        if self.n_updates % self.config.target_update_interval == 0:
            polyak_update(self._params, list(self.q_net_target.parameters()), self.config.tau)
        return {"grad_norm": float(norm)}
