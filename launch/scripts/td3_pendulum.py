"""TD3 on Pendulum-v1 (deterministic actor, Gaussian exploration noise), in-process."""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.td3 import TD3Config
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="Pendulum-v1", num_envs=1),
    # RL Zoo's hyperparams/td3.yml Pendulum-v1: gamma 0.98, buffer 200k, learning_starts 10k, normal
    # action noise 0.1, one gradient step per env step, learning_rate 1e-3, net_arch [400, 300].
    actor=ActorCriticConfig(hidden_sizes=(400, 300), activation="relu", ortho_init=False),
    # loss_threads=2: the critics' and the actor's gradients at once on two cores (as sac-pendulum)
    algo=TD3Config(lr=1e-3, learning_starts=10_000, updates_per_step=1.0, action_noise=0.1, loss_threads=2),
    storage=ReplayConfig(num_steps=1, memory_size=200_000, gamma=0.98),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=30_000, eval_every=2_000),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
