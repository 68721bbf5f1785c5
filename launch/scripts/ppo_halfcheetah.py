"""PPO on HalfCheetah-v5 (MuJoCo, diagonal Gaussian policy, normalized observations and rewards), in-process.

Needs the mujoco extra (``pip install 'colonyrl[mujoco]'``). Hyperparameters: CleanRL's
``ppo_continuous_action.py`` (Huang et al. 2022, "The 37 Implementation Details of PPO", MuJoCo
section; https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/ppo_continuous_action.py): one env x
2048 steps, 10 epochs of 32 minibatches (64 samples), lr 3e-4 annealed to 0, gamma 0.99, GAE lambda
0.95, clip 0.2 (value clip too), no entropy bonus, vf_coef 0.5 (CleanRL's), gradient norm 0.5,
separate 64x64 tanh networks with orthogonal init, log-std 0, observation and reward normalization
clipped at 10 (its NormalizeObservation / NormalizeReward wrappers: EnvConfig.normalize), 1M steps.
"""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.normalization import NormalizeConfig
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

TOTAL_ENV_STEPS = 1_000_000

SCHEME = TrainConfig(
    env=EnvConfig(id="HalfCheetah-v5", num_envs=1,
                  normalize=NormalizeConfig(obs=True, reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99)),
    actor=ActorCriticConfig(hidden_sizes=(64, 64), activation="tanh", ortho_init=True, log_std_init=0.0),
    algo=PPOConfig(lr=3e-4, num_epochs=10, minibatch_size=64, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.0,
                   vf_coef=0.5, max_grad_norm=0.5),
    storage=RolloutConfig(num_steps=2048, gamma=0.99, gae_lambda=0.95),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=TOTAL_ENV_STEPS, eval_every=50_000, eval_episodes=5),
    schedules=(Schedule(kind="algo", name="lr", points=((0, 3e-4), (TOTAL_ENV_STEPS, 0.0))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
