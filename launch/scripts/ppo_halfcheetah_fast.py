"""PPO on HalfCheetah-v5 with 8 envs per CWorker and 256-sample minibatches, in-process.

Needs the mujoco extra (``pip install 'colonyrl[mujoco]'``). The ppo-halfcheetah preset (CleanRL's
``ppo_continuous_action.py``) with the round spread over 8 envs of 256 steps (2,048 env steps per
round, as there) and minibatches of 256 samples: 10 epochs of 8 minibatches, 80 gradient steps per
round instead of 320. Everything else is CleanRL's: lr 3e-4 annealed to 0, gamma 0.99, GAE lambda
0.95, clip 0.2 (value clip too), no entropy bonus, gradient norm 0.5, separate 64x64 tanh networks,
observation and reward normalization, 1M steps.

Why: at one env and 64-sample minibatches a round costs one ``act()`` and one vector-env step per
env step and 320 minibatch updates of two tiny MLPs, each mostly fixed per-call overhead. Eight envs
act in one batched call and 256-sample minibatches cost about what 64-sample ones do, so the same
budget trains in about a third of the time. More envs with larger minibatches is how PPO is run at
scale (Rudin et al. 2021, "Learning to Walk in Minutes Using Massively Parallel Deep Reinforcement
Learning"; Andrychowicz et al. 2021, "What Matters in On-Policy Reinforcement Learning?", measure
both choices on MuJoCo tasks). Its return at 1M env steps against the
one-env preset's is in benchmarks/README.md; the speed is measured by ``benchmarks/halfcheetah_ppo.py
--preset ppo-halfcheetah-fast``.
"""

from __future__ import annotations

import sys

from colonyrl.launch.config import parse_args
from colonyrl.launch.scripts.ppo_halfcheetah import SCHEME as CLEANRL_SCHEME
from colonyrl.launch.train import train

NUM_ENVS = 8

SCHEME = CLEANRL_SCHEME.replace(
    env=CLEANRL_SCHEME.env.replace(num_envs=NUM_ENVS),
    algo=CLEANRL_SCHEME.algo.replace(minibatch_size=256),
    storage=CLEANRL_SCHEME.storage.replace(num_steps=2048 // NUM_ENVS),
)

if __name__ == "__main__":
    result = train(parse_args(SCHEME))
    sys.exit(0)
