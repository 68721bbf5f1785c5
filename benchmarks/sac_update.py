"""One SAC gradient update, colonyrl against SB3, and the matmul floor under both.

Why: the off-policy benchmark (``offpolicy.py``) times whole runs; this one isolates the update,
which is most of a SAC Pendulum-v1 env step with the RL Zoo's [256, 256] networks, and asks how
fast it can be on this machine at all:

* **colonyrl**: ``SAC.compute_gradients`` (what a GWorker runs) + ``SAC.apply_gradients`` (the
  Learner: three Adam steps, Polyak update) on a batch of 256 sampled from a ``ReplayStorage``
  filled with random Pendulum-v1 transitions (sampling included);
* **SB3**: ``SAC.train(gradient_steps=1, batch_size=256)`` after ``learn`` filled its buffer with
  the same number of random transitions (sampling included);
* **floor**: the floating-point operations of one colonyrl update, counted by
  ``torch.profiler`` (``with_flops``: matrix products), divided by the rate of a 256x256x256 matmul
  measured here. Both implementations do the same products (SB3's critic step before its actor
  loss changes the order, not the count), so no implementation of this update on this machine
  and thread count runs faster than the floor;
* same torch thread count on both sides (``--threads``); colonyrl's ``SACConfig.loss_threads``
  is the preset's (2: the critic's and the actor's objectives at once, a second core) unless
  ``--loss-threads`` says otherwise, and the floor is one thread's; median of ``--repeats`` timed blocks of
  ``--updates`` updates each, after ``--warmup`` untimed updates.

Usage::

    .venv/bin/python benchmarks/sac_update.py --threads 1
    .venv/bin/python benchmarks/sac_update.py --threads 2 --json sac-update-2t.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def _timed(fn: Any, warmup: int, updates: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(updates):
            fn()
        blocks.append((time.perf_counter() - start) / updates)
    return blocks


def colonyrl_update(fill: int, loss_threads: int | None = None) -> tuple[Any, Any]:
    """The ``sac-pendulum`` preset's SAC (``loss_threads``: None, the preset's) and a replay memory
    of ``fill`` random transitions; returns (one update as a callable, the SAC)."""
    import gymnasium as gym

    from colonyrl.agents.base import ReplayPlan
    from colonyrl.launch.presets import preset

    cfg = preset("sac-pendulum")
    if loss_threads is not None:
        cfg = cfg.replace(algo=cfg.algo.replace(loss_threads=loss_threads))
    env = gym.make("Pendulum-v1")
    algo = cfg.algo.build(env.observation_space, env.action_space, cfg.actor)
    storage = cfg.storage.build(env.observation_space, env.action_space, 1, algo.policy.extras)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for t in range(fill):
        action = rng.uniform(-2.0, 2.0, size=(1,)).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        storage.add_transitions({"obs": obs[None], "actions": action[None], "rewards": np.array([reward], np.float32),
                                 "next_obs": next_obs[None], "terminated": np.array([terminated]),
                                 "truncated": np.array([truncated])}, "random")
        obs = env.reset(seed=t)[0] if terminated or truncated else next_obs
    plan = ReplayPlan(cfg.algo.batch_size, 0, 1.0)
    generator = torch.Generator().manual_seed(0)

    def update() -> None:
        batch = storage.sample(plan.batch_size, generator)
        result = algo.compute_gradients(batch)
        algo.apply_gradients(result.grads)

    return update, (algo, storage, plan, generator)


def sb3_update(fill: int) -> Any:
    from offpolicy import SB3_SAC
    from stable_baselines3 import SAC

    hp = dict(SB3_SAC)
    net, act = hp.pop("net_arch"), hp.pop("activation")
    assert act == "relu"
    hp["learning_starts"] = fill
    model = SAC("MlpPolicy", "Pendulum-v1", seed=0, verbose=0, policy_kwargs={"net_arch": net}, **hp)
    model.learn(total_timesteps=fill)  # random actions only: nothing is trained before learning_starts

    def update() -> None:
        model.train(gradient_steps=1, batch_size=256)

    return update


def update_flops(state: Any) -> float:
    """Floating-point operations of one colonyrl update (matrix products, as torch.profiler counts)."""
    from torch.profiler import ProfilerActivity, profile

    from colonyrl.agents.off_policy import ConcurrentLosses

    algo, storage, plan, generator = state
    batch = storage.sample(plan.batch_size, generator)
    concurrent, algo.concurrent = algo.concurrent, ConcurrentLosses(1)  # the profiler sees this thread's ops
    try:
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            result = algo.compute_gradients(batch)
            algo.apply_gradients(result.grads)
    finally:
        algo.concurrent = concurrent
    return float(sum(e.flops for e in prof.key_averages() if e.flops))


def matmul_rate(n: int = 256, repeats: int = 2000) -> float:
    """FLOP/s of an n x n x n float32 matmul on this thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(50):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * n**3 * repeats / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loss-threads", type=int, default=None,
                   help="colonyrl's SACConfig.loss_threads (default: the preset's; 2 uses a second core)")
    p.add_argument("--fill", type=int, default=1000, help="random transitions in each replay memory")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="write the figures here as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    noise = common.Noise()
    ours, state = colonyrl_update(args.fill, args.loss_threads)
    theirs = sb3_update(args.fill)
    torch.set_num_threads(args.threads)  # SB3 leaves it alone; make sure
    # Alternate the systems block by block, so a slow spell of the machine hits both.
    t_ours, t_sb3 = [], []
    for _ in range(args.repeats):
        t_ours += _timed(ours, args.warmup if not t_ours else 5, args.updates, 1)
        t_sb3 += _timed(theirs, args.warmup if not t_sb3 else 5, args.updates, 1)
    flops = update_flops(state)
    rate = matmul_rate()
    ms_ours, ms_sb3 = statistics.median(t_ours) * 1e3, statistics.median(t_sb3) * 1e3
    floor_ms = flops / rate * 1e3
    out = {"threads": torch.get_num_threads(), "loss_threads": state[0].config.loss_threads, "colonyrl_ms": ms_ours, "sb3_ms": ms_sb3,
           "colonyrl_blocks_ms": [t * 1e3 for t in t_ours], "sb3_blocks_ms": [t * 1e3 for t in t_sb3],
           "update_gflop": flops / 1e9, "matmul_256_gflops": rate / 1e9, "floor_ms": floor_ms,
           "noise": noise.reading()}
    print(f"torch threads {out['threads']}, colonyrl loss_threads {out['loss_threads']}: one SAC update "
          "(batch 256, [256, 256] nets)")
    print("| | ms per update | vs floor |")
    print("|---|---|---|")
    print(f"| colonyrl (compute_gradients + apply_gradients) | {ms_ours:.2f} | {ms_ours / floor_ms:.2f}x |")
    print(f"| SB3 (SAC.train, 1 gradient step) | {ms_sb3:.2f} | {ms_sb3 / floor_ms:.2f}x |")
    print(f"| floor: {flops / 1e9:.3f} GFLOP of matrix products at {rate / 1e9:.0f} GFLOP/s (256^3 matmul) "
          f"| {floor_ms:.2f} | 1.00x |")
    print(f"SB3 / colonyrl: {ms_sb3 / ms_ours:.2f}; SB3 / floor (the most any implementation could gain): "
          f"{ms_sb3 / floor_ms:.2f}")
    print(f"noise: {out['noise']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
