"""colonyrl.agents: networks, action distributions and algorithms (PPO, adaptive-KL PPO, PG, A2C,
IMPALA, APPO and their recurrent (GRU/LSTM) variants, SAC, TD3, DDPG, DQN).

Imports torch and gymnasium, never Ray.
"""

from colonyrl.agents.a2c import A2C, A2CConfig
from colonyrl.agents.appo import APPO, APPOConfig, appo_loss
from colonyrl.agents.base import (
    ActOut,
    Algorithm,
    AlgorithmConfig,
    EpochPlan,
    ExtraSpec,
    GradientResult,
    Policy,
    ReplayPlan,
    SequencePlan,
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
from colonyrl.agents.impala import IMPALA, IMPALAConfig, impala_loss
from colonyrl.agents.networks import ActorCritic, ActorCriticConfig, PolicyExport, export_policy
from colonyrl.agents.on_policy import ActorCriticPolicy, OnPolicyAlgorithm
from colonyrl.agents.pg import PG, PGConfig, pg_loss, reinforce_loss
from colonyrl.agents.ppo import (
    PPO,
    LossOut,
    PPOConfig,
    PPOPolicy,
    adaptive_kl_coef,
    kl_penalty,
    policy_loss,
    ppo_loss,
    value_loss,
)
from colonyrl.agents.recurrent import RecurrentActorCritic, RecurrentActorCriticPolicy, RecurrentPolicyExport
from colonyrl.agents.recurrent_a2c import RecurrentA2C, RecurrentA2CConfig
from colonyrl.agents.recurrent_appo import RecurrentAPPO, RecurrentAPPOConfig, recurrent_appo_loss
from colonyrl.agents.recurrent_impala import RecurrentIMPALA, RecurrentIMPALAConfig, recurrent_impala_loss
from colonyrl.agents.recurrent_pg import RecurrentPG, RecurrentPGConfig, recurrent_pg_loss
from colonyrl.agents.recurrent_ppo import RecurrentPPO, RecurrentPPOConfig, recurrent_ppo_loss
from colonyrl.agents.sac import SAC, SACConfig
from colonyrl.agents.sac_discrete import DiscreteSAC
from colonyrl.agents.td3 import TD3, TD3Config

__all__ = [
    "IMPALA",
    "IMPALAConfig",
    "impala_loss",
    "APPO",
    "APPOConfig",
    "appo_loss",
    "SequencePlan",
    "RecurrentActorCritic",
    "RecurrentActorCriticPolicy",
    "RecurrentPolicyExport",
    "RecurrentPPO",
    "RecurrentPPOConfig",
    "recurrent_ppo_loss",
    "RecurrentPG",
    "RecurrentPGConfig",
    "recurrent_pg_loss",
    "RecurrentA2C",
    "RecurrentA2CConfig",
    "RecurrentIMPALA",
    "RecurrentIMPALAConfig",
    "recurrent_impala_loss",
    "RecurrentAPPO",
    "RecurrentAPPOConfig",
    "recurrent_appo_loss",
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
    "kl_penalty",
    "adaptive_kl_coef",
    "ActorCriticPolicy",
    "OnPolicyAlgorithm",
    "PG",
    "PGConfig",
    "pg_loss",
    "reinforce_loss",
    "A2C",
    "A2CConfig",
]
