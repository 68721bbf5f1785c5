"""SAC on HalfCheetah-v5 (MuJoCo; tanh-Gaussian policy, twin critics, learned entropy coefficient), in-process.

Needs the mujoco extra (``pip install 'colonyrl[mujoco]'``). Hyperparameters: RL Zoo's
hyperparams/sac.yml for HalfCheetah (https://github.com/DLR-RM/rl-baselines3-zoo): 1M steps,
learning_starts 10000, everything else SB3's SAC defaults (Haarnoja et al. 2018): [256, 256] ReLU
MLPs, lr 3e-4, batch 256, tau 0.005, gamma 0.99, one gradient step per env step, alpha learned from
1.0 towards the target entropy -|A|, a 1M-transition buffer.
"""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="HalfCheetah-v5", num_envs=1),
    actor=ActorCriticConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False),
    algo=SACConfig(lr=3e-4, batch_size=256, learning_starts=10_000, updates_per_step=1.0, tau=0.005,
                   loss_threads=2, scripted=True),  # two cores and TorchScript, as sac-pendulum
    storage=ReplayConfig(num_steps=1, memory_size=1_000_000, gamma=0.99),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=1_000_000, eval_every=50_000, eval_episodes=5),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
