"""colonyrl.agents: actor-critic networks, action distributions and algorithms (PPO).

Imports torch and gymnasium, never Ray.
"""

from colonyrl.agents.base import ActOut, Algorithm
from colonyrl.agents.distributions import (
    Categorical,
    DiagGaussian,
    SquashedDiagGaussian,
    clip_action,
    squash_action,
    tanh_log_det_jacobian,
)
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport, export_policy
from colonyrl.agents.ppo import PPO, LossOut, PPOConfig, policy_loss, ppo_loss, value_loss

__all__ = [
    "ActOut",
    "Algorithm",
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
