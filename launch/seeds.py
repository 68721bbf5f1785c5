"""One config, several seeds: a parent MLflow run with each seed's run nested under it.

``colonyrl train --seeds 0 1 2 [train flags]`` (``--parallel-seeds``: side by side on Ray). The
parent run logs the flattened config (without ``run.seed``), the tag ``colonyrl.seeds``, and the
aggregate over seeds: ``seeds/eval_return_mean`` / ``seeds/eval_return_std`` at each evaluation's env step (the
seeds' curves aligned as ``colonyrl plot`` aligns them: launch/plot.py), ``final_eval_return_mean``
/ ``final_eval_return_std`` (population std, ddof=0), and ``curve.csv`` / ``curve.png``. Each child is
an ordinary :func:`~colonyrl.launch.train.train` run, tagged ``mlflow.parentRunId`` (what MLflow's
``start_run(nested=True)`` sets, ``MLFLOW_PARENT_RUN_ID`` in mlflow/utils/mlflow_tags.py; the UI nests
by it: https://mlflow.org/docs/latest/api_reference/python_api/mlflow.html#mlflow.start_run), named
``<run name>-seed<N>``.

On Ray each seed is a task (1 CPU, no retries) calling ``train`` in a worker process; that worker
then talks to MLflow for its own run, the parent's tracker stays in the driver.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from colonyrl.config import ConfigError, to_flat_dict
from colonyrl.launch.config import TrainConfig
from colonyrl.launch.plot import GroupCurve, align, draw
from colonyrl.launch.tracking import Tracker
from colonyrl.launch.train import TrainResult, train

__all__ = ["SeedsResult", "train_seeds", "aggregate", "pop_seed_flags", "SEEDS_HELP"]

SEEDS_HELP = ("--seeds S [S ...] trains one run per seed, nested under one parent MLflow run with the "
              "aggregate curve and final mean +- std (--parallel-seeds: side by side on Ray)")


class SeedsResult(NamedTuple):
    parent_run_id: str | None
    seeds: tuple[int, ...]
    #: One per seed, in the order of ``seeds``.
    results: tuple[TrainResult, ...]
    #: eval_return of every seed on the shared env-step grid (``values[i]``: seed ``seeds[i]``).
    curve: GroupCurve
    final_mean: float
    final_std: float


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**31 for s in seeds):
        raise ConfigError("seeds", list(seeds), "one or more distinct integers in [0, 2**31), e.g. --seeds 0 1 2")
    return seeds


def _absolute_uri(uri: str | None) -> str | None:
    """A relative sqlite or file store as an absolute one: a Ray worker may run in another folder."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if uri and "://" not in uri:
        return os.path.abspath(uri)
    return uri


def _child(cfg: TrainConfig, seed: int, tracking_uri: str | None, parallel: bool) -> TrainConfig:
    run = cfg.run
    name = f"{run.run_name or 'seeds'}-seed{seed}"
    changes: dict[str, object] = {"seed": seed, "run_name": name, "tracking_uri": tracking_uri}
    if parallel:  # one console, and folders that do not depend on the worker's working directory
        changes.update(progress=False, tracking_uri=_absolute_uri(tracking_uri),
                       output_dir=os.path.abspath(run.output_dir), checkpoint_dir=os.path.abspath(run.checkpoint_dir))
    return cfg.replace(run=run.replace(**changes))


def _train_on_ray(cfg: TrainConfig, children: list[TrainConfig], tags: dict[str, str]) -> list[TrainResult]:
    import ray

    from colonyrl.scheme import remote

    # each task drives its own scheme: 1 CPU for it, plus the actors a Ray scheme starts
    owns = remote.ensure_ray(cfg.scheme.address, len(children) * (1 + cfg.scheme.num_cpus_needed),
                             cfg.scheme.object_store_mb)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(train)
        refs = [task.remote(child, tags) for child in children]
        try:
            return ray.get(refs)
        except BaseException:  # a failed seed (or Ctrl-C) stops the others
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if owns:
            ray.shutdown()


def aggregate(results: Sequence[TrainResult]) -> GroupCurve:
    """The seeds' eval-return curves (periodic evaluations and the final one) on one env-step grid."""
    curves = [([s for s, _ in r.evaluations] + [r.counters["env_steps"]],
               [v for _, v in r.evaluations] + [r.evaluation.mean]) for r in results]
    grid, values = align(curves)
    return GroupCurve(f"mean over {len(results)} seeds", tuple(str(r.run_id) for r in results), grid, values)


def _log_aggregate(tracker: Tracker, folder: Path, seeds: tuple[int, ...], curve: GroupCurve,
                   finals: np.ndarray) -> None:
    for step, mean, std in zip(curve.x, curve.mean, curve.std, strict=True):
        tracker.log_metrics({"seeds/eval_return_mean": mean, "seeds/eval_return_std": std}, step=int(step))
    tracker.log_metrics({"final_eval_return_mean": float(finals.mean()), "final_eval_return_std": float(finals.std()),
                         "num_seeds": len(seeds)}, step=int(curve.x[-1]))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "curve.csv", "w", newline="") as f:
        rows = zip(curve.x.astype(int), curve.mean, curve.std, *curve.values, strict=True)
        csv.writer(f).writerows([("env_steps", "eval_return_mean", "eval_return_std", *(f"seed{s}" for s in seeds)),
                                 *rows])
    tracker.log_artifact(folder / "curve.csv")
    tracker.log_artifact(draw([curve], folder / "curve.png", "eval_return", spread="std",
                              title=f"seeds {' '.join(map(str, seeds))}"))


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], parallel: bool = False) -> SeedsResult:
    """Train ``cfg`` once per seed as child runs of one parent MLflow run, one after the other in this
    process, or (``parallel``) side by side as Ray tasks; the parent gets the aggregate."""
    seeds = _check_seeds(seeds)
    run = cfg.run
    if run.resume:
        raise ConfigError("RunConfig.resume", run.resume, "None with --seeds (resume each seed's run on its own)")
    tracker = Tracker(run.tracking_uri, run.experiment, run.run_name, enabled=run.track, fallback_dir=run.output_dir)
    with tracker:
        params = {k: v for k, v in to_flat_dict(cfg).items() if k != "run.seed"}
        tracker.start(params, tags={"colonyrl.preset_env": cfg.env.id, "colonyrl.seeds": " ".join(map(str, seeds))})
        tags = {"mlflow.parentRunId": tracker.run_id} if tracker.run_id else {}
        children = [_child(cfg, s, tracker.tracking_uri, parallel) for s in seeds]
        results = _train_on_ray(cfg, children, tags) if parallel else [train(c, tags) for c in children]
        curve = aggregate(results)
        finals = np.array([r.evaluation.mean for r in results])
        if tracker.enabled:
            _log_aggregate(tracker, Path(run.output_dir) / str(tracker.run_id), seeds, curve, finals)
    return SeedsResult(tracker.run_id, seeds, tuple(results), curve, float(finals.mean()), float(finals.std()))


def pop_seed_flags(argv: list[str]) -> tuple[list[int] | None, bool, list[str]]:
    """``(seeds, parallel, the other args)`` from ``--seeds 0 1 2`` and ``--parallel-seeds``; seeds is
    None without ``--seeds``."""
    seeds: list[int] | None = None
    parallel, rest, i = False, [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--parallel-seeds":
            parallel = True
        elif arg == "--seeds":
            seeds = []
            while i < len(argv) and argv[i].lstrip("-").isdigit() and not argv[i].startswith("--"):
                seeds.append(int(argv[i]))
                i += 1
            _check_seeds(seeds)
        else:
            rest.append(arg)
    if parallel and seeds is None:
        raise ConfigError("--parallel-seeds", True, "only with --seeds S [S ...]")
    return seeds, parallel, rest
