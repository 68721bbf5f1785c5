"""SAC on Pendulum-v1 on a local Ray instance: 2 GWorkers (one replay memory each) x 2 CWorkers.

Every GWorker samples its own memory, fed by its CWorkers over the wire; the Learner averages the
two GWorkers' gradients (a batch of 2 x 256) and applies them, target critics included. Pass
``--scheme.update decentralized`` to all-reduce among the GWorkers instead.
"""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, SchemeConfig
from colonyrl.storage.replay import ReplayConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="Pendulum-v1", num_envs=1),
    actor=ActorCriticConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False),
    # Per GWorker: 2 CWorkers x 1 env x 8 steps a round = 16 transitions, 16 updates of its share.
    algo=SACConfig(lr=1e-3, batch_size=256, learning_starts=100, updates_per_step=1.0, tau=0.005,
                   scripted=True),  # the same numbers as eager, less Python per op (agents/sac_scripted.py)
    storage=ReplayConfig(num_steps=8, memory_size=200_000, gamma=0.99),
    scheme=SchemeConfig(
        num_grad_workers=2,
        num_col_workers=2,
        grad_worker_resources=Resources(num_cpus=0.5),
        col_worker_resources=Resources(num_cpus=0.25),
    ),
    run=RunConfig(total_env_steps=40_000, eval_every=4_000),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
