"""Collection throughput of one GWorker's CWorkerSet: 1, 2, 4, 8 remote CWorkers, sync and async.

What is measured: env steps/s that one CWorkerSet delivers to its GWorker's process (the rollouts are
fetched into this process, as a GWorker does), with fixed weights and no learning, for two envs:

* ``sleep``: CartPole-v1 whose every sub-env step first sleeps 2 ms (``EnvConfig.step_delay_s``,
  the ``StepDelay`` wrapper around each sub-env). Each CWorker steps its sub-envs one after another
  (``vectorization="sync"``), so a vector step of 4 sub-envs sleeps 4 x 2 ms = 8 ms and one CWorker
  produces at most 500 env steps/s: an I/O-bound env, where workers on 2 cores can overlap sleeps.
* ``cartpole``: plain CartPole-v1: CPU-bound, so 2 cores bound the total whatever the worker count.

Modes (the two collection strategies of ``scheme/strategies.py``):

* ``sync``: rounds of ``CWorkerSet.collect`` (Ray actors): every CWorker collects one rollout, the round
  ends when all have delivered (what ``SyncCollection`` does, no preemption);
* ``async``: ``AsyncCollection.collect`` called in a loop: each worker is handed new weights and
  resubmitted as soon as its rollout is taken, so workers never wait for each other.

Every call carries a new weights version (the same arrays), so each worker loads weights once per
rollout, as in training. Protocol: weak scaling (every CWorker has the same sub-envs and rollout
length, so n workers do n times the work of one), one Ray instance (``ray.init(address="local")``,
enough logical CPUs for every actor at ``--cpus-per-worker``), all actor sets started and pinged
before any timing (actor start-up excluded), then ``--repeats`` passes over every (env, workers,
mode), each a warm-up (``--warmup`` s, not timed) followed by a timed window (``--window`` s,
rounded up to the end of the round / call that crosses it). The worker counts are visited in
alternating order from one pass to the next, so slow drifts of machine load hit every count alike.
Reported: the median over repeats, and speed-ups vs 1 CWorker of the same env and mode (ratio of
medians, and the same-pass ratios). A reference row runs one CWorker in this process (no Ray), as
the in-process scheme does, measured before Ray starts.

Usage::

    .venv/bin/python benchmarks/collection_throughput.py            # full run (~7-8 min)
    .venv/bin/python benchmarks/collection_throughput.py --quick    # smoke run (< 60 s)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
ENVS = ("sleep", "cartpole")
MODES = ("sync", "async")
#: Issue target: on the sleeping env, 8 CWorkers give at least this many times one worker's rate.
TARGET = (8, 6.0)


# ------------------------------------------------------------------------------------------------
# measurement primitives (also used by async_overlap.py)
# ------------------------------------------------------------------------------------------------
def drain(strategy: Any, cworkers: Any, timeout_s: float) -> None:
    """Wait for every rollout an ``AsyncCollection`` still has in flight, and drop it (reading each
    result, so the next measurement starts with every worker idle)."""
    pending = strategy.in_flight.handles
    while pending:
        ready = cworkers.wait(list(pending), timeout_s)
        if not ready:
            raise TimeoutError(f"in-flight rollouts did not arrive within {timeout_s:g} s")
        for handle in ready:
            cworkers.result(handle, pending.pop(handle))


def measure(cworkers: Any, arrays: dict[str, Any], mode: str, warmup_s: float, window_s: float,
            timeout_s: float = 300.0, version0: int = 1) -> dict[str, Any]:
    """Env steps/s a CWorkerSet delivers in ``mode`` ("sync" rounds or "async" continuous).

    Warm-up: calls for ``warmup_s`` (at least one), not timed. Timed: from the return of the last
    warm-up call to the return of the first call that ends at or after ``window_s``. In async mode
    the rollouts in flight at both ends roughly cancel (each worker has one started before the
    window and one unfinished after it); they are drained afterwards, outside the window.
    """
    from colonyrl.scheme.packets import Weights
    from colonyrl.scheme.strategies import AsyncCollection

    version = version0
    strategy = AsyncCollection(None, timeout_s) if mode == "async" else None

    def call() -> list[Any]:
        nonlocal version
        version += 1  # a new version each call: every worker loads weights once per rollout
        weights = Weights(version, arrays)
        return strategy.collect(cworkers, weights) if strategy is not None else cworkers.collect(weights)

    try:
        start = time.perf_counter()
        call()
        while time.perf_counter() - start < warmup_s:
            call()
        t0 = time.perf_counter()
        steps = rollouts = calls = 0
        busy_s = 0.0  # summed over workers: time inside CWorker.collect's env loop
        while True:
            got = call()
            calls += 1
            rollouts += len(got)
            steps += sum(r.env_steps for r in got)
            busy_s += sum(r.info["collect_time_s"] for r in got)
            if time.perf_counter() - t0 >= window_s:
                break
        t1 = time.perf_counter()
    finally:
        if strategy is not None:
            drain(strategy, cworkers, timeout_s)
    # Per-worker rate while collecting: total steps over total collecting time (a mean of the
    # per-rollout rates would overweight the rollouts that ran undisturbed).
    return {"env_steps": steps, "seconds": t1 - t0, "fps": steps / (t1 - t0), "calls": calls,
            "rollouts": rollouts, "worker_fps": steps / busy_s if busy_s > 0 else None,
            "worker_busy_share": busy_s / ((t1 - t0) * max(len(cworkers.names), 1)), "version_end": version}


def initial_weights(components: Any) -> dict[str, Any]:
    """The actor weights every benchmark collects with (seeded like the Learner's)."""
    import torch

    torch.manual_seed(components.seed)
    return components.build_algorithm(components.spaces()).get_weights()


def pin_threads(pids: list[int], cpus: set[int] | None) -> bool:
    """Restrict every thread of these processes to ``cpus`` (None: all CPUs of this process).

    Per thread: a Ray actor runs its methods in a thread of its own (concurrency groups), and
    ``sched_setaffinity(pid)`` alone would only pin the main thread. Linux only; False elsewhere.
    """
    if not hasattr(os, "sched_setaffinity"):
        return False
    target = cpus if cpus is not None else os.sched_getaffinity(0)
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), target)
            except (ProcessLookupError, FileNotFoundError):  # a thread that just ended
                pass
    return True


# ------------------------------------------------------------------------------------------------
# worker side: one process, one Ray instance, every env / count / mode
# ------------------------------------------------------------------------------------------------
def components_for(env: str, args: argparse.Namespace) -> Any:
    """The tuned CartPole preset's actor/algorithm, with the per-worker env and rollout of ``env``."""
    import dataclasses

    from colonyrl.launch.scripts.cartpole_inprocess import SCHEME

    base = SCHEME.components()
    if env == "sleep":
        env_cfg = base.env.replace(num_envs=args.sleep_envs, step_delay_s=args.delay_ms / 1000.0,
                                   vectorization="sync")
        steps = args.sleep_steps
    else:
        env_cfg = base.env.replace(num_envs=args.cartpole_envs, vectorization="sync")
        steps = args.cartpole_steps
    return dataclasses.replace(base, env=env_cfg, storage=base.storage.replace(num_steps=steps), seed=args.seed)


def emit(row: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(row), flush=True)


def measure_env(env: str, components: Any, weights: dict[str, Any], args: argparse.Namespace, timed: Any) -> None:
    """Start a set of n remote CWorkers for every count (all before any timing), then the passes."""
    from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec

    sets: dict[int, Any] = {}
    try:
        t = time.perf_counter()
        for n in args.counts:
            sets[n] = CWorkerSet(CWorkerSpec(0, n, True, num_cpus=args.cpus_per_worker), components)
        for s in sets.values():
            s.ping()  # every actor constructed (env built, first reset done) before timing
        startup = time.perf_counter() - t
        actors = sum(len(s.workers) for s in sets.values())
        print(f"# {env}: {actors} CWorker actors up in {startup:.1f} s", file=sys.stderr, flush=True)
        emit({"kind": "startup", "env": env, "actors": actors, "seconds": startup})
        for r in range(args.repeats):
            # Alternate the order of counts and modes between passes: slow drifts of machine load
            # then hit every configuration alike.
            counts = args.counts if r % 2 == 0 else list(reversed(args.counts))
            modes = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for n in counts:
                for mode in modes:
                    timed({"env": env, "mode": mode, "workers": n, "repeat": r},
                          lambda s=sets[n], mode=mode: measure(s, weights, mode, args.warmup, args.window))
    finally:
        for s in sets.values():
            s.close()


def worker_main(args: argparse.Namespace) -> int:
    from colonyrl.scheme import remote
    from colonyrl.scheme.runtime import init_process
    from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec

    init_process()  # one torch thread here too (the driver is not covered by Ray's OMP setting)
    # Our process tree (Ray included) vs everybody else's, sampled at the ends of each window only:
    # a sampling thread would share the GIL with the driver that receives the rollouts.
    foreign = common.ForeignCPU(interval_s=None)

    def timed(row: dict[str, Any], fn: Any) -> None:
        before = foreign.sample()
        try:
            row.update(fn())
        except Exception as e:  # reported in the table, the run goes on
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc()
        row["others_cores"] = foreign.between(before, foreign.sample())["foreign_cores"]
        emit(row)
        rate = f"{row['fps']:.0f} env steps/s" if "fps" in row else row.get("error")
        print(f"  {row['env']} {row['mode']} x{row['workers']} pass {row['repeat']}: {rate}"
              f" (others {row['others_cores']:.2f} cores)", file=sys.stderr, flush=True)

    comps = {env: components_for(env, args) for env in args.envs}
    weights = {env: initial_weights(c) for env, c in comps.items()}
    # Reference: one CWorker in this process, no Ray running yet (the in-process scheme's path).
    for env in args.envs:
        local = CWorkerSet(CWorkerSpec(0, 1, False), comps[env])
        for r in range(args.repeats):
            timed({"env": env, "mode": "in-process", "workers": 1, "repeat": r},
                  lambda local=local, env=env: measure(local, weights[env], "sync", args.warmup, args.window))
        local.close()

    needed = sum(args.counts) * args.cpus_per_worker  # one env's sets at a time
    t = time.perf_counter()
    owns = remote.ensure_ray(None, needed)
    print(f"# ray.init {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    try:
        for env in args.envs:  # one env at a time: its sets are the only actors alive
            measure_env(env, comps[env], weights[env], args, timed)
    finally:
        if owns:
            remote.shutdown()
        foreign.close()
    return 0


# ------------------------------------------------------------------------------------------------
# parent side: one worker process, the table
# ------------------------------------------------------------------------------------------------
def _fps(rows: list[dict[str, Any]], env: str, mode: str, n: int) -> list[float]:
    return [r["fps"] for r in rows if r.get("env") == env and r.get("mode") == mode and r.get("workers") == n
            and "fps" in r]


def _paired(rows: list[dict[str, Any]], env: str, mode: str, n: int) -> list[float]:
    """Speed-ups of n workers over 1 worker within the same pass (same load conditions)."""
    out = []
    for r in rows:
        if r.get("env") == env and r.get("mode") == mode and r.get("workers") == n and "fps" in r:
            base = [b["fps"] for b in rows if b.get("env") == env and b.get("mode") == mode
                    and b.get("workers") == 1 and b.get("repeat") == r["repeat"] and "fps" in b]
            if base:
                out.append(r["fps"] / base[0])
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pct(rows: list[dict[str, Any]]) -> str:
    vals = [100 * r["worker_busy_share"] for r in rows if r.get("worker_busy_share") is not None]
    return common.fmt_median_range(vals, 0) + " %" if vals else "-"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    fm = common.fmt_median_range
    lines = ["| env | mode | CWorkers | env steps/s | speed-up vs 1 CWorker | same-pass speed-ups"
             " | per-worker env steps/s while collecting | workers' time collecting | others' CPU [cores] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for env in args.envs:
        ref = _fps(rows, env, "in-process", 1)
        ref_rows = [r for r in rows if r.get("env") == env and r.get("mode") == "in-process"]
        lines.append(f"| {env} | in-process (no Ray) | 1 | {fm(ref, 0)} | - | - |"
                     f" {fm([r.get('worker_fps') for r in ref_rows], 0)} | {_pct(ref_rows)}"
                     f" | {fm([r.get('others_cores') for r in ref_rows], 2)} |")
        for mode in MODES:
            base = _median(_fps(rows, env, mode, 1))
            for n in args.counts:
                vals = _fps(rows, env, mode, n)
                sel = [r for r in rows if r.get("env") == env and r.get("mode") == mode and r.get("workers") == n]
                med = _median(vals)
                speed = f"{med / base:.2f}" if med and base else "-"
                lines.append(f"| {env} | {mode} | {n} | {fm(vals, 0)} | {speed} | {fm(_paired(rows, env, mode, n), 2)}"
                             f" | {fm([r.get('worker_fps') for r in sel], 0)} | {_pct(sel)}"
                             f" | {fm([r.get('others_cores') for r in sel], 2)} |")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    n_target, factor = TARGET
    out = []
    if "sleep" not in args.envs or n_target not in args.counts or 1 not in args.counts:
        return [f"Target ({n_target} CWorkers >= {factor:g}x 1 CWorker on the sleeping env): not measured"
                " in this run (needs --envs sleep and --counts including 1 and 8)."]
    for mode in MODES:
        one, many = _median(_fps(rows, "sleep", mode, 1)), _median(_fps(rows, "sleep", mode, n_target))
        if not one or not many:
            out.append(f"Target, sleeping env, {mode}: no result")
            continue
        verdict = "met" if many / one >= factor else "NOT met"
        out.append(f"Target, sleeping env, {mode}: {n_target} CWorkers {many:.0f} env steps/s vs 1 CWorker"
                   f" {one:.0f} = {many / one:.2f}x (>= {factor:g}x): {verdict}.")
    return out


def describe(args: argparse.Namespace) -> str:
    return (f"sleep: CartPole-v1 + {args.delay_ms:g} ms sleep per sub-env step, {args.sleep_envs} sub-envs (sync"
            f" vector env) x {args.sleep_steps} steps = {args.sleep_envs * args.sleep_steps} env steps per rollout"
            f" per CWorker; cartpole: CartPole-v1, {args.cartpole_envs} sub-envs x {args.cartpole_steps} steps ="
            f" {args.cartpole_envs * args.cartpole_steps} env steps per rollout per CWorker. Actor: the tuned"
            f" preset's 64-64 MLP, 1 torch thread per process. Ray actors at num_cpus={args.cpus_per_worker:g};"
            f" warm-up {args.warmup:g} s, window {args.window:g} s, {args.repeats} pass(es); median (min-max).")


def parent_main(args: argparse.Namespace) -> int:
    noise = common.Noise()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"# collection throughput, started {started}; loadavg {noise.load_start}", file=sys.stderr, flush=True)
    waited = 0.0
    if args.wait_quiet > 0:
        foreign = common.ForeignCPU()
        waited = foreign.wait_quiet(args.quiet_cores, 5.0, args.wait_quiet)
        foreign.close()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *_passthrough(args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # inherited by Ray's workers too
    try:  # the worker's stderr (progress, Ray's messages) goes straight through
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent, env=env, timeout=args.timeout)
        stdout, returncode = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        returncode = -1
        print(f"worker timed out after {args.timeout:g} s; reporting what it measured", file=sys.stderr)
    rows = [json.loads(ln[len(RESULT_MARK):]) for ln in stdout.splitlines() if ln.startswith(RESULT_MARK)]
    reading = noise.reading()
    out = Path(args.out) if args.out else HERE / "results" / "collection_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "args": {k: v for k, v in vars(args).items() if k != "worker"},
            "returncode": returncode, "noise": reading, "waited_for_quiet_s": waited,
            "python": sys.version, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "setup": describe(args)}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    measured = [r for r in rows if r.get("kind") != "startup"]
    startup = [r for r in rows if r.get("kind") == "startup"]
    print(f"\n## Collection throughput (env steps/s delivered to the GWorker's process), {started}\n")
    print(describe(args) + "\n")
    print(table(measured, args))
    print()
    for line in verdicts(measured, args):
        print(line)
    errors = [r for r in measured if "error" in r]
    for r in errors:
        print(f"\nFAILED {r['env']} {r['mode']} x{r['workers']} pass {r['repeat']}: {r['error']}\n{r.get('traceback', '')}")
    if startup:
        print("\nActor start-up (excluded from the windows): " + "; ".join(
            f"{s['env']}: {s['actors']} CWorker actors in {s['seconds']:.1f} s" for s in startup) + ".")
    others = [r["others_cores"] for r in measured if "others_cores" in r]
    if others:
        print(f"Other users' CPU during the windows (cores): median {statistics.median(others):.2f}, max"
              f" {max(others):.2f}; waited {waited:.0f} s for quiet before starting.")
    print(f"load average: start {[round(x, 2) for x in reading['loadavg_start']]}, end"
          f" {[round(x, 2) for x in reading['loadavg_end']]}; machine CPU busy {reading['cpu_busy_fraction']:.2f};"
          f" {reading['span_s']:.0f} s in all. Raw data: {os.path.relpath(out)}")
    if returncode:
        print(f"worker exited with {returncode}")
    return 1 if errors or returncode or not measured else 0


def _passthrough(args: argparse.Namespace) -> list[str]:
    return ["--envs", *args.envs, "--counts", *map(str, args.counts), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--window", str(args.window), "--delay-ms", str(args.delay_ms),
            "--sleep-envs", str(args.sleep_envs), "--sleep-steps", str(args.sleep_steps),
            "--cartpole-envs", str(args.cartpole_envs), "--cartpole-steps", str(args.cartpole_steps),
            "--cpus-per-worker", str(args.cpus_per_worker), "--seed", str(args.seed)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 60 s): counts 1 8, one pass, 0.3 s warm-up, 1 s windows, no wait for quiet")
    p.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS))
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8], help="CWorkers per set")
    p.add_argument("--repeats", type=int, default=3, help="passes over every (env, count, mode); median reported")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of untimed calls before each window")
    p.add_argument("--window", type=float, default=5.0, help="seconds per timed window")
    p.add_argument("--delay-ms", type=float, default=2.0, help="sleep per sub-env step of the sleeping env")
    p.add_argument("--sleep-envs", type=int, default=4, help="sub-envs per CWorker, sleeping env")
    p.add_argument("--sleep-steps", type=int, default=32, help="steps per rollout, sleeping env")
    p.add_argument("--cartpole-envs", type=int, default=8, help="sub-envs per CWorker, CartPole (the preset's)")
    p.add_argument("--cartpole-steps", type=int, default=32, help="steps per rollout, CartPole (the preset's)")
    p.add_argument("--cpus-per-worker", type=float, default=0.25,
                   help="Ray logical CPUs per CWorker actor (0.25: 8 fit in 2 logical CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default benchmarks/results/collection_throughput.json)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the worker process")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="wait up to this many seconds until other users' processes use less than --quiet-cores")
    p.add_argument("--quiet-cores", type=float, default=0.2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.counts, args.repeats, args.warmup, args.window, args.wait_quiet = [1, 8], 1, 0.3, 1.0, 0.0
    if any(n < 1 for n in args.counts) or args.repeats < 1 or args.window <= 0 or args.warmup < 0:
        p.error("--counts >= 1, --repeats >= 1, --window > 0, --warmup >= 0")
    args.counts = sorted(set(args.counts))
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
