"""Soak: run a preset through the shipped training path for N minutes and watch every process's memory.

``colonyrl.launch.train.train`` runs the preset (default ``ppo-cartpole-ray``: 2 GWorkers x 2 CWorkers
on a local Ray instance) with an unreachable env-step budget, no early stop, no tracking and no
console; its periodic evaluations and checkpoints run as the preset has them (``--no-eval`` turns
the evaluations off). ``--minutes`` after its training loop started (start-up is timed apart) the
sampler thread sends this process a SIGINT, which the run's own ``StopRequest`` turns into a clean
stop (the current step ends, a checkpoint is written into a temporary folder, the workers and Ray
shut down; ``train`` raises ``TrainingInterrupted``).

Every ``--interval-s`` seconds it records the RSS of every process of the run: this driver and its
descendants (Ray's gcs_server, raylet, monitor, log_monitor, dashboard, and under the raylet the
agents and worker processes, named by their process title: ``ray::CWorker``, ``ray::GWorker``,
``ray::IDLE``), plus any process whose command line names this run's Ray session folder (the GCS
and raylet of a Ray instance that is not a child of the driver). It prints one line a sample,
and writes a table of RSS per process kind per sample (``benchmarks/results/soak-<preset>.json``
and ``.md``), and the growth after ``--warmup-min`` minutes: the least-squares slope of the RSS of
the whole tree (and of each kind; the GCS on its own line) in MB/min and in % of its mean per hour.

RSS counts shared pages (torch's libraries) in every process that maps them, so the whole-tree sum
overstates the memory in use; its slope is what this measures. The machine's load average is recorded with every
sample: a shared machine slows the run down, but does not by itself change the memory it holds.

Usage::

    .venv/bin/python benchmarks/soak.py                                   # 60 min, 10 min warm-up
    .venv/bin/python benchmarks/soak.py --minutes 3 --warmup-min 1 --interval-s 20   # smoke run
    .venv/bin/python benchmarks/soak.py --preset ppo-cartpole --minutes 30 --no-eval
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
MB = 1024**2
#: Seconds the run may take to reach its training loop (Ray and the workers starting).
STARTUP_TIMEOUT_S = 600.0


# -- processes -----------------------------------------------------------------------------------
def session_dir() -> str | None:
    """This process's Ray session folder, once Ray is up (``/tmp/ray/session_...``), else None."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        node = ray._private.worker._global_node  # the driver's node (Ray's private API)
        return node.get_session_dir_path() if node is not None else None
    except Exception:
        return None


def kind_of(proc: Any, driver_pid: int) -> str:
    """What a process is: ``driver``, ``gcs_server``, ``raylet``, ``ray::CWorker`` (the process
    title Ray gives a worker, without the method it is running), or a Python script's name."""
    if proc.pid == driver_pid:
        return "driver"
    try:
        cmdline = proc.cmdline()
        name = proc.name()
    except Exception:
        return "?"
    first = cmdline[0] if cmdline else name
    if first.startswith("ray::"):
        return first.split(".", 1)[0].split(" ", 1)[0]
    if name in ("gcs_server", "raylet"):
        return name
    script = next((Path(a).stem for a in cmdline[1:] if a.endswith(".py")), None)
    return script or name


def run_processes(driver_pid: int, session: str | None) -> list[Any]:
    """The driver, its descendants, and every process naming ``session`` on its command line (and
    their descendants): one entry per pid."""
    import psutil

    found: dict[int, Any] = {}

    def add(p: Any) -> None:
        found.setdefault(p.pid, p)
        try:
            for c in p.children(recursive=True):
                found.setdefault(c.pid, c)
        except psutil.Error:
            pass

    add(psutil.Process(driver_pid))
    if session:
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid not in found and any(session in a for a in p.info["cmdline"] or ()):
                    add(p)
            except psutil.Error:
                continue
    return list(found.values())


def sample(driver_pid: int, t0: float) -> dict[str, Any]:
    """RSS of every process of the run now, each and by kind."""
    import psutil

    session = session_dir()
    procs = []
    for p in run_processes(driver_pid, session):
        try:
            rss = p.memory_info().rss / MB
        except psutil.Error:  # ended between listing and reading
            continue
        procs.append({"pid": p.pid, "kind": kind_of(p, driver_pid), "rss_mb": round(rss, 2)})
    by_kind: dict[str, dict[str, float]] = {}
    for p in procs:
        k = by_kind.setdefault(p["kind"], {"rss_mb": 0.0, "count": 0})
        k["rss_mb"] = round(k["rss_mb"] + p["rss_mb"], 2)
        k["count"] += 1
    return {"t_s": round(time.monotonic() - t0, 2), "time": time.time(), "session_dir": session,
            "loadavg": list(os.getloadavg()), "total_rss_mb": round(sum(p["rss_mb"] for p in procs), 2),
            "by_kind": by_kind, "processes": sorted(procs, key=lambda p: (p["kind"], p["pid"]))}


# -- growth ------------------------------------------------------------------------------------------
def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None for fewer than 2 distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def growth(samples: list[dict[str, Any]], warmup_min: float, value: Any) -> dict[str, Any]:
    """Growth of ``value(sample)`` (MB, or None where absent) over the samples after the warm-up."""
    points = [(s["t_s"] / 60.0, v) for s in samples if s["t_s"] / 60.0 >= warmup_min
              and (v := value(s)) is not None]
    per_min = slope(points)
    out: dict[str, Any] = {"samples": len(points), "from_min": points[0][0] if points else None,
                           "to_min": points[-1][0] if points else None,
                           "first_mb": points[0][1] if points else None, "last_mb": points[-1][1] if points else None,
                           "mb_per_min": None, "pct_per_hour": None}
    if per_min is not None:
        mean = sum(y for _, y in points) / len(points)
        out["mb_per_min"] = round(per_min, 3)
        out["pct_per_hour"] = round(100.0 * 60.0 * per_min / mean, 2) if mean else None
    return out


def report(samples: list[dict[str, Any]], warmup_min: float) -> dict[str, Any]:
    kinds = sorted({k for s in samples for k in s["by_kind"]})
    return {
        "total": growth(samples, warmup_min, lambda s: s["total_rss_mb"]),
        "gcs_server": growth(samples, warmup_min, lambda s: s["by_kind"].get("gcs_server", {}).get("rss_mb")),
        "by_kind": {k: growth(samples, warmup_min, lambda s, k=k: s["by_kind"].get(k, {}).get("rss_mb"))
                    for k in kinds},
    }


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    samples, g = result["samples"], result["growth"]
    kinds = sorted({k for s in samples for k in s["by_kind"]}, key=lambda k: (k != "driver", k))
    lines = [f"# Soak: {result['config']['preset']}, {result['config']['minutes']:g} min, "
             f"warm-up {result['config']['warmup_min']:g} min", "",
             "RSS in MB per process kind (processes of that kind in parentheses where more than one).", "",
             "| min | " + " | ".join(kinds) + " | total | load 1m |",
             "|---:|" + "---:|" * (len(kinds) + 2)]
    for s in samples:
        cells = []
        for k in kinds:
            v = s["by_kind"].get(k)
            cells.append("-" if v is None else fmt(v["rss_mb"]) + (f" ({v['count']})" if v["count"] > 1 else ""))
        lines.append(f"| {s['t_s'] / 60:.2f} | " + " | ".join(cells) + f" | {fmt(s['total_rss_mb'])} | "
                     f"{s['loadavg'][0]:.2f} |")
    lines += ["", f"Growth after the warm-up ({result['config']['warmup_min']:g} min), least-squares slope:", "",
              "| what | samples | first MB | last MB | MB/min | % per hour |", "|---|---:|---:|---:|---:|---:|"]
    rows = [("whole tree", g["total"]), ("gcs_server", g["gcs_server"])]
    rows += [(k, v) for k, v in g["by_kind"].items() if k != "gcs_server"]
    for name, v in rows:
        lines.append(f"| {name} | {v['samples']} | {fmt(v['first_mb'])} | {fmt(v['last_mb'])} | "
                     f"{fmt(v['mb_per_min'], 3)} | {fmt(v['pct_per_hour'], 2)} |")
    t, n = result["train"], result["noise"]
    steps = (t.get("counters") or {}).get("env_steps")
    busy = "-" if n.get("cpu_busy_fraction") is None else f"{100 * n['cpu_busy_fraction']:.0f} %"
    lines += ["", f"Training: {t['outcome']}; {steps if steps is not None else '?'} env steps; start-up "
              f"{fmt(t.get('startup_s'))} s, then {fmt(t.get('wall_s'))} s. Machine: {n['cpu_count']} CPUs, "
              f"load average {n['loadavg_start'][0]:.2f} -> {n['loadavg_end'][0]:.2f}, busy {busy} "
              "(all processes, ours included)."]
    return "\n".join(lines) + "\n"


# -- the run -----------------------------------------------------------------------------------------
def train_config(preset_name: str, workdir: Path, evaluate: bool = True) -> Any:
    from colonyrl.launch.presets import preset

    cfg = preset(preset_name)
    # A budget it never reaches and no early stop (the sampler stops it by time); the preset's
    # periodic evaluations and time-based checkpoints still run, as in any run of it.
    run = cfg.run.replace(total_env_steps=10**15, stop_at_return=None, track=False, progress=False,
                          output_dir=str(workdir / "runs"), checkpoint_dir=str(workdir / "ckpt"))
    if not evaluate:
        run = run.replace(eval_every=None)
    return cfg.replace(run=run)


def stop_request_installed() -> bool:
    """Whether SIGINT is handled by the training loop's ``StopRequest`` (launch/signals.py) now."""
    from colonyrl.launch.signals import StopRequest

    return isinstance(getattr(signal.getsignal(signal.SIGINT), "__self__", None), StopRequest)


class Sampler(threading.Thread):
    """Samples every ``interval_s`` for ``minutes`` of training, then asks the run to stop.

    The clock starts when the training loop does (its ``StopRequest`` is installed: Ray, the
    Learner and the GWorkers are up), so start-up is not part of the soak; it is timed apart.
    """

    def __init__(self, minutes: float, interval_s: float, on_sample: Any) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.minutes, self.interval_s, self.on_sample = minutes, interval_s, on_sample
        self.samples: list[dict[str, Any]] = []
        self.created = self.t0 = time.monotonic()
        self.startup_s: float | None = None
        self.done = threading.Event()  # training returned or raised: stop sampling
        self.stop_sent = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            started_by = time.monotonic() + STARTUP_TIMEOUT_S
            while not stop_request_installed() and not self.done.wait(0.2) and time.monotonic() < started_by:
                pass
            if self.done.is_set():
                return
            self.t0 = time.monotonic()
            self.startup_s = round(self.t0 - self.created, 1)
            end = self.t0 + 60.0 * self.minutes
            k = 0
            while True:
                due = min(self.t0 + k * self.interval_s, end)
                if self.done.wait(max(0.0, due - time.monotonic())):
                    return
                self.samples.append(sample(os.getpid(), self.t0))
                self.on_sample(self.samples[-1])
                if due >= end:
                    break
                k += 1
        except Exception:  # never leave the run without its stop: record it, and stop
            self.error = traceback.format_exc()
        if not self.done.is_set():
            self.stop_sent = True
            signal.raise_signal(signal.SIGINT)  # handled in the main thread by the run's StopRequest


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from colonyrl.launch.train import TrainingInterrupted, train

    noise = common.Noise()
    with tempfile.TemporaryDirectory(prefix="colonyrl-soak-") as tmp:
        cfg = train_config(args.preset, Path(tmp), evaluate=not args.no_eval)

        def show(s: dict[str, Any]) -> None:
            kinds = ", ".join(f"{k} {v['rss_mb']:.0f}" + (f"x{v['count']}" if v["count"] > 1 else "")
                              for k, v in sorted(s["by_kind"].items()))
            print(f"[soak] {s['t_s'] / 60:6.2f} min  total {s['total_rss_mb']:8.1f} MB  ({kinds})",
                  file=sys.stderr, flush=True)

        sampler = Sampler(args.minutes, args.interval_s, show)
        sampler.start()
        outcome: dict[str, Any] = {}
        try:
            result = train(cfg)
            outcome = {"outcome": "finished the budget (unexpected)", "counters": result.counters}
        except TrainingInterrupted as e:
            outcome = {"outcome": f"stopped by signal {e.signum} after the time", "checkpoint": str(e.checkpoint)}
            outcome["counters"] = _checkpoint_counters(e.checkpoint)
        except KeyboardInterrupt:  # the time ran out before the training loop started
            outcome = {"outcome": "interrupted before the training loop"}
        finally:
            sampler.done.set()
            sampler.join(timeout=30)
        outcome["startup_s"] = sampler.startup_s
        outcome["wall_s"] = round(time.monotonic() - sampler.t0, 1)  # from the start of the training loop
        if sampler.error:
            outcome["sampler_error"] = sampler.error
    samples = sampler.samples
    return {
        "config": {"preset": args.preset, "minutes": args.minutes, "warmup_min": args.warmup_min,
                   "interval_s": args.interval_s, "eval_every": cfg.run.eval_every,
                   "checkpoint_every_min": cfg.run.checkpoint_every_min, "scheme": _scheme_summary(cfg)},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "noise": noise.reading(),
        "train": outcome,
        "growth": report(samples, args.warmup_min),
        "samples": samples,
    }


def _checkpoint_counters(path: Path | None) -> dict[str, int] | None:
    if path is None:
        return None
    try:
        from colonyrl.launch.checkpoint import load_checkpoint

        return load_checkpoint(Path(path))["learner"]["counters"]
    except Exception:
        return None


def _scheme_summary(cfg: Any) -> dict[str, Any]:
    s = cfg.scheme
    return {"num_grad_workers": s.num_grad_workers, "num_col_workers": s.num_col_workers,
            "env": cfg.env.id, "num_envs": cfg.env.num_envs, "num_steps": cfg.storage.num_steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ppo-cartpole-ray", help="a preset of colonyrl.launch.presets")
    p.add_argument("--minutes", type=float, default=60.0, help="how long to train")
    p.add_argument("--warmup-min", type=float, default=10.0, help="minutes left out of the growth figures")
    p.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--no-eval", action="store_true", help="no periodic evaluations (the preset's eval_every)")
    p.add_argument("--out", help="JSON path (default benchmarks/results/soak-<preset>.json; .md beside it)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.interval_s <= 0 or args.warmup_min < 0:
        p.error("--minutes and --interval-s must be > 0, --warmup-min >= 0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = soak(args)
    out = Path(args.out) if args.out else HERE / "results" / f"soak-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    ok = result["samples"] and "sampler_error" not in result["train"] and result["train"]["outcome"].startswith("stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
