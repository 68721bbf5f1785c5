"""The ppo-atari-pong policy's acting cost per observation at several batch sizes, one torch thread.

Why: a CWorker acts for all its envs in one batch, and the Nature CNN's forward pass is cheaper per
frame in larger batches. This is what decides how many Pong envs a CWorker needs before acting
costs less than emulating (``atari_collection.py``: ale-py spends ~0.5 ms of a core per env step).

What is timed: ``policy.act(obs)`` as ``CWorker.collect`` calls it (CNN, both heads, sampling,
log-prob), on random uint8 frames of the preset's observation space, the median of ``--repeats``
blocks of ``--calls`` calls after ``--warmup`` untimed ones.

Usage::

    .venv/bin/python benchmarks/cnn_forward.py [--batches 1 4 8 16 32]
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


def measure(batches: list[int], calls: int, warmup: int, repeats: int) -> list[dict[str, Any]]:
    from colonyrl.launch.scripts.ppo_atari_pong import SCHEME
    from colonyrl.scheme.runtime import init_process

    init_process()  # one torch thread, as every worker
    components = SCHEME.components()
    spaces = components.spaces()
    policy = components.build_algorithm(spaces).policy
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        obs = rng.integers(0, 256, (batch, *spaces.observation.shape), dtype=np.uint8)
        for _ in range(warmup):
            policy.act(obs)
        blocks = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                policy.act(obs)
            blocks.append((time.perf_counter() - start) / calls)
        per_call = statistics.median(blocks)
        rows.append({"batch": batch, "ms_per_call": per_call * 1e3, "ms_per_obs": per_call * 1e3 / batch})
        print(f"  batch {batch}: {per_call * 1e3:.2f} ms per call, {per_call * 1e3 / batch:.3f} ms per observation",
              file=sys.stderr, flush=True)
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cnn_forward.json")
    p.add_argument("--quick", action="store_true", help="smoke run: batches 1 and 2, few calls")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="envs acted for at once")
    for name, default in (("calls", 100), ("warmup", 10), ("repeats", 3)):
        p.add_argument(f"--{name}", type=int, default=default)
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.calls, args.warmup, args.repeats = [1, 2], 3, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = measure(args.batches, args.calls, args.warmup, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2, default=str))
    print("| batch | ms per call | ms per observation |\n| ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch']} | {r['ms_per_call']:.2f} | {r['ms_per_obs']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
