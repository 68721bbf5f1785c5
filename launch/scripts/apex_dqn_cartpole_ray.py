"""Ape-X-like DQN on CartPole-v1 on a local Ray instance: one GWorker (prioritized replay) x 4 CWorkers.

Distributed prioritized experience replay (Horgan et al. 2018, "Distributed Prioritized
Experience Replay", https://arxiv.org/abs/1803.00933): many actors step their envs continuously
and feed one prioritized replay memory; one learner samples it, learns with n-step double Q-learning
on a dueling network and sends its weights back to the actors from time to time. Here the
learner is the GWorker (in the Learner's process), the actors are its CWorkers (Ray actors,
``--scheme.collection async``: they never wait for the learner), and the memory is the GWorker's
(``--storage.prioritized``, ``--storage.n-step 3``). New transitions enter at the memory's largest
priority (Schaul et al. 2016), where Ape-X's actors compute a first priority themselves.

Differences from the paper: every CWorker explores with the same epsilon, annealed by a
schedule (the dqn-cartpole preset's), not Ape-X's fixed per-actor epsilon_i = 0.4^(1 + 7 i / (N - 1)):
colonyrl has no per-CWorker acting parameters yet. More GWorkers (``--scheme.num-grad-workers``)
shard the replay: each has its own memory, fed by its own CWorkers.
"""

from __future__ import annotations

import sys

from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig, parse_args
from colonyrl.launch.train import train
from colonyrl.scheme.scheme import Resources, SchemeConfig
from colonyrl.storage.replay import ReplayConfig

SCHEME = TrainConfig(
    # Each CWorker: 2 envs x 32 steps = 64 transitions per rollout (Ape-X's actors send theirs in
    # batches of 50). The learner: the dqn-cartpole preset's (RL Zoo's DQN CartPole-v1 settings:
    # lr 2.3e-3, batch 64, [256, 256], learning from 1000 transitions, 0.5 updates per stored
    # transition, a target copy every 128 updates), with the paper's double Q, dueling head,
    # 3-step returns and prioritization (alpha 0.6, beta 0.4). Not tuned or measured yet.
    env=EnvConfig(id="CartPole-v1", num_envs=2),
    actor=ActorCriticConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False),
    algo=DQNConfig(lr=2.3e-3, batch_size=64, learning_starts=1000, updates_per_step=0.5,
                   target_update_interval=128, epsilon=1.0, double_q=True, dueling=True),
    storage=ReplayConfig(num_steps=32, memory_size=100_000, gamma=0.99, n_step=3, prioritized=True,
                         alpha=0.6, beta=0.4),
    scheme=SchemeConfig(
        num_grad_workers=1,  # one learner and one memory, in the Learner's process
        num_col_workers=4,  # the actors: Ray actors that collect continuously
        collection="async",
        col_worker_resources=Resources(num_cpus=0.25),
    ),
    run=RunConfig(total_env_steps=60_000, eval_every=5_000),
    # epsilon 1 -> 0.04 over the first 8000 env steps; it reaches every CWorker as a runtime change
    schedules=(Schedule(kind="algo", name="epsilon", points=((0, 1.0), (8_000, 0.04))),),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
