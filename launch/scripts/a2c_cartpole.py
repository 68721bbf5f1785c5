"""A2C on CartPole-v1 (SB3's defaults, 8 envs as the RL Zoo, a higher lr), in-process."""

from __future__ import annotations

import sys

from colonyrl.agents.a2c import A2CConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    # RL Zoo's hyperparams/a2c.yml CartPole-v1: 8 envs, ent_coef 0.0, otherwise SB3's A2C defaults:
    # n_steps 5 (a round: 8 x 5 = 40 env steps, one gradient), gamma 0.99, gae_lambda 1.0,
    # RMSprop(alpha 0.99, eps 1e-5), max_grad_norm 0.5, vf_coef 0.5 (our 1.0, agents/a2c.py).
    # lr 3e-3 instead of 7e-4: seeds 0-7 all reached a perfect periodic evaluation (500) by 40k env
    # steps, and scored 500 on the final one (7e-4: 20k-90k on seeds 0-2; 2e-3: 10k-60k).
    env=EnvConfig(id="CartPole-v1", num_envs=8),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    algo=A2CConfig(lr=3e-3, ent_coef=0.0),
    storage=RolloutConfig(num_steps=5, gamma=0.99, gae_lambda=1.0),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    # Stop at a perfect periodic evaluation (500), not 475: a policy that just reached 475 on the
    # periodic seeds can score less on the final evaluation's own seeds.
    run=RunConfig(total_env_steps=200_000, eval_every=10_000, stop_at_return=500.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
