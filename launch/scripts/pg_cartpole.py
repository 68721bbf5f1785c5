"""Vanilla policy gradient (REINFORCE with a learned baseline) on CartPole-v1, in-process."""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.pg import PGConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    # Many envs and a long round: one gradient per round of 32 x 64 = 2048 env steps, returns-to-go
    # (gae_lambda 1.0: Monte-Carlo inside the round, bootstrapped at truncation and at the round's
    # end, never at a termination), Adam at lr 1e-2. Seeds 0-7 each reached a perfect periodic
    # evaluation by 26-31k env steps and 500 on the final one; rounds of 16 x 64 at the same lr
    # took 10-66k (and 20-171k at lr 2e-2): the larger batch is a less noisy gradient.
    env=EnvConfig(id="CartPole-v1", num_envs=32),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    algo=PGConfig(lr=1e-2),
    storage=RolloutConfig(num_steps=64, gamma=0.99, gae_lambda=1.0),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    # Stop at a perfect periodic evaluation (500): the final evaluation runs on its own seeds.
    run=RunConfig(total_env_steps=200_000, eval_every=5_000, stop_at_return=500.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
