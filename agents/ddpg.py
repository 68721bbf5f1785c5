"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971).

As SB3's stable_baselines3/ddpg/ddpg.py: TD3 without its three changes (one critic, no target
policy smoothing, actor and targets updated every step), Gaussian exploration noise instead of the
paper's Ornstein-Uhlenbeck process, and one learning rate. The paper's other choices (actor lr
1e-4, critic L2 1e-2, tau 1e-3, batch 64, layers 400-300) are not SB3's defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym

from colonyrl.agents.off_policy import ReplayConfigMixin
from colonyrl.agents.q_networks import ActionScaler, DeterministicActor, box_action_space
from colonyrl.agents.td3 import TD3, DeterministicPolicy
from colonyrl.config import Config, param

__all__ = ["DDPGConfig", "RL_ZOO"]

#: RL Zoo's tuned values (DLR-RM/rl-baselines3-zoo, hyperparams/ddpg.yml at 22e3ff2), in colonyrl
#: names (``noise_std`` -> ``action_noise``, ``train_freq 1 / gradient_steps 1`` -> 1.0).
RL_ZOO: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"n_timesteps": 20_000, "gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000,
                    "action_noise": 0.1, "updates_per_step": 1.0, "lr": 1e-3, "hidden_sizes": (400, 300)},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPGConfig(ReplayConfigMixin, Config):
    """Defaults are SB3's (stable_baselines3/ddpg/ddpg.py), exploration noise as ``TD3Config``."""

    lr: float = param(1e-3, ge=0, runtime=True)
    batch_size: int = param(256, ge=1, runtime=True)
    learning_starts: int = param(100, ge=0, runtime=True)
    updates_per_step: float = param(1.0, gt=0, runtime=True)
    tau: float = param(0.005, gt=0, le=1, runtime=True)
    action_noise: float = param(0.1, ge=0, runtime=True)  # std, a fraction of half the action range
    loss_threads: int = param(1, ge=1, le=2)  # 2: critic and actor gradients at once (TD3Config's)
    name: ClassVar[str] = "ddpg"
    acting_parameters: ClassVar[frozenset[str]] = frozenset({"action_noise"})
    # What makes TD3 DDPG (SB3 passes policy_delay=1, target_noise_clip=0, n_critics=1):
    n_critics: ClassVar[int] = 1
    policy_delay: ClassVar[int] = 1
    target_policy_noise: ClassVar[float] = 0.0
    target_noise_clip: ClassVar[float] = 0.0

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> TD3:
        return TD3(self, observation_space, action_space, network)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> DeterministicPolicy:
        space = box_action_space(action_space, "DDPGConfig.action_space")
        return DeterministicPolicy(self, DeterministicActor(observation_space, space, network), ActionScaler(space))
