"""PPO on CartPole-v1 on a local Ray instance: 2 GWorkers x 2 CWorkers, gradients averaged centrally.

Pass ``--scheme.address ray://...`` (or an address of ``ray start``) to run on an existing cluster;
per-worker resources (``--scheme.col-worker-resources.num-cpus``) decide where workers go.
"""

from __future__ import annotations

import sys

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="CartPole-v1", num_envs=4),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    algo=PPOConfig(lr=1e-3, num_epochs=20, minibatch_size=128, clip_range=0.2),
    storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
    scheme=SchemeConfig(
        num_grad_workers=2,  # each GWorker: a Ray actor with its own algorithm replica
        num_col_workers=2,  # per GWorker: Ray actors that send rollouts to it
        grad_worker_resources=Resources(num_cpus=0.5),
        col_worker_resources=Resources(num_cpus=0.25),
    ),
    run=RunConfig(total_env_steps=100_000, eval_every=10_000, stop_at_return=475.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
