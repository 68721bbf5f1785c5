"""ALE Pong collection: env steps/s that colonyrl's CWorkers deliver against ale-py's own vector env.

Rows (issue 11's benchmark; target: colonyrl >= 50 % of the reference rate):

* ``ale-py``: the reference, ``gymnasium.make_vec("ALE/Pong-v5", num_envs=N)`` (ale-py's
  ``AtariVectorEnv`` with its own defaults, threads included) stepped with random actions: emulation
  and preprocessing only, no policy, nothing sent anywhere.
* ``in-process``: one CWorker in this process (the in-process scheme's path), N envs.
* ``ray xk`` (k = ``--counts``, 1 and 2 by default): a CWorkerSet of k Ray actors, N/k envs each
  (the same total N), its rollouts fetched into this process as a GWorker does (sync rounds,
  ``collection_throughput.measure``).
* ``..., double-buffered``: the same with ``EnvConfig(double_buffered=True)`` (envs/split.py): each
  CWorker's envs in two halves, one emulating in ale-py's threads while the CNN acts for the other.

Every CWorker acts with the ppo-atari-pong preset's Nature CNN (fixed initial weights, one torch
thread) and ``EnvConfig(vectorization="ale")`` (``--ale-threads`` ale-py threads per CWorker), and
collects ``--steps``-step rollouts; so colonyrl's rate includes the policy's forward passes, the
reference does not. Each row: ``--repeats`` timed windows of ``--window`` s after ``--warmup`` s.

Usage::

    .venv/bin/python benchmarks/atari_collection.py                 # full run (a few minutes)
    .venv/bin/python benchmarks/atari_collection.py --quick         # smoke run, no Ray (~10 s)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from collection_throughput import initial_weights, measure  # noqa: E402

#: Issue 11: collection at >= this fraction of ale-py's own vector env rate (6.3k steps/s there).
TARGET_FRACTION = 0.5
ENV_ID = "ALE/Pong-v5"


def reference_rate(num_envs: int, warmup_s: float, window_s: float) -> dict[str, Any]:
    """Env steps/s of ale-py's vector env as ``gymnasium.make_vec`` builds it, random actions."""
    import ale_py
    import gymnasium as gym
    import numpy as np

    gym.register_envs(ale_py)
    env = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        n = env.single_action_space.n

        def run(seconds: float) -> tuple[int, float]:
            steps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                env.step(rng.integers(0, n, num_envs))
                steps += num_envs
            return steps, time.perf_counter() - t0

        run(warmup_s)
        steps, seconds = run(window_s)
    finally:
        env.close()
    return {"env_steps": steps, "seconds": seconds, "fps": steps / seconds}


def components_for(num_envs: int, args: argparse.Namespace, double_buffered: bool = False) -> Any:
    """The ppo-atari-pong preset's components with ``num_envs`` envs and ``--steps``-step rollouts."""
    from colonyrl.launch.scripts.ppo_atari_pong import SCHEME

    base = SCHEME.components()
    env = base.env.replace(num_envs=num_envs, atari=base.env.atari.replace(num_threads=args.ale_threads),
                           double_buffered=double_buffered)
    return dataclasses.replace(base, env=env, storage=base.storage.replace(num_steps=args.steps), seed=args.seed)


def _rows(label: str, fn: Any, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for r in range(repeats):
        row = {"row": label, "repeat": r, **fn()}
        print(f"  {label} pass {r}: {row['fps']:.0f} env steps/s", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from colonyrl.scheme.runtime import init_process
    from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec

    init_process()
    noise = common.Noise()
    rows = _rows("ale-py", lambda: reference_rate(args.num_envs, args.warmup, args.window), args.repeats)
    weights = initial_weights(components_for(args.num_envs, args))
    for db in _buffering(args):
        local = CWorkerSet(CWorkerSpec(0, 1, False), components_for(args.num_envs, args, db))
        try:
            rows += _rows(_label("in-process", db), lambda c=local: measure(c, weights, "sync", args.warmup,
                                                                             args.window), args.repeats)
        finally:
            local.close()
    if args.counts:
        rows += _ray_rows(args, weights)
    ref = statistics.median(r["fps"] for r in rows if r["row"] == "ale-py")
    summary = {}
    for label in dict.fromkeys(r["row"] for r in rows):
        fps = statistics.median(r["fps"] for r in rows if r["row"] == label)
        summary[label] = {"fps": fps, "fraction_of_ale_py": fps / ref}
    return {"config": {**vars(args), "env_id": ENV_ID, "target_fraction": TARGET_FRACTION},
            "rows": rows, "summary": summary, "noise": noise.reading()}


def _buffering(args: argparse.Namespace) -> list[bool]:
    return [False, True] if args.double_buffered else [False]


def _label(row: str, double_buffered: bool) -> str:
    return f"{row}, double-buffered" if double_buffered else row


def _ray_rows(args: argparse.Namespace, weights: dict[str, Any]) -> list[dict[str, Any]]:
    from colonyrl.scheme import remote
    from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec

    owns = remote.ensure_ray(None, max(args.counts))
    rows: list[dict[str, Any]] = []
    try:
        for k, db in ((k, db) for k in args.counts for db in _buffering(args)):
            if args.num_envs % k:
                raise SystemExit(f"--num-envs {args.num_envs} does not split over {k} CWorkers")
            cworkers = CWorkerSet(CWorkerSpec(0, k, True, num_cpus=1), components_for(args.num_envs // k, args, db))
            try:
                cworkers.ping()  # every actor built (env, first reset) before timing
                rows += _rows(_label(f"ray x{k}", db), lambda c=cworkers: measure(c, weights, "sync", args.warmup,
                                                                                   args.window), args.repeats)
            finally:
                cworkers.close()
    finally:
        if owns:
            remote.shutdown()
    return rows


def table(result: dict[str, Any]) -> str:
    lines = ["| row | env steps/s (median) | of ale-py's rate |", "| --- | ---: | ---: |"]
    for label, s in result["summary"].items():
        lines.append(f"| {label} | {s['fps']:.0f} | {100 * s['fraction_of_ale_py']:.0f} % |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: short windows, no Ray rows")
    p.add_argument("--num-envs", type=int, default=8, help="total Pong envs (split over the CWorkers)")
    p.add_argument("--steps", type=int, default=128, help="rollout length per CWorker (the preset's)")
    p.add_argument("--counts", type=int, nargs="*", default=[1, 2], help="Ray CWorker counts")
    p.add_argument("--ale-threads", type=int, default=1, help="ale-py threads per CWorker (0: ale-py picks)")
    p.add_argument("--no-double-buffered", dest="double_buffered", action="store_false",
                   help="only the plain rows (default: each row also double-buffered)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "atari_collection.json")
    args = p.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps, args.counts = 2, 16, []
        args.warmup, args.window, args.repeats = 0.2, 0.5, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
