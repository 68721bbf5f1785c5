"""PPO on CartPole-v1: does async collection on remote CWorkers overlap collection with learning?

The in-process scheme (``launch/scripts/cartpole_inprocess.SCHEME``, sync) collects a round, then
learns on it, then collects the next: it pays for both stages in turn. With async collection on
remote CWorkers, the CWorkers collect the next round while the GWorker learns on the current one,
so on 2 cores the training rate can approach the rate of the slower stage alone. Measured here
(every rate in env steps/s, the preset's algorithm and storage: 8 envs x 32 steps = 256 env steps
a round, 12 epochs x 2 minibatches of 128 = 24 updates a round, one torch thread per process):

(iii) async training: ``SchemeConfig(num_grad_workers=1, num_col_workers=2, collection="async")``
      with 4 envs per CWorker. With one GWorker and no ``force_remote``, the GWorker runs in the
      driver and shares the Learner's algorithm, and only the 2 CWorkers are Ray actors: learning
      holds one core (the driver), collection the other. (``force_remote=True`` would make the
      GWorker an actor too, adding an actor call, a gradient transfer and a weights put to every
      minibatch.)
(i)   collection alone, in the same process just before (iii): the CWorkers of (iii), driven by
      ``AsyncCollection`` with fixed weights and nothing else running: the rate at which they
      deliver rollouts into the driver. Also (i'): the same with every CWorker thread pinned to
      one core (Linux), what collection can have while learning holds the other core.
(ii)  learning alone on the same data, in the same process just after (iii): the Learner of (iii)
      replays the last ``--replay-rounds`` rounds it trained on (recorded during (iii) by a
      pass-through ``CollectionStrategy``, then handed back at once): everything the driver does
      per round except getting the data (storage, GAE, minibatches, gradients, optimizer steps).
(iv)  the in-process sync scheme (the preset as is, its own process, no Ray); its time shares
      split its wall-clock into collection and the rest, an in-process cross-check.

Training rates ((ii)-(iv)): ``--warmup`` env steps untimed ((iii): including actor start-up), then a
timed window of ``--budget`` env steps, both ending at a round boundary; rate = env steps collected
(or replayed) in the window over its wall-clock, learning included. Evaluation (10 deterministic
episodes, outside the timing) shows async training still learns. Target (issue 3, not a timed test):
(iii) >= 90 % of min((i), (ii)).

Usage::

    .venv/bin/python benchmarks/async_overlap.py             # 3 repeats, 5k + 50k env steps (~4 min)
    .venv/bin/python benchmarks/async_overlap.py --quick     # smoke run (< 60 s)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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
import collection_throughput as ct  # noqa: E402
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
SYSTEMS: dict[str, str] = {
    "inprocess": "(iv) in-process sync scheme (the preset)",
    "async": "(i) collection alone, (iii) async training, (ii) learning alone: one process, in this order",
    # not in the default set: cross-checks
    "learn": "(ii') learning alone in a process without Ray (the preset's learner, its own rounds replayed)",
    "async-thread": "async in-process (the preset with collection='async': 1 CWorker in a thread)",
}
DEFAULT_SYSTEMS = ["inprocess", "async"]
TARGET = 0.90  # (iii) / min((i), (ii))


# ------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------
class ReplayCollection:
    """A collection strategy that records rounds from a real one, then replays them.

    While recording, every round passes through ``live`` (the strategy the GWorker had) and the
    last ``keep`` are kept; after :meth:`replay` each call returns the next recorded round at once
    (cycling), so a timed window measures the GWorker's and Learner's work alone. The storage never writes into the
    rollouts it is given (``RolloutStorage.add_data``), so the same arrays can be added again.
    """

    def __init__(self, live: Any, keep: int) -> None:
        self.live = live
        self.recorded: collections.deque[list[Any]] = collections.deque(maxlen=keep)
        self.replaying = False
        self._next = 0

    def replay(self) -> int:
        self.replaying = True
        return len(self.recorded)

    def collect(self, cworkers: Any, weights: Any) -> list[Any]:
        if not self.replaying:
            rollouts = self.live.collect(cworkers, weights)
            self.recorded.append(rollouts)
            return rollouts
        rollouts = self.recorded[self._next % len(self.recorded)]
        self._next += 1
        return rollouts

    def stats(self) -> dict[str, float]:
        return {} if self.replaying else self.live.stats()

    def close(self, cworkers: Any) -> None:
        self.live.close(cworkers)


class CallTimer:
    """The driver's wall-clock inside some methods of one object, e.g. a ``CWorkerSet`` of actors:
    ``prepare`` (the weights' ``ray.put``), ``submit``, ``wait`` and ``result`` (``ray.get``).
    Wrappers set as instance attributes shadow the methods (~1 us a call); :meth:`remove` undoes it."""

    def __init__(self, obj: Any, names: tuple[str, ...]) -> None:
        self.obj, self.names = obj, names
        self.seconds = dict.fromkeys(names, 0.0)
        self.calls = dict.fromkeys(names, 0)
        for name in names:
            setattr(obj, name, self._wrap(name, getattr(obj, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.names, 0.0)
        self.calls = dict.fromkeys(self.names, 0)

    def remove(self) -> None:
        for name in self.names:
            delattr(self.obj, name)


def train_window(learner: Any, warmup: int, budget: int, foreign: common.ForeignCPU,
                 at_start: Any = None) -> dict[str, Any]:
    """Train ``warmup`` env steps (untimed), then time ``budget`` env steps; both end at a round
    boundary, so every round counted in the window was collected and fully learned inside it."""
    t = time.perf_counter()
    while learner.env_steps < warmup or not learner.at_round_boundary():
        learner.step()
    warmup_s = time.perf_counter() - t
    if at_start is not None:
        at_start()
    learner.pop_metrics()  # the metrics window starts here too
    totals0 = dict(learner.totals)
    s0, u0, rounds = learner.env_steps, learner.num_updates, 0
    before_cpu = foreign.sample()
    t0 = time.perf_counter()
    while learner.env_steps - s0 < budget or not learner.at_round_boundary():
        steps = learner.env_steps
        learner.step()
        rounds += learner.env_steps != steps
    t1 = time.perf_counter()
    cpu = foreign.between(before_cpu, foreign.sample())
    m = learner.pop_metrics()
    steps, wall = learner.env_steps - s0, t1 - t0
    metrics_wall = steps / m["fps"] if m.get("fps") else wall  # pop_metrics' own window
    collect_s = m.get("time_share_collection", 0.0) * metrics_wall
    return {
        "env_steps": steps, "seconds": wall, "fps": steps / wall, "updates": learner.num_updates - u0,
        "rounds": rounds, "steps_per_round": steps / max(rounds, 1), "warmup_env_steps": s0,
        "warmup_s": warmup_s, "collect_s": collect_s,
        "collect_share": collect_s / wall, "fps_excluding_collection": steps / max(wall - collect_s, 1e-9),
        "fps_of_collection_time": steps / collect_s if collect_s > 0 else None,
        "time_shares": {k: v for k, v in m.items() if k.startswith("time_share_")},
        "policy_lag": m.get("policy_lag"), "worker_collect_fps": m.get("worker_collect_fps"),
        "dropped_rollouts": learner.totals.get("dropped_rollouts", 0) - totals0.get("dropped_rollouts", 0),
        "nonfinite_updates": learner.totals.get("nonfinite_updates", 0) - totals0.get("nonfinite_updates", 0),
        "others_cores": cpu["foreign_cores"], "own_cores": cpu["own_cores"],
    }


def evaluate(learner: Any, seed: int) -> float:
    policy = lambda obs: learner.algo.policy.act(obs, deterministic=True).env_action  # noqa: E731
    return common.evaluate_policy_fn(policy, common.eval_seed(seed))[0]


def preset_components(seed: int, num_envs: int | None = None) -> Any:
    from colonyrl.launch.scripts.cartpole_inprocess import SCHEME

    comps = SCHEME.components()
    env = comps.env if num_envs is None else comps.env.replace(num_envs=num_envs)
    return dataclasses.replace(comps, env=env, seed=seed)


def run_inprocess(args: argparse.Namespace, foreign: common.ForeignCPU, collection: str = "sync") -> dict[str, Any]:
    from colonyrl.launch.scripts.cartpole_inprocess import SCHEME
    from colonyrl.scheme.scheme import Scheme

    cfg = SCHEME.scheme.replace(collection=collection)
    with Scheme(cfg, preset_components(args.seed)) as scheme:
        out = train_window(scheme.learner, args.warmup, args.budget, foreign)
        out["eval_return"] = evaluate(scheme.learner, args.seed)
    return {"training": out, "scheme": dataclasses.asdict(cfg)}


def run_learn(args: argparse.Namespace, foreign: common.ForeignCPU) -> dict[str, Any]:
    from colonyrl.launch.scripts.cartpole_inprocess import SCHEME
    from colonyrl.scheme.scheme import Scheme

    with Scheme(SCHEME.scheme, preset_components(args.seed)) as scheme:
        gworker = scheme.learner.gworkers.workers[0]  # in-process: the one GWorker of the Learner
        replay = ReplayCollection(gworker.collection, args.replay_rounds)
        gworker.collection = replay
        replayed: list[int] = []
        out = train_window(scheme.learner, args.warmup, args.budget, foreign,
                           at_start=lambda: replayed.append(replay.replay()))
    out["replayed_rounds"] = replayed[0]
    return {"training": out}


def run_async(args: argparse.Namespace, foreign: common.ForeignCPU) -> dict[str, Any]:
    from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig

    n = args.col_workers
    cfg = SchemeConfig(num_grad_workers=1, num_col_workers=n, collection="async",
                       col_worker_resources=Resources(num_cpus=args.cpus_per_worker),
                       max_policy_lag=args.max_policy_lag)
    assert cfg.remote_col_workers and not cfg.remote_grad_workers, "the GWorker must run in the driver"
    out: dict[str, Any] = {"scheme": dataclasses.asdict(cfg), "envs_per_worker": 8 // n}
    t = time.perf_counter()
    with Scheme(cfg, preset_components(args.seed, num_envs=8 // n)) as scheme:
        learner = scheme.learner
        cworkers = learner.gworkers.workers[0].cworkers  # the GWorker's CWorkerSet (Ray actors)
        cworkers.ping()  # every actor constructed: start-up is not in (i)
        out["setup_s"] = time.perf_counter() - t
        arrays = learner.algo.get_weights()
        # (i) versions far above the training's, which then starts at 0: every rollout of the
        # training is collected with the training's weights (a differing version loads them).
        before = foreign.sample()
        out["collection"] = ct.measure(cworkers, arrays, "async", args.warmup_s, args.window, version0=10**6)
        out["collection"]["others_cores"] = foreign.between(before, foreign.sample())["foreign_cores"]
        if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
            pids = cworkers.pids()
            cpu = max(os.sched_getaffinity(0))
            ct.pin_threads(pids, {cpu})
            try:
                before = foreign.sample()
                out["collection_pinned"] = ct.measure(cworkers, arrays, "async", args.warmup_s, args.window,
                                                      version0=2 * 10**6)
                out["collection_pinned"]["others_cores"] = foreign.between(before, foreign.sample())["foreign_cores"]
                out["collection_pinned"]["cpu"] = cpu
            finally:
                ct.pin_threads(pids, None)
        # (iii), recording its last rounds on the way (one deque append per round).
        gworker = learner.gworkers.workers[0]
        live = gworker.collection
        recorder = ReplayCollection(live, args.replay_rounds)
        gworker.collection = recorder
        timer = CallTimer(cworkers, ("prepare", "submit", "wait", "result"))
        out["training"] = train_window(learner, args.warmup, args.budget, foreign, at_start=timer.reset)
        timer.remove()
        rounds = max(out["training"]["rounds"], 1)
        out["training"]["driver_ms_per_round"] = {k: 1e3 * v / rounds for k, v in timer.seconds.items()}
        out["training"]["driver_calls"] = timer.calls
        out["training"]["eval_return"] = evaluate(learner, args.seed)  # before (ii) trains on old data
        # (ii) the same learner on the same data, right after (iii) in the same process: the
        # CWorkers finish the rollouts they have in flight (waited for, dropped), then idle.
        out["replayed_rounds"] = recorder.replay()
        ct.drain(live, cworkers, cfg.worker_timeout_s)
        out["learning"] = train_window(learner, 0, args.budget, foreign)
        gworker.collection = live
    return out


def worker_main(args: argparse.Namespace) -> int:
    from colonyrl.scheme.runtime import init_process

    init_process()
    import torch

    out: dict[str, Any] = {"system": args.system, "seed": args.seed, "repeat": args.repeat, "pid": os.getpid()}
    foreign = common.ForeignCPU(interval_s=None)  # sampled at the ends of each window: no thread in the driver
    code = 0
    try:
        if args.system == "inprocess":
            out.update(run_inprocess(args, foreign))
        elif args.system == "async-thread":
            out.update(run_inprocess(args, foreign, collection="async"))
        elif args.system == "learn":
            out.update(run_learn(args, foreign))
        else:
            out.update(run_async(args, foreign))
        out["torch_threads"] = torch.get_num_threads()
    except BaseException as e:  # reported in the table and the JSON
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
        code = 1
    foreign.close()
    print(RESULT_MARK + json.dumps(out), flush=True)
    return code


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------
def run_one(system: str, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--system", system, "--repeat", str(repeat),
           "--seed", str(args.seed + repeat), "--budget", str(args.budget), "--warmup", str(args.warmup),
           "--warmup-s", str(args.warmup_s), "--window", str(args.window), "--col-workers", str(args.col_workers),
           "--cpus-per-worker", str(args.cpus_per_worker), "--replay-rounds", str(args.replay_rounds)]
    if args.max_policy_lag is not None:
        cmd += ["--max-policy-lag", str(args.max_policy_lag)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # inherited by Ray's workers too
    start = time.time()
    try:  # the worker's stderr (Ray's messages) goes straight through
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout, cwd=HERE.parent, env=env)
    except subprocess.TimeoutExpired:
        return {"system": system, "repeat": repeat, "error": f"timed out after {args.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        return {"system": system, "repeat": repeat, "error": f"worker exited {proc.returncode} without a result",
                "stdout_tail": proc.stdout[-2000:]}
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = time.time() - start
    return res


def _get(runs: list[dict[str, Any]], system: str, *path: str) -> list[float]:
    """The value at ``path`` in every successful run of ``system`` (missing ones skipped)."""
    out = []
    for r in runs:
        if r.get("system") != system or "error" in r:
            continue
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if v is not None:
            out.append(float(v))
    return out


def _by_repeat(runs: list[dict[str, Any]], system: str, *path: str) -> dict[int, float]:
    out = {}
    for r in runs:
        vals = _get([r], system, *path)
        if vals:
            out[r["repeat"]] = vals[0]
    return out


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, bool]:
    fm = common.fmt_median_range

    def pct(vals: list[float]) -> str:
        return fm([100 * v for v in vals], 0) + " %" if vals else "-"

    def shares(system: str, key: str) -> str:
        return (f"driver time: gradients {pct(_get(runs, system, key, 'time_shares', 'time_share_gradients'))},"
                f" optimizer {pct(_get(runs, system, key, 'time_shares', 'time_share_update'))}, storage/GAE"
                f" {pct(_get(runs, system, key, 'time_shares', 'time_share_prepare'))}")

    def driver_ms() -> str:
        what = (("prepare", "weights ray.put"), ("submit", "submits"), ("wait", "ray.wait"), ("result", "ray.get"))
        return ", ".join(f"{label} {fm(_get(runs, 'async', 'training', 'driver_ms_per_round', key), 2)} ms"
                         for key, label in what)

    n = args.col_workers
    coll = _get(runs, "async", "collection", "fps")
    pinned = _get(runs, "async", "collection_pinned", "fps")
    learn = _get(runs, "async", "learning", "fps")
    asyn = _get(runs, "async", "training", "fps")
    inproc = _get(runs, "inprocess", "training", "fps")
    lines = ["| rate | what runs | env steps/s | notes |", "|---|---|---|---|"]
    if "async" in args.systems:
        lines += [
            f"| (i) collection alone | the {n} remote CWorkers of (iii) ({8 // n} envs x 32 steps each), AsyncCollection,"
            f" fixed weights, before (iii) | {fm(coll, 0)} | per CWorker while collecting"
            f" {fm(_get(runs, 'async', 'collection', 'worker_fps'), 0)} |",
            *([f"| (i') collection alone, one core | (i) with every CWorker thread pinned to one core"
               f" | {fm(pinned, 0)} | per CWorker while collecting"
               f" {fm(_get(runs, 'async', 'collection_pinned', 'worker_fps'), 0)} |"] if pinned else []),
            f"| (ii) learning alone, same data | the Learner of (iii) replaying the last {args.replay_rounds} rounds"
            f" it trained on, right after (iii) | {fm(learn, 0)} | {shares('async', 'learning')} |",
            f"| (iii) async training | 1 GWorker in the driver + {n} remote CWorkers, collection=\"async\","
            f" max_policy_lag={args.max_policy_lag} | {fm(asyn, 0)} | driver inside AsyncCollection.collect"
            f" {pct(_get(runs, 'async', 'training', 'collect_share'))}, per round: {driver_ms()}; env steps per round"
            f" {fm(_get(runs, 'async', 'training', 'steps_per_round'), 0)}; policy lag (updates)"
            f" {fm(_get(runs, 'async', 'training', 'policy_lag'), 1)}; dropped rollouts"
            f" {fm(_get(runs, 'async', 'training', 'dropped_rollouts'), 0)}; eval return"
            f" {fm(_get(runs, 'async', 'training', 'eval_return'), 0)} |",
        ]
    if "learn" in args.systems:
        lines.append(f"| (ii') learning alone, no Ray | the preset's in-process Learner replaying its last"
                     f" {args.replay_rounds} rounds, separate process | {fm(_get(runs, 'learn', 'training', 'fps'), 0)}"
                     f" | {shares('learn', 'training')} |")
    if "inprocess" in args.systems:
        lines.append(
            f"| (iv) in-process sync | the preset: 1 GWorker + 1 CWorker x 8 envs in one process | {fm(inproc, 0)}"
            f" | collection share {pct(_get(runs, 'inprocess', 'training', 'collect_share'))}: its stage rates"
            f" collection {fm(_get(runs, 'inprocess', 'training', 'fps_of_collection_time'), 0)}, the rest"
            f" {fm(_get(runs, 'inprocess', 'training', 'fps_excluding_collection'), 0)}; eval return"
            f" {fm(_get(runs, 'inprocess', 'training', 'eval_return'), 0)} |")
    if "async-thread" in args.systems:
        lines.append(f"| async in-process | the preset with collection=\"async\": its CWorker in a thread"
                     f" | {fm(_get(runs, 'async-thread', 'training', 'fps'), 0)} | driver inside"
                     f" AsyncCollection.collect {pct(_get(runs, 'async-thread', 'training', 'collect_share'))};"
                     f" eval return {fm(_get(runs, 'async-thread', 'training', 'eval_return'), 0)} |")
    lines.append("")
    met = False
    c, ll, a, ip = _med(coll), _med(learn), _med(asyn), _med(inproc)
    if c and ll and a:
        slower = min(c, ll)
        which = "collection" if c < ll else "learning"
        lines.append(f"Slower stage alone: {which}, {slower:.0f} env steps/s; both stages in turn would give"
                     f" 1/(1/(i) + 1/(ii)) = {1 / (1 / c + 1 / ll):.0f} env steps/s.")
        met = a / slower >= TARGET
        same = [r["training"]["fps"] / min(r["collection"]["fps"], r["learning"]["fps"])
                for r in runs if r.get("system") == "async" and "error" not in r]
        lines.append(f"Target: async training >= {TARGET:.0%} of the slower stage alone: (iii) {a:.0f} / {slower:.0f}"
                     f" = {a / slower:.2f} (per repeat {fm(same, 2)}): {'met' if met else 'NOT met'}.")
        if a / slower > 1.02:
            lines.append("A ratio above 1 cannot come from overlap: the stages saw different load (others' CPU"
                         " below); re-run on a quiet machine.")
        if pinned:
            sp = min(_med(pinned) or c, ll)
            lines.append(f"With collection on one core ((i') for (i)) the slower stage is {sp:.0f}: ratio {a / sp:.2f}.")
        if ip:
            lines.append(f"In-process sync (iv) {ip:.0f} = {ip / slower:.2f} of the slower stage;"
                         f" async / in-process = {a / ip:.2f}.")
    else:
        lines.append("Target: not judged (needs the 'async' system).")
    others = [f"{label} {fm(_get(runs, system, key, 'others_cores'), 2)}"
              for label, system, key in (("(i)", "async", "collection"), ("(ii)", "async", "learning"),
                                         ("(iii)", "async", "training"), ("(ii')", "learn", "training"),
                                         ("(iv)", "inprocess", "training"),
                                         ("async in-process", "async-thread", "training"))
              if system in args.systems]
    lines.append("Other users' CPU during the timed windows (cores): " + ", ".join(others) + ".")
    return "\n".join(lines), met


def parent_main(args: argparse.Namespace) -> int:
    noise = common.Noise()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"# async overlap, started {started}; loadavg {noise.load_start}", file=sys.stderr, flush=True)
    foreign = common.ForeignCPU()
    runs = []
    for r in range(args.repeats):
        order = args.systems if r % 2 == 0 else list(reversed(args.systems))  # drifts hit every system alike
        for system in order:
            waited = foreign.wait_quiet(args.quiet_cores, 5.0, args.wait_quiet) if args.wait_quiet > 0 else 0.0
            before = foreign.now()
            res = run_one(system, r, args)
            res["others_whole_run"] = {**foreign.between(before, foreign.now()), "waited_for_quiet_s": waited}
            runs.append(res)
            if "error" in res:
                msg = f"ERROR {res['error']}"
            else:
                tr = res["training"]
                msg = f"training {tr['fps']:.0f} env steps/s over {tr['env_steps']} steps"
                if "collection" in res:
                    msg += f"; collection alone {res['collection']['fps']:.0f}"
                if "eval_return" in tr:
                    msg += f"; eval {tr['eval_return']:.0f}"
            print(f"  repeat {r} {system}: {msg} (others {res['others_whole_run']['foreign_cores']:.2f} cores)",
                  file=sys.stderr, flush=True)
    foreign.close()
    reading = noise.reading()
    out = Path(args.out) if args.out else HERE / "results" / "async_overlap.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "args": {k: v for k, v in vars(args).items() if k != "worker"}, "noise": reading,
            "python": sys.version, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    text, _ = report(runs, args)
    print(f"\n## Async overlap: PPO CartPole-v1 (tuned preset), {started}\n")
    print(f"Warm-up {args.warmup} env steps, then {args.budget} timed env steps per training run; collection windows"
          f" {args.window:g} s after {args.warmup_s:g} s warm-up; {args.repeats} repeat(s), seeds"
          f" {args.seed}..{args.seed + args.repeats - 1}, each system in a fresh process; median (min-max).\n")
    print(text)
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"\nFAILED repeat {r['repeat']} {r['system']}: {r['error']}\n{r.get('traceback', '')}")
    others = [r["others_whole_run"]["foreign_cores"] for r in runs]
    print(f"\nOther users' CPU during each run (cores): median {statistics.median(others):.2f}, max {max(others):.2f}.")
    print(f"load average: start {[round(x, 2) for x in reading['loadavg_start']]}, end"
          f" {[round(x, 2) for x in reading['loadavg_end']]}; machine CPU busy {reading['cpu_busy_fraction']:.2f};"
          f" {reading['span_s']:.0f} s in all. Raw data: {os.path.relpath(out)}")
    return 1 if errors else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 60 s): 1 repeat, 1k warm-up + 5k timed env steps, 1 s collection window")
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=DEFAULT_SYSTEMS)
    p.add_argument("--repeats", type=int, default=3, help="repeats (seed + repeat); median reported")
    p.add_argument("--budget", type=int, default=50_000, help="timed env steps per training run")
    p.add_argument("--warmup", type=int, default=5_000, help="untimed env steps before the timed window")
    p.add_argument("--warmup-s", type=float, default=1.0, help="untimed seconds before a collection window")
    p.add_argument("--window", type=float, default=5.0, help="seconds of the collection-alone window (i)")
    p.add_argument("--col-workers", type=int, default=2,
                   help="remote CWorkers of (i)/(iii), 8 envs shared among them (>= 2: one stays in-process)")
    p.add_argument("--cpus-per-worker", type=float, default=0.5, help="Ray logical CPUs per CWorker actor")
    p.add_argument("--max-policy-lag", type=int, default=None,
                   help="async: drop rollouts older than this many updates (default: keep all)")
    p.add_argument("--replay-rounds", type=int, default=16, help="(ii): rounds recorded, then replayed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default benchmarks/results/async_overlap.json)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per worker process")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="before each run, wait up to this many seconds until other users' processes use less"
                        " than --quiet-cores (0: never wait)")
    p.add_argument("--quiet-cores", type=float, default=0.2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.repeats, args.budget, args.warmup, args.warmup_s, args.window = 1, 5_000, 1_000, 0.3, 1.0
        args.replay_rounds, args.wait_quiet = 4, 0.0
    if args.col_workers < 2 or 8 % args.col_workers:
        p.error("--col-workers must be 2, 4 or 8 (the preset's 8 envs split evenly; 1 would stay in-process)")
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
