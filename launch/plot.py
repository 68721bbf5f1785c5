"""Learning curves from the MLflow store: mean and spread over the seeds of one config, as a PNG.

``colonyrl plot RUN_OR_EXPERIMENT... [--metric eval_return] [--x env_steps|wall_time] --out FILE.png``.
Each reference is an experiment (name or id: its runs, without the parents of nested runs), a run
id, or a parent run (its children, recursively). Runs are grouped by their params minus
:data:`IGNORED_PARAMS` (the seed and where/how a run is written): one group per config.

Alignment (:func:`align`): within a run, points are ordered by x and a repeated x keeps the value
logged last (``train()`` logs its last periodic evaluation and the final one at the same env step:
the final one counts). The runs of a group are then linearly interpolated (``numpy.interp``) onto
one grid: the union of their x points inside the range every run covers (no extrapolation, so a
group ends where its shortest run ends). Runs evaluated at the same env steps, the usual case,
keep their exact values. The spread is the population std (``numpy.std``, ddof=0) or min/max.

The data (:func:`learning_curves`, :func:`group_curves`, :func:`align`) is computed apart from the
drawing (:func:`draw`), which uses matplotlib's object API on the Agg canvas, no pyplot state
(https://matplotlib.org/stable/gallery/user_interfaces/web_application_server_sgskip.html).
mlflow and matplotlib are imported only when used (about 1.5 s and 0.8 s).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import tyro

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["PlotArgs", "PlotError", "RunCurve", "GroupCurve", "IGNORED_PARAMS", "align", "group_curves",
           "learning_curves", "draw", "run_plot", "write_run_curve"]

_log = logging.getLogger(__name__)

#: Params that do not change what a run learns: runs differing only in these are one config.
IGNORED_PARAMS = frozenset({
    "run.seed", "run.run_name", "run.experiment", "run.tracking_uri", "run.track", "run.progress",
    "run.output_dir", "run.checkpoint_dir", "run.checkpoint_every", "run.checkpoint_every_min",
    "run.keep_checkpoints", "run.log_every_s", "run.resume", "run.system_metrics", "run.register_model",
})
#: What MLflow's nested runs carry (mlflow.start_run(nested=True); MLFLOW_PARENT_RUN_ID in mlflow/utils/mlflow_tags.py).
PARENT_TAG = "mlflow.parentRunId"
XAxis = Literal["env_steps", "wall_time"]
X_LABELS = {"env_steps": "env steps", "wall_time": "wall time (s)"}


class PlotError(ValueError):
    """A reference that names no run or experiment, a metric no run logged, runs with no common x range."""


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Learning curves (mean and spread over the seeds of each config) from the MLflow store, as a PNG."""

    #: Run ids, parent run ids (their children) and experiment names or ids.
    refs: Annotated[tuple[str, ...], tyro.conf.Positional]
    out: str = "curves.png"
    #: Where the runs live (default: MLFLOW_TRACKING_URI, else MLflow's default store).
    tracking_uri: str | None = None
    metric: str = "eval_return"
    #: The x axis: the metric's step (env steps), or seconds since each run started.
    x: XAxis = "env_steps"
    #: The band around the mean: +-1 std over the runs, or their min and max.
    spread: Literal["std", "minmax"] = "std"


@dataclasses.dataclass(frozen=True)
class RunCurve:
    """One run's history of one metric (x: env steps, or seconds since the run started)."""

    run_id: str
    params: dict[str, str]
    x: np.ndarray
    y: np.ndarray


@dataclasses.dataclass(frozen=True)
class GroupCurve:
    """The runs of one config on a shared grid: ``values[i]`` is run ``run_ids[i]`` interpolated onto ``x``."""

    label: str
    run_ids: tuple[str, ...]
    x: np.ndarray
    values: np.ndarray  # (runs, grid)

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.values.std(axis=0)

    def band(self, spread: str = "std") -> tuple[np.ndarray, np.ndarray]:
        if spread == "minmax":
            return self.values.min(axis=0), self.values.max(axis=0)
        return self.mean - self.std, self.mean + self.std


def _dedupe(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by x; of points logged at the same x, the last one (stable sort keeps logging order)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    last = np.append(x[1:] != x[:-1], True)
    return x[last], y[last]


def align(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, values)``: each ``(x, y)`` curve interpolated onto the union of the x points inside
    the range all of them cover; ``values`` is (curves, grid)."""
    cleaned = [_dedupe(x, y) for x, y in curves]
    if not cleaned or any(len(x) == 0 for x, _ in cleaned):
        raise PlotError("align: every curve needs at least one point")
    lo, hi = max(x[0] for x, _ in cleaned), min(x[-1] for x, _ in cleaned)
    if lo > hi:
        raise PlotError(f"the curves share no x range (they start by {lo:g} but one ends at {hi:g})")
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in cleaned]))
    return grid, np.stack([np.interp(grid, x, y) for x, y in cleaned])


def config_key(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in params.items() if k not in IGNORED_PARAMS))


def _labels(keys: list[tuple[tuple[str, str], ...]], sizes: list[int]) -> list[str]:
    """Each group by the params its config differs in from the others' (one group: algorithm and env)."""
    dicts = [dict(k) for k in keys]
    names = sorted({n for d in dicts for n in d})
    differing = [n for n in names if len({d.get(n) for d in dicts}) > 1]
    labels = []
    for d, n in zip(dicts, sizes, strict=True):
        if differing:
            text = ", ".join(f"{k}={d.get(k)}" for k in differing[:3]) + (", ..." if len(differing) > 3 else "")
        else:
            text = " ".join(d[k] for k in ("algo.name", "env.id") if k in d) or "runs"
        labels.append(f"{text} (n={n})")
    return labels


def group_curves(runs: Sequence[RunCurve]) -> list[GroupCurve]:
    """One :class:`GroupCurve` per config (in order of first appearance), its runs aligned by :func:`align`."""
    groups: dict[tuple[tuple[str, str], ...], list[RunCurve]] = {}
    for r in runs:
        groups.setdefault(config_key(r.params), []).append(r)
    labels = _labels(list(groups), [len(g) for g in groups.values()])
    out = []
    for label, members in zip(labels, groups.values(), strict=True):
        try:
            grid, values = align([(r.x, r.y) for r in members])
        except PlotError as e:
            raise PlotError(f"{label}: {e} (runs {', '.join(r.run_id for r in members)})") from e
        out.append(GroupCurve(label, tuple(r.run_id for r in members), grid, values))
    return out


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _leaves(client: MlflowClient, run: Run) -> list[Run]:
    """A run, or, if it is a parent of nested runs, its children's leaves."""
    children = _search(client, [run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")
    return [leaf for child in children for leaf in _leaves(client, child)] if children else [run]


def _experiment(client: MlflowClient, ref: str) -> Any:
    from mlflow.exceptions import MlflowException
    exp = client.get_experiment_by_name(ref)
    if exp is None and ref.isdigit():
        try:
            exp = client.get_experiment(ref)
        except MlflowException:
            return None
    return exp


def resolve_runs(client: MlflowClient, refs: Iterable[str]) -> list[Run]:
    """The runs ``refs`` name (experiment names or ids, run ids, parent runs), each once, in order."""
    from mlflow.exceptions import MlflowException
    found: dict[str, Run] = {}
    for ref in refs:
        exp = _experiment(client, ref)
        if exp is not None:
            runs = _search(client, [exp.experiment_id])
            parents = {r.data.tags.get(PARENT_TAG) for r in runs}
            runs = [r for r in runs if r.info.run_id not in parents]
        else:
            try:
                runs = _leaves(client, client.get_run(ref))
            except MlflowException as e:
                raise PlotError(f"{ref!r} is neither an experiment (name or id) nor a run id in "
                                f"{client.tracking_uri}") from e
        found.update((r.info.run_id, r) for r in runs)
    return list(found.values())


def learning_curves(tracking_uri: str | None, refs: Iterable[str], metric: str = "eval_return",
                    x: XAxis = "env_steps") -> list[GroupCurve]:
    """The curves ``colonyrl plot`` draws: ``metric`` of the runs ``refs`` name, grouped by config.
    Runs that never logged ``metric`` are left out (a warning names how many)."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    curves, skipped = [], 0
    for run in resolve_runs(client, refs):
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.timestamp)
        if not history:
            skipped += 1
            continue
        xs = [m.step if x == "env_steps" else (m.timestamp - run.info.start_time) / 1000 for m in history]
        curves.append(RunCurve(run.info.run_id, dict(run.data.params), np.asarray(xs, dtype=float),
                               np.asarray([m.value for m in history], dtype=float)))
    if not curves:
        raise PlotError(f"none of the {skipped} runs named logged the metric {metric!r}")
    if skipped:
        _log.warning("%d of the runs named never logged %r: left out", skipped, metric)
    return group_curves(curves)


def draw(groups: Sequence[GroupCurve], out: str | Path, metric: str = "eval_return", x: XAxis = "env_steps",
         spread: str = "std", title: str | None = None) -> Path:
    """Each group's mean as a line and its spread as a band, into the PNG ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for g in groups:
        (line,) = ax.plot(g.x, g.mean, label=g.label, marker="o" if len(g.x) <= 30 else None, markersize=3)
        if len(g.run_ids) > 1:
            lo, hi = g.band(spread)
            ax.fill_between(g.x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric + ("" if all(len(g.run_ids) == 1 for g in groups) else
                            f" (mean, band: {'min-max' if spread == 'minmax' else '+-1 std'})"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_run_curve(folder: Path, points: Sequence[tuple[int, float, float]], metric: str = "eval_return") -> list[Path]:
    """A run's own curve, ``(env_steps, wall_time_s, value)`` points, as ``curve.csv`` and, with two or
    more points (one is only the final evaluation), ``curve.png``: the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "curve.csv", "w", newline="") as f:
        csv.writer(f).writerows([("env_steps", "wall_time_s", metric), *points])
    written = [folder / "curve.csv"]
    if len(points) >= 2:
        grid, values = align([([p[0] for p in points], [p[2] for p in points])])
        written.append(draw([GroupCurve("this run", ("",), grid, values)], folder / "curve.png", metric,
                            title=f"run {folder.name}"))
    return written


def run_plot(args: PlotArgs) -> int:
    if not args.refs:
        raise PlotError("name at least one run id or experiment (name or id) to plot")
    groups = learning_curves(args.tracking_uri, args.refs, args.metric, args.x)
    out = draw(groups, args.out, args.metric, args.x, args.spread)
    runs = sum(len(g.run_ids) for g in groups)
    print(f"wrote {out}: {args.metric} over {X_LABELS[args.x]} of {runs} runs in {len(groups)} configs")
    for g in groups:
        print(f"  {g.label}: final mean {g.mean[-1]:.4g} +/- {g.std[-1]:.4g} at {g.x[-1]:g}")
    return 0
