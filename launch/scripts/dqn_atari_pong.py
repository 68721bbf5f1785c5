"""DQN on ALE/Pong-v5 through ale-py's vector env (Nature CNN on uint8 frames, target network), in-process.

Needs the atari extra (``pip install 'colonyrl[atari]'``). Hyperparameters: CleanRL's
``dqn_atari.py`` (https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/dqn_atari.py; Mnih et al.
2015): one env, Adam lr 1e-4, batch 32, gamma 0.99, one update every 4 env steps, a hard target
copy every 1000 env steps (250 updates here, whose unit is updates), epsilon 1 -> 0.01 over the
first 10% of 10M env steps, learning from 80k transitions, no gradient clipping. The buffer is RL
Zoo's 100k (hyperparams/dqn.yml, atari) instead of CleanRL's 1M: frames are kept as uint8, but obs
and next_obs of 100k transitions already take 2 x 100k x 28 KB = 5.6 GB.
"""

from __future__ import annotations

import sys

from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig

TOTAL_ENV_STEPS = 10_000_000

SCHEME = TrainConfig(
    env=EnvConfig(id="ALE/Pong-v5", num_envs=1, vectorization="ale"),
    actor=ActorCriticConfig(hidden_sizes=(), activation="relu", ortho_init=False, encoder="cnn", cnn_features_dim=512),
    algo=DQNConfig(lr=1e-4, batch_size=32, learning_starts=80_000, updates_per_step=0.25,
                   target_update_interval=250, max_grad_norm=None, epsilon=1.0),
    storage=ReplayConfig(num_steps=64, memory_size=100_000, gamma=0.99),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=TOTAL_ENV_STEPS, eval_every=500_000, eval_episodes=4),
    schedules=(Schedule(kind="algo", name="epsilon", points=((0, 1.0), (TOTAL_ENV_STEPS // 10, 0.01))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
