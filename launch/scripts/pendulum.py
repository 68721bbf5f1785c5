"""PPO on Pendulum-v1 (continuous actions, diagonal Gaussian policy), in-process."""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="Pendulum-v1", num_envs=4),
    actor=ActorCriticConfig(hidden_sizes=(64, 64), log_std_init=0.0),
    # RL Zoo's Pendulum PPO settings, without gSDE. SB3's vf_coef 0.5 is our 1.0: our value loss
    # carries CleanRL's 0.5 factor, SB3's does not (docs/ppo-parity.md).
    algo=PPOConfig(lr=1e-3, num_epochs=10, minibatch_size=64, clip_range=0.2, vf_coef=1.0),
    storage=RolloutConfig(num_steps=1024, gamma=0.9, gae_lambda=0.95),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=200_000, eval_every=20_000, stop_at_return=-200.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
