"""One training run: build the scheme, step the Learner, track to MLflow, evaluate, save.

The loop is a function tests can call (CleanRL's module-level loop is the counter-example for a
library); ``colonyrl train`` and every launch script end up here.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

from colonyrl.launch.config import TrainConfig
from colonyrl.launch.console import Console
from colonyrl.launch.evaluate import EvalResult, evaluate, save_model
from colonyrl.launch.tracking import Tracker
from colonyrl.scheme.config import to_flat_dict
from colonyrl.scheme.scheme import Scheme

__all__ = ["TrainResult", "train"]


class TrainResult(NamedTuple):
    run_id: str | None
    model_dir: Path
    evaluation: EvalResult
    counters: dict[str, int]
    #: (env_steps, mean return) of every periodic evaluation, in order.
    evaluations: list[tuple[int, float]]
    wall_time_s: float


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg`` to its budget (or its ``stop_at_return``), evaluate, save, and track it all."""
    run = cfg.run
    console = Console(enabled=run.progress, total=run.total_env_steps)
    tracker = Tracker(run.tracking_uri, run.experiment, run.run_name, enabled=run.track)
    start = time.perf_counter()
    with tracker:
        tracker.start(to_flat_dict(cfg), tags={"colonyrl.preset_env": cfg.env.id})
        tracker.log_dict(dataclasses.asdict(cfg), "config.json")
        console.header(cfg, tracker.run_id)
        with Scheme(cfg.scheme, cfg.components()) as scheme:
            learner = scheme.learner
            evaluations = _train_loop(cfg, learner, tracker, console)
            learner.sync_weights()
            final = evaluate(learner.algo, learner.components.evaluation_env(), run.eval_episodes, run.seed)
            counters = learner.counters()
            tracker.log_metrics({"eval_return": final.mean, "eval_return_std": final.std,
                                 "final_eval_return": final.mean}, step=counters["env_steps"])
            if learner.changes:
                tracker.log_text("\n".join(f"env_steps={c.env_steps} version={c.version} {c.kind}.{c.name}="
                                            f"{c.value!r} workers={','.join(c.workers)}" for c in learner.changes),
                                 "changes.log")
            model_dir = Path(run.output_dir) / (tracker.run_id or time.strftime("run-%Y%m%d-%H%M%S"))
            save_model(model_dir, learner.algo, cfg, counters)
        tracker.log_artifact(model_dir / "model.pt", "model")
        tracker.log_artifact(model_dir / "policy.pt2", "model")
        wall = time.perf_counter() - start
        tracker.log_metrics({"wall_time_s": wall}, step=counters["env_steps"])
        console.final(final, counters, wall, model_dir)
    return TrainResult(tracker.run_id, model_dir, final, counters, evaluations, wall)


def _train_loop(cfg: TrainConfig, learner: Any, tracker: Tracker, console: Console) -> list[tuple[int, float]]:
    run = cfg.run
    evaluations: list[tuple[int, float]] = []
    next_eval = run.eval_every or 0
    last_log = time.perf_counter()
    logged_changes = 0
    with console.progress() as progress:
        while learner.env_steps < run.total_env_steps:
            _follow_schedules(cfg, learner)
            learner.step()
            if len(learner.changes) > logged_changes:
                _log_changes(learner.changes[logged_changes:], tracker)
                logged_changes = len(learner.changes)
            progress(learner.env_steps)
            now = time.perf_counter()
            if now - last_log >= run.log_every_s:
                _log(learner, tracker, console)
                last_log = now
            if run.eval_every and learner.env_steps >= next_eval:
                next_eval += run.eval_every
                learner.sync_weights()
                result = evaluate(learner.algo, learner.components.evaluation_env(), run.eval_episodes, run.seed)
                evaluations.append((learner.env_steps, result.mean))
                tracker.log_metrics({"eval_return": result.mean, "eval_return_std": result.std},
                                    step=learner.env_steps)
                console.evaluation(learner.env_steps, result)
                if run.stop_at_return is not None and result.mean >= run.stop_at_return:
                    break
    _log(learner, tracker, console)
    return evaluations


def _follow_schedules(cfg: TrainConfig, learner: Any) -> None:
    for schedule in cfg.schedules:
        value = schedule.value(learner.env_steps)
        current = getattr(getattr(learner.components, schedule.kind), schedule.name)
        if value != current:
            update = (learner.update_algorithm_parameter if schedule.kind == "algo"
                      else learner.update_storage_parameter)
            update(schedule.name, value)


def _log_changes(changes: list[Any], tracker: Tracker) -> None:
    """Each runtime change as a metric at the env step where it took effect (numbers), plus the
    policy version; component replacements as a text line in ``changes.log``."""
    for c in changes:
        key = f"{c.kind}.{c.name}"
        if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
            tracker.log_metrics({f"param/{key}": float(c.value), f"param_version/{key}": float(c.version)},
                                step=c.env_steps)
        else:
            tracker.log_metrics({f"param_version/{c.kind}": float(c.version)}, step=c.env_steps)


def _log(learner: Any, tracker: Tracker, console: Console) -> None:
    metrics = learner.pop_metrics()
    tracker.log_metrics(metrics, step=learner.env_steps)
    tracker.flush()
    console.metrics(metrics)
