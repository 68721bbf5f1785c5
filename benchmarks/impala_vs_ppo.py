"""IMPALA and APPO against PPO, all with async collection on Ray, at equal env steps.

Async collection hands the GWorkers rollouts collected with older weights (the ``policy_lag``
metric). PPO learns from them as if they were on-policy; IMPALA and APPO correct for the lag with
V-trace (Espeholt et al. 2018). This benchmark runs the three on CartPole-v1 side by side:

* ``impala-cartpole-ray`` and ``appo-cartpole-ray`` as shipped, and ``ppo-cartpole-ray`` with
  ``--scheme.collection async``: each 2 GWorkers x 2 CWorkers on a local Ray instance;
* the same budget for all (``--budget``, default 100k env steps), no early stop, an evaluation
  (10 deterministic episodes, ``train()``'s periodic one) every ``--eval-every`` env steps: the
  learning curve at equal env steps;
* env steps/s over training (evaluations and setup excluded), the mean ``policy_lag`` over the run
  (from its MLflow store), the final evaluation on its own seeds;
* every (system, seed) in a fresh Python process, the order rotating from seed to seed.

Usage::

    .venv/bin/python benchmarks/impala_vs_ppo.py --seeds 0 1            # ~5 min here
    .venv/bin/python benchmarks/impala_vs_ppo.py --seeds 0 --budget 2000 --eval-every 1000 \
        --systems impala ppo-async  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
#: system -> (preset, scheme overrides)
SYSTEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "impala": ("impala-cartpole-ray", {}),
    "appo": ("appo-cartpole-ray", {}),
    "ppo-async": ("ppo-cartpole-ray", {"collection": "async"}),
}


def run_worker(system: str, seed: int, budget: int, eval_every: int) -> dict[str, Any]:
    from colonyrl.launch.presets import preset
    from colonyrl.launch.train import train

    name, overrides = SYSTEMS[system]
    cfg = preset(name)
    with tempfile.TemporaryDirectory(prefix="impala-vs-ppo-") as folder:
        uri = f"sqlite:///{os.path.join(folder, 'mlflow.db')}"
        run = cfg.run.replace(total_env_steps=budget, seed=seed, eval_every=eval_every, stop_at_return=None,
                              tracking_uri=uri, progress=False, output_dir=os.path.join(folder, "runs"),
                              checkpoint_dir=os.path.join(folder, "ckpt"), checkpoint_every_min=None)
        cfg = cfg.replace(run=run, scheme=cfg.scheme.replace(**overrides))
        result = train(cfg)
        import mlflow

        lag = [m.value for m in mlflow.MlflowClient(tracking_uri=uri).get_metric_history(result.run_id, "policy_lag")]
    train_s = result.train_end_s - result.setup_time_s - result.eval_time_s
    return {"system": system, "preset": name, "seed": seed, "env_steps": result.counters["env_steps"],
            "updates": result.counters["updates"], "train_s": train_s,
            "train_fps": result.counters["env_steps"] / train_s if train_s > 0 else None,
            "evaluations": [list(e) for e in result.evaluations], "final_eval": result.evaluation.mean,
            "policy_lag_mean": statistics.fmean(lag) if lag else None, "policy_lag_max": max(lag) if lag else None,
            "logged_policy_lag_rows": len(lag)}


def run_one(system: str, seed: int, budget: int, eval_every: int, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--system", system, "--seed", str(seed),
           "--budget", str(budget), "--eval-every", str(eval_every)]
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"system": system, "seed": seed, "error": f"timed out after {timeout_s:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        return {"system": system, "seed": seed, "error": f"worker exited {proc.returncode} without a result",
                "stderr_tail": proc.stderr[-3000:]}
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = time.time() - start
    return res


def table(runs: list[dict[str, Any]], eval_every: int, budget: int) -> str:
    """Median evaluation per system at each evaluation point, then throughput, lag and final."""
    ok = [r for r in runs if "error" not in r]
    points = list(range(eval_every, budget + 1, eval_every))
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in ok)]

    def at(run: dict[str, Any], step: int) -> float | None:
        # train() evaluates at the end of the round that crosses each multiple of eval_every
        found = [m for s, m in run["evaluations"] if step <= s < step + eval_every]
        return found[0] if found else None

    lines = ["| env steps | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for step in points:
        cells = []
        for s in systems:
            vals = [v for r in ok if r["system"] == s and (v := at(r, step)) is not None]
            cells.append(f"{statistics.median(vals):.1f}" if vals else "-")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")

    def med(s: str, key: str, fmt: str) -> str:
        vals = [r[key] for r in ok if r["system"] == s and r.get(key) is not None]
        return format(statistics.median(vals), fmt) if vals else "-"

    lines += ["| train env steps/s | " + " | ".join(med(s, "train_fps", ".0f") for s in systems) + " |",
              "| mean policy lag | " + " | ".join(med(s, "policy_lag_mean", ".1f") for s in systems) + " |",
              "| final evaluation (own seeds) | " + " | ".join(med(s, "final_eval", ".1f") for s in systems) + " |"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per worker process")
    p.add_argument("--json", help="write the raw results here (default benchmarks/results/impala_vs_ppo.json)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(RESULT_MARK + json.dumps(run_worker(args.system, args.seed, args.budget, args.eval_every)), flush=True)
        return 0
    noise = common.Noise()
    names = list(args.systems)
    runs = []
    for i, seed in enumerate(args.seeds):
        for system in names[i % len(names):] + names[:i % len(names)]:
            res = run_one(system, seed, args.budget, args.eval_every, args.timeout)
            runs.append(res)
            summary = res.get("error") or (f"{res['env_steps']} env steps, {res['train_fps']:.0f} env steps/s, lag "
                                           f"{res['policy_lag_mean']}, final {res['final_eval']:.1f}")
            print(f"  {system} seed {seed}: {summary}", file=sys.stderr, flush=True)
    text = table(runs, args.eval_every, args.budget)
    print(f"## IMPALA / APPO / PPO, async collection on Ray (2 x 2), CartPole-v1, {args.budget} env steps, "
          f"seeds {args.seeds}: median evaluation (10 deterministic episodes)\n")
    print(text)
    reading = noise.reading()
    print(f"\nnoise: {reading}")
    out = Path(args.json) if args.json else HERE / "results" / "impala_vs_ppo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "table": text, "noise": reading, "budget": args.budget,
                               "eval_every": args.eval_every, "seeds": args.seeds}, indent=1))
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
