"""SAC on Pendulum-v1 (tanh-Gaussian policy, twin critics, learned entropy coefficient), in-process."""

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
    env=EnvConfig(id="Pendulum-v1", num_envs=1),
    # RL Zoo's hyperparams/sac.yml Pendulum-v1: 20k steps, learning_rate 1e-3, everything else SB3's
    # SAC defaults: [256, 256] ReLU MLPs with torch's default init, batch 256, tau 0.005,
    # gamma 0.99, one gradient step per env step, learning_starts 100, a 1M-transition buffer.
    actor=ActorCriticConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False),
    # loss_threads=2: the critic's and the actor's gradients at once on two cores (the same numbers
    # as one thread; agents/off_policy.py ConcurrentLosses). One GWorker in-process has the cores.
    # scripted: both objectives and acting as TorchScript, the same numbers with less Python per op
    # (agents/sac_scripted.py).
    algo=SACConfig(lr=1e-3, batch_size=256, learning_starts=100, updates_per_step=1.0, tau=0.005, loss_threads=2,
                   scripted=True),
    storage=ReplayConfig(num_steps=1, memory_size=1_000_000, gamma=0.99),
    scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
    run=RunConfig(total_env_steps=20_000, eval_every=2_000),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
