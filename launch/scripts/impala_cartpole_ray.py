"""IMPALA on CartPole-v1 on a local Ray instance: 2 GWorkers x 2 CWorkers, async collection.

CWorkers collect continuously with whatever weights they last got, so every rollout is some
updates old (the ``policy_lag`` metric); V-trace corrects for it on each GWorker with the current
policy (Espeholt et al. 2018). The Learner averages the two GWorkers' gradients and applies them.
"""

from __future__ import annotations

import sys

from colonyrl.agents.impala import IMPALAConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

SCHEME = TrainConfig(
    env=EnvConfig(id="CartPole-v1", num_envs=8),
    actor=ActorCriticConfig(hidden_sizes=(64, 64)),
    # Each GWorker's round is the 1-2 rollouts of 8 x 32 steps that are ready, learned from in 2
    # passes of batches of 4 whole env columns (SequencePlan). Tried on seeds 0-9 (tests/launch/
    # test_vtrace_learning.py's run): every run reached a periodic 500 within 20k-190k env steps
    # (median ~40k), final evaluations 495.6-500; lr 1e-3 or one pass of 256 plateaued longer,
    # 4 passes collapsed on one seed, gamma 0.99 took up to 200k.
    algo=IMPALAConfig(lr=5e-4, optimizer="adam", eps=1e-5, num_epochs=2, minibatch_size=128),
    storage=RolloutConfig(num_steps=32, gamma=0.98),
    scheme=SchemeConfig(
        num_grad_workers=2,
        num_col_workers=2,
        collection="async",
        grad_worker_resources=Resources(num_cpus=0.5),
        col_worker_resources=Resources(num_cpus=0.25),
    ),
    run=RunConfig(total_env_steps=300_000, eval_every=10_000, stop_at_return=500.0),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
