"""One training run: build the scheme, step the Learner, track to MLflow, evaluate, save.

The loop is a function tests can call (CleanRL's module-level loop is the counter-example for a
library); ``colonyrl train`` and every launch script end up here.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from colonyrl.config import from_dict, to_flat_dict
from colonyrl.launch.checkpoint import load_checkpoint, save_checkpoint
from colonyrl.launch.config import TrainConfig
from colonyrl.launch.console import Console
from colonyrl.launch.evaluate import (
    FINAL_EVAL_WORKER_INDEX,
    EvalResult,
    evaluate,
    learner_obs_normalizer,
    save_model,
)
from colonyrl.launch.signals import StopRequest
from colonyrl.launch.topology import log_topology
from colonyrl.launch.tracking import Tracker
from colonyrl.scheme.learner import NonFiniteError
from colonyrl.scheme.scheme import Scheme

if TYPE_CHECKING:  # pragma: no cover
    from colonyrl.launch.mlflow_model import BestModel

__all__ = ["TrainResult", "TrainingInterrupted", "train"]


class TrainResult(NamedTuple):
    run_id: str | None
    model_dir: Path
    evaluation: EvalResult
    counters: dict[str, int]
    #: (env_steps, mean return) of every periodic evaluation, in order.
    evaluations: list[tuple[int, float]]
    wall_time_s: float
    # Timings within wall_time_s (all from train()'s start), e.g. for benchmarks/ppo_cartpole.py:
    #: Until the first ``learner.step()`` starts: tracker, scheme (workers, envs, models), resume.
    setup_time_s: float = 0.0
    #: Sum of the periodic evaluations' durations (the ``evaluate`` calls in the loop).
    eval_time_s: float = 0.0
    #: (start, end) of each periodic evaluation (aligned with ``evaluations``).
    evaluation_times_s: tuple[tuple[float, float], ...] = ()
    #: When training ended (the last round finished), before the last checkpoint, the final
    #: evaluation and the model export.
    train_end_s: float = 0.0


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the run after a checkpoint was written (MLflow status KILLED)."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"stopped by signal {signum}; checkpoint: {checkpoint}")


def train(cfg: TrainConfig, tags: dict[str, str] | None = None) -> TrainResult:
    """Train ``cfg`` to its budget (or its ``stop_at_return``), evaluate, save, and track it all.
    ``tags`` join the MLflow run's (``mlflow.parentRunId`` makes it a nested run: launch/seeds.py)."""
    cfg, resumed = _resolve_resume(cfg)
    run = cfg.run
    console = Console(enabled=run.progress, total=run.total_env_steps)
    # An outage of the tracking server mid-run does not stop training; what the server never got is
    # left in <output_dir>/<run id>/mlflow-fallback/, beside the model (launch/tracking.py).
    tracker = Tracker(run.tracking_uri, run.experiment, run.run_name, enabled=run.track,
                      fallback_dir=run.output_dir, system_metrics=run.system_metrics)
    start = time.perf_counter()
    with tracker:
        tracker.start(to_flat_dict(cfg), tags={"colonyrl.preset_env": cfg.env.id, **(tags or {})},
                      run_id=resumed["run_id"] if resumed else None)
        if resumed is None:
            tracker.log_dict(dataclasses.asdict(cfg), "config.json")
        console.header(cfg, tracker.run_id)
        run_dir = Path(run.output_dir) / (tracker.run_id or time.strftime("run-%Y%m%d-%H%M%S"))
        # Signal handlers after the scheme: ray.init installs its own SIGTERM handler (it aborts).
        with Scheme(cfg.scheme, cfg.components()) as scheme, StopRequest() as stop:
            learner = scheme.learner
            if resumed is not None:
                exact = learner.load_state_dict(resumed["learner"])
                console.resumed(resumed["path"], learner.env_steps, exact)
            checkpoints = Checkpoints(cfg, learner, tracker.run_id)
            timing = _Timing(start)
            changes = _ChangesLog(run_dir / "changes.log")
            best = _best_model(cfg, run_dir, resumed is not None)
            try:
                evaluations = _train_loop(cfg, learner, tracker, console, stop, checkpoints, timing, changes, best)
                learner.finish_round()  # no-op after the loop's own; also after a stop_at_return break
                train_end = time.perf_counter() - start
            except NonFiniteError:  # skipped updates left the weights good: keep them, then stop
                checkpoints.save()
                changes.upload(learner, tracker)
                raise
            last = checkpoints.save()
            changes.upload(learner, tracker)
            log_topology(learner, tracker, run_dir)  # topology.csv/.png: every worker, its node and figures
            if stop.requested:
                raise TrainingInterrupted(stop.signal or 0, last)
            learner.sync_weights()
            # Its own seeds: not the episodes of the periodic evaluation that may have stopped the run.
            final = evaluate(learner.algo, learner.components.evaluation_env(), run.eval_episodes, run.seed,
                             worker_index=FINAL_EVAL_WORKER_INDEX, obs_normalizer=learner_obs_normalizer(learner))
            final_at = time.perf_counter() - start
            counters = learner.counters()
            tracker.log_metrics({"eval_return": final.mean, "eval_return_std": final.std,
                                 "final_eval_return": final.mean}, step=counters["env_steps"])
            model_dir = run_dir
            save_model(model_dir, learner.algo, cfg, counters, learner_obs_normalizer(learner))
        tracker.log_artifact(model_dir / "model.pt", "model")
        tracker.log_artifact(model_dir / "policy.pt2", "model")
        if tracker.enabled:  # the MLflow model (pyfunc over policy.pt2), optionally registered
            from colonyrl.launch.mlflow_model import log_model
            log_model(tracker, model_dir, run.register_model)
            if run.save_best_model:  # the run's best_model artifact, if a periodic evaluation made one
                from colonyrl.launch.mlflow_model import log_best_model
                log_best_model(tracker, model_dir, run.register_model)
            if evaluations:  # periodic evaluations make a curve; without, it is final_eval_return alone
                _log_curve(tracker, model_dir, evaluations, timing, (counters["env_steps"], final_at, final.mean))
        wall = time.perf_counter() - start
        tracker.log_metrics({"wall_time_s": wall}, step=counters["env_steps"])
        console.final(final, counters, wall, model_dir)
    return TrainResult(tracker.run_id, model_dir, final, counters, evaluations, wall,
                       setup_time_s=timing.setup_s if timing.setup_s is not None else train_end,
                       eval_time_s=timing.eval_s, evaluation_times_s=tuple(timing.evals),
                       train_end_s=train_end)


def _log_curve(tracker: Tracker, folder: Path, evaluations: list[tuple[int, float]], timing: _Timing,
               final: tuple[int, float, float]) -> None:
    """The run's (env_steps, wall_time_s, eval_return) points, periodic and final, as artifacts
    ``curve.csv`` (and ``curve.png``: launch/plot.py); never failing the run."""
    try:
        from colonyrl.launch.plot import write_run_curve
        points = [(s, t, r) for (s, r), (_, t) in zip(evaluations, timing.evals, strict=True)] + [final]
        for path in write_run_curve(folder, points):
            tracker.log_artifact(path)
    except Exception as e:  # a plot is not worth a finished run
        warnings.warn(f"could not log the run's curve artifact: {e!r}", stacklevel=2)


class _Timing:
    """Where :func:`train`'s wall time goes (seconds from its start)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.setup_s: float | None = None
        self.eval_s = 0.0
        self.evals: list[tuple[float, float]] = []


class _ChangesLog:
    """Every runtime change as a line of ``<run dir>/changes.log``, appended as it happens (the
    Learner keeps only the newest; a linear schedule makes one per update), and that file as the
    run's ``changes.log`` artifact at the end (also on SIGTERM and a non-finite stop)."""

    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0

    def new(self, learner: Any) -> list[Any]:
        """The changes since the last call, each also appended to the file."""
        changes = learner.changes_since(self.count)
        self.count = learner.num_changes
        if changes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.writelines(f"env_steps={c.env_steps} version={c.version} {c.kind}.{c.name}={c.value!r} "
                             f"workers={','.join(c.workers)}\n" for c in changes)
        return changes

    def upload(self, learner: Any, tracker: Tracker) -> None:
        self.new(learner)
        if self.path.exists():
            tracker.log_artifact(self.path)


def _resolve_resume(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The checkpoint to continue from, and the config to continue with: env, actor, algorithm,
    storage and schedules as saved (runtime changes included); scheme and run settings as given now,
    so a run can resume onto other worker counts or with a larger budget."""
    if not cfg.run.resume:
        return cfg, None
    ref = Path(cfg.run.resume)
    state = load_checkpoint(ref if ref.exists() else Path(cfg.run.checkpoint_dir) / cfg.run.resume)
    saved = from_dict(TrainConfig, state["config"])
    return saved.replace(scheme=cfg.scheme, run=cfg.run), state


class Checkpoints:
    """Periodic checkpoints (every N env steps and/or M minutes, at a collection-round boundary,
    where worker state is exact) into ``<checkpoint_dir>/<run id>/``."""

    def __init__(self, cfg: TrainConfig, learner: Any, run_id: str | None) -> None:
        self.cfg, self.learner, self.run_id = cfg, learner, run_id
        self.folder = Path(cfg.run.checkpoint_dir) / (run_id or time.strftime("run-%Y%m%d-%H%M%S"))
        self.next_steps = learner.env_steps + (cfg.run.checkpoint_every or 0)
        self.last_time = time.monotonic()
        self.last: Path | None = None

    def due(self) -> bool:
        run = self.cfg.run
        by_steps = run.checkpoint_every is not None and self.learner.env_steps >= self.next_steps
        by_time = run.checkpoint_every_min is not None and time.monotonic() - self.last_time >= 60 * run.checkpoint_every_min
        return by_steps or by_time

    def maybe_save(self) -> None:
        """A due checkpoint is taken at once: the round in progress is finished first (in every
        mode, so none is postponed waiting for all GWorkers to reach a boundary together)."""
        if self.due():
            self.learner.finish_round()
            self.save()

    def save(self) -> Path:
        self.last = save_checkpoint(self.folder, self.learner, self.cfg, self.run_id, self.cfg.run.keep_checkpoints)
        if self.cfg.run.checkpoint_every:
            while self.next_steps <= self.learner.env_steps:
                self.next_steps += self.cfg.run.checkpoint_every
        self.last_time = time.monotonic()
        return self.last


def _best_model(cfg: TrainConfig, run_dir: Path, resumed: bool) -> BestModel | None:
    """``--save-best-model``: the run folder's best model (launch/mlflow_model.py ``BestModel``), None without."""
    if not cfg.run.save_best_model:
        return None
    from colonyrl.launch.mlflow_model import BestModel
    return BestModel(run_dir, resume=resumed)


def _train_loop(cfg: TrainConfig, learner: Any, tracker: Tracker, console: Console, stop: StopRequest,
                checkpoints: Checkpoints, timing: _Timing, changes: _ChangesLog,
                best: BestModel | None = None) -> list[tuple[int, float]]:
    run = cfg.run
    evaluations: list[tuple[int, float]] = []
    next_eval = run.eval_every or 0
    last_log = time.perf_counter()
    # One row per env step: the step axis stays strictly increasing (a resumed run logged its
    # checkpoint's step already).
    logged_at = learner.env_steps if learner.env_steps else -1
    with console.progress() as progress:
        while learner.env_steps < run.total_env_steps and not stop.requested:
            _follow_schedules(cfg, learner)
            if timing.setup_s is None:
                timing.setup_s = time.perf_counter() - timing.start
            try:
                learner.step()
                checkpoints.maybe_save()
            except NonFiniteError:  # the metrics up to the stop reach MLflow too
                if learner.env_steps != logged_at:
                    _log(learner, tracker, console)
                raise
            new_changes = changes.new(learner)
            if new_changes:
                _log_changes(new_changes, tracker)
            progress(learner.env_steps)
            ending = learner.env_steps >= run.total_env_steps or stop.requested
            if ending:  # the last round's remaining updates come before the last row
                learner.finish_round()
            now = time.perf_counter()
            if (ending or now - last_log >= run.log_every_s) and learner.env_steps != logged_at:
                _log(learner, tracker, console)
                last_log, logged_at = now, learner.env_steps
            if run.eval_every and learner.env_steps >= next_eval:
                while next_eval <= learner.env_steps:
                    next_eval += run.eval_every
                learner.finish_round()  # evaluate the policy the round's data trained, not a partial one
                learner.sync_weights()
                eval_start = time.perf_counter()
                result = evaluate(learner.algo, learner.components.evaluation_env(), run.eval_episodes, run.seed,
                                  obs_normalizer=learner_obs_normalizer(learner))
                eval_end = time.perf_counter()
                timing.eval_s += eval_end - eval_start
                timing.evals.append((eval_start - timing.start, eval_end - timing.start))
                evaluations.append((learner.env_steps, result.mean))
                if best is not None:  # the model as it is now, if it beats the best so far
                    best.offer(result.mean, learner.env_steps, lambda folder: save_model(
                        folder, learner.algo, cfg, learner.counters(), learner_obs_normalizer(learner)))
                tracker.log_metrics({"eval_return": result.mean, "eval_return_std": result.std},
                                    step=learner.env_steps)
                console.evaluation(learner.env_steps, result)
                if run.stop_at_return is not None and result.mean >= run.stop_at_return:
                    break
    if learner.env_steps != logged_at:
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
