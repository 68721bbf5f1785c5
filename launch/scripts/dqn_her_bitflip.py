"""DQN with hindsight experience replay on 8-bit flipping (colonyrl/BitFlip-v0), in-process.

The bit-flipping task of Andrychowicz et al. 2017, https://arxiv.org/abs/1707.01495, section 4.1
(envs/goal.py): reward -1 until the bits equal the goal, 8 steps per episode, so plain replay sees
almost nothing but -1 and learns nothing; relabelling with the "future" strategy and k = 4 (the
paper's) solves it. Measured (tests/launch/test_her_learning.py, 2,500 env steps, seeds 0-2):
success 0.99-1.0 with HER, 0.02-0.03 without.
"""

from __future__ import annotations

import sys

from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.goal import BIT_FLIP
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.her import HERConfig
from colonyrl.storage.replay import ReplayConfig

N_BITS = 8

SCHEME = TrainConfig(
    # BIT_FLIP names the module that registers the id, so every process (a Ray worker too) finds it
    env=EnvConfig(id=BIT_FLIP, num_envs=4, kwargs={"n_bits": N_BITS}),
    actor=ActorCriticConfig(hidden_sizes=(64, 64), activation="relu", ortho_init=False),
    # the paper's bit-flipping DQN (appendix A): Adam lr 1e-3, batch 128, gamma 0.98; one update
    # per two env steps and a hard target copy every 100 updates keep it within seconds on a CPU
    algo=DQNConfig(lr=1e-3, batch_size=128, learning_starts=500, updates_per_step=0.5, target_update_interval=100,
                   epsilon=0.5),
    storage=ReplayConfig(num_steps=N_BITS, memory_size=100_000, gamma=0.98,
                         her=HERConfig(strategy="future", k=4)),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=5_000, eval_every=1_000, eval_episodes=100),
    schedules=(Schedule(kind="algo", name="epsilon", points=((0, 0.5), (1_250, 0.05))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
