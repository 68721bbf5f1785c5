"""colonyrl.agents: networks, action distributions and algorithms (PPO, SAC, TD3, DDPG, DQN).

Imports torch and gymnasium, never Ray.
"""

from colonyrl.agents.base import (
    ActOut,
    Algorithm,
    AlgorithmConfig,
    EpochPlan,
    ExtraSpec,
    GradientResult,
    Policy,
    ReplayPlan,
)
from colonyrl.agents.ddpg import DDPGConfig
from colonyrl.agents.distributions import (
    Categorical,
    DiagGaussian,
    SquashedDiagGaussian,
    clip_action,
    squash_action,
    tanh_log_det_jacobian,
)
from colonyrl.agents.dqn import DQN, DQNConfig
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport, export_policy
from colonyrl.agents.ppo import PPO, LossOut, PPOConfig, PPOPolicy, policy_loss, ppo_loss, value_loss
from colonyrl.agents.sac import SAC, SACConfig
from colonyrl.agents.sac_discrete import DiscreteSAC
from colonyrl.agents.td3 import TD3, TD3Config

__all__ = [
    "ActOut",
    "Algorithm",
    "AlgorithmConfig",
    "EpochPlan",
    "ExtraSpec",
    "GradientResult",
    "Policy",
    "ReplayPlan",
    "PPOPolicy",
    "SAC",
    "SACConfig",
    "DiscreteSAC",
    "TD3",
    "TD3Config",
    "DDPGConfig",
    "DQN",
    "DQNConfig",
    "ActorCritic",
    "ActorCriticConfig",
    "PolicyExport",
    "export_policy",
    "Categorical",
    "DiagGaussian",
    "SquashedDiagGaussian",
    "clip_action",
    "squash_action",
    "tanh_log_det_jacobian",
    "PPO",
    "PPOConfig",
    "LossOut",
    "policy_loss",
    "value_loss",
    "ppo_loss",
]
