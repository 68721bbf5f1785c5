"""DD-PPO on CartPole-v1 on a local Ray instance: 2 GWorkers x 2 CWorkers, decentralized updates.

Decentralized distributed PPO (Wijmans et al. 2019, "DD-PPO: Learning Near-Perfect PointGoal
Navigators from 2.5 Billion Frames", https://arxiv.org/abs/1911.00357): no parameter server.
Every GWorker holds a replica of the weights and the optimizer, computes PPO's gradient on its own
minibatch, all-reduces it with the others (torch.distributed, gloo on CPU, NCCL on CUDA) and
applies the average itself; the replicas stay identical (same seed, same averaged gradients), and
the Learner only counts and logs. Stragglers are preempted as the paper does: once half of a
GWorker's CWorkers delivered their rollout, the others stop as soon as they have a quarter of
their steps, and their partial rollouts are used.
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
    # The ppo-cartpole-ray preset's PPO (4 envs x 32 steps per CWorker, 20 epochs of minibatches of
    # 128, lr 1e-3, gamma 0.98, lambda 0.8), with the update decentralized.
    env=EnvConfig(id="CartPole-v1", num_envs=4),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    algo=PPOConfig(lr=1e-3, num_epochs=20, minibatch_size=128, clip_range=0.2),
    storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
    scheme=SchemeConfig(
        num_grad_workers=2,
        num_col_workers=2,
        update="decentralized",  # GWorkers all-reduce their gradients and each applies them
        gradients="sync",  # the only value with decentralized updates: every GWorker joins every all-reduce
        # Preemption (the paper's section 4.2; habitat-lab's DD-PPO trainer preempts once a
        # fraction sync_frac = 0.6 of the workers are done and a rollout has at least
        # SHORT_ROLLOUT_THRESHOLD = 0.25 of its steps). The quorum is ceil(fraction x CWorkers) of
        # a GWorker's CWorkers: with 2 CWorkers, 0.6 would be both, so 0.5.
        fraction_workers=0.5,
        fraction_samples=0.25,
        grad_worker_resources=Resources(num_cpus=0.5),
        col_worker_resources=Resources(num_cpus=0.25),
    ),
    run=RunConfig(total_env_steps=100_000, eval_every=10_000, stop_at_return=475.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
