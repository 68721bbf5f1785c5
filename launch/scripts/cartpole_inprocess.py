"""PPO on CartPole-v1 with one GWorker and one CWorker in this process: no Ray at all."""

from __future__ import annotations

import sys

import tyro

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="CartPole-v1", num_envs=8),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    algo=PPOConfig(lr=1e-3, num_epochs=20, minibatch_size=256, clip_range=0.2),
    storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),  # in-process: the serial mode
    run=RunConfig(total_env_steps=60_000, eval_every=10_000, stop_at_return=475.0),
)

if __name__ == "__main__":
    result = train(tyro.cli(TrainConfig, default=SCHEME))
    sys.exit(0)
