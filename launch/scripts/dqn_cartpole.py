"""DQN on CartPole-v1 (epsilon-greedy, target network), in-process."""

from __future__ import annotations

import sys

from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="CartPole-v1", num_envs=1),
    # RL Zoo's hyperparams/dqn.yml CartPole-v1: 50k steps, lr 2.3e-3, batch 64, buffer 100k,
    # learning_starts 1000, gamma 0.99, train_freq 256 with 128 gradient steps (0.5 per env step),
    # exploration 1 -> 0.04 over 16% of the run, net_arch [256, 256]. SB3 refreshes the target
    # every 10 env steps, during collection, i.e. once per burst of 128 updates: 128 here.
    actor=ActorCriticConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False),
    algo=DQNConfig(lr=2.3e-3, batch_size=64, learning_starts=1000, updates_per_step=0.5,
                   target_update_interval=128, epsilon=1.0),
    storage=ReplayConfig(num_steps=256, memory_size=100_000, gamma=0.99),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=60_000, eval_every=5_000),
    schedules=(Schedule(kind="algo", name="epsilon", points=((0, 1.0), (8_000, 0.04))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
