"""PPO on ALE/Pong-v5 through ale-py's vector env (Nature CNN on uint8 84x84x4 frames), in-process.

Needs the atari extra (``pip install 'colonyrl[atari]'``). Hyperparameters: CleanRL's
``ppo_atari.py`` (Huang et al. 2022, "The 37 Implementation Details of PPO", Atari section;
https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/ppo_atari.py): 8 envs x 128 steps, 4 epochs of
4 minibatches (256 samples), lr 2.5e-4 annealed to 0, gamma 0.99, GAE lambda 0.95, clip 0.1 (value
clip too), entropy 0.01, vf_coef 0.5 (CleanRL's, whose value loss has our 0.5 factor), gradient norm
0.5, 10M env steps; one Nature CNN trunk shared by policy and value (hidden_sizes=()), episodic life
and reward clipping while training (EnvConfig.atari). Sticky actions: Pong-v5's 0.25 (Machado et al.
2018); CleanRL's PongNoFrameskip-v4 has none.
"""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

TOTAL_ENV_STEPS = 10_000_000

SCHEME = TrainConfig(
    # double-buffered: one half of the envs emulates while the CNN acts for the other, 1,178 -> 1,530
    # env steps/s collected on one CWorker (benchmarks/README.md); off for more CWorkers than cores
    env=EnvConfig(id="ALE/Pong-v5", num_envs=8, vectorization="ale", double_buffered=True),
    actor=ActorCriticConfig(hidden_sizes=(), shared_trunk=True, encoder="cnn", cnn_features_dim=512),
    algo=PPOConfig(lr=2.5e-4, num_epochs=4, minibatch_size=256, clip_range=0.1, clip_range_vf=0.1,
                   ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5),
    storage=RolloutConfig(num_steps=128, gamma=0.99, gae_lambda=0.95),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=TOTAL_ENV_STEPS, eval_every=500_000, eval_episodes=4),
    schedules=(Schedule(kind="algo", name="lr", points=((0, 2.5e-4), (TOTAL_ENV_STEPS, 0.0))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
