"""Presets as shipped: what each one reaches, per seed, for the presets no other benchmark measures.

Each (preset, seed) trains in a fresh process through ``train()`` with the preset's own budget,
periodic evaluations and early stop; untracked (no MLflow) so that only training is timed. Reported
per run: env steps at the first periodic evaluation at or above the preset's ``stop_at_return``
(``--threshold``; without either, CartPole's 475), the final evaluation (``RunConfig.eval_episodes`` episodes on their own seeds,
after training: the independent one), train env steps/s (setup and evaluations excluded) and the
wall-clock. Ray presets start their own local Ray instance per process.

Usage::

    .venv/bin/python benchmarks/presets.py --presets a3c-cartpole-ray ddppo-cartpole-ray apex-dqn-cartpole-ray \\
        --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFAULT_PRESETS = ("a3c-cartpole-ray", "ddppo-cartpole-ray", "apex-dqn-cartpole-ray")


def _one(preset_name: str, seed: int, threshold: float | None, overrides: dict[str, Any], queue: Any) -> None:
    from colonyrl.launch.presets import preset
    from colonyrl.launch.train import train
    from colonyrl.scheme.runtime import init_process

    init_process()
    cfg = preset(preset_name)
    with tempfile.TemporaryDirectory(prefix="colonyrl-presets-") as tmp:
        run = cfg.run.replace(seed=seed, track=False, progress=False, output_dir=f"{tmp}/runs",
                              checkpoint_dir=f"{tmp}/ckpt", checkpoint_every_min=None, **overrides)
        result = train(cfg.replace(run=run))
    target = threshold if threshold is not None else cfg.run.stop_at_return or common.SOLVE_RETURN
    reached = next((steps for steps, mean in result.evaluations if target is not None and mean >= target), None)
    train_s = result.train_end_s - result.setup_time_s - result.eval_time_s
    steps = result.counters["env_steps"]
    queue.put({"preset": preset_name, "seed": seed, "threshold": target, "env_steps_at_threshold": reached,
               "env_steps": steps, "final_eval": result.evaluation.mean, "train_fps": steps / max(train_s, 1e-9),
               "wall_s": result.wall_time_s, "evaluations": result.evaluations})


def run_one(preset_name: str, seed: int, threshold: float | None, overrides: dict[str, Any],
            timeout_s: float) -> dict[str, Any]:
    """One (preset, seed) in a fresh spawned process (its own torch, Ray and env state)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_one, args=(preset_name, seed, threshold, overrides, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout_s)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| preset | seeds | env steps at threshold (median, min-max; reached/runs) | final eval (median, min-max) "
             "| train env steps/s (median) |", "| --- | --- | --- | --- | ---: |"]
    for name in dict.fromkeys(r["preset"] for r in rows):
        runs = [r for r in rows if r["preset"] == name]
        reached = [r["env_steps_at_threshold"] for r in runs if r["env_steps_at_threshold"] is not None]
        at = (f"{common.fmt_median_range(reached, 0)} ({len(reached)}/{len(runs)})" if reached
              else f"not reached (0/{len(runs)})")
        lines.append(f"| `{name}` (>= {runs[0]['threshold']}) | {', '.join(str(r['seed']) for r in runs)} | {at} | "
                     f"{common.fmt_median_range([r['final_eval'] for r in runs])} | "
                     f"{statistics.median(r['train_fps'] for r in runs):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threshold", type=float, default=None, help="default: each preset's stop_at_return")
    p.add_argument("--total-env-steps", type=int, default=None, help="default: each preset's budget (tests: tiny)")
    p.add_argument("--eval-every", type=int, default=None, help="default: each preset's")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "presets.json")
    args = p.parse_args(argv)
    noise = common.Noise()
    rows = []
    overrides = {key: value for key, value in (("total_env_steps", args.total_env_steps),
                                                ("eval_every", args.eval_every)) if value is not None}
    for name in args.presets:
        for seed in args.seeds:
            row = run_one(name, seed, args.threshold, overrides, args.timeout)
            print(f"  {name} seed {seed}: threshold at {row['env_steps_at_threshold']}, final {row['final_eval']:.1f}, "
                  f"{row['train_fps']:.0f} env steps/s", file=sys.stderr, flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args), "rows": rows, "noise": noise.reading()}, indent=2,
                                   default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
