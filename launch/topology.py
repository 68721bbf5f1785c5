"""The scheme as it ran: one row per worker (the Learner, each GWorker, each CWorker), with its node
and its figures, as a table (``topology.csv``) and a picture of the hierarchy (``topology.png``).

``train()`` logs both as MLflow artifacts at the end of a run (:func:`log_topology`); on demand,
:func:`topology` reads a live :class:`~colonyrl.scheme.learner.Learner` (or ``Scheme``) and
:func:`write_topology` writes the files, e.g. ``print(to_markdown(topology(scheme)))``.

The figures cover the Learner's life so far (``Learner.worker_figures``, fed by every packet):

- ``fps``: a CWorker's mean env steps per second while collecting; a GWorker's env steps (those of
  its CWorkers that reached the Learner) per second of wall time, the Learner's the sum of those.
- ``policy_lag``: a CWorker's mean policy versions its rollouts were behind its GWorker; a
  GWorker's mean gradient staleness (Learner version minus the version its gradients used).
- ``restarts``: how often the worker was re-created after its process died.
- ``bytes_sent``: a CWorker's rollout bytes as sent to its GWorker; a GWorker's gradient bytes to
  the Learner (numpy on the wire; 0 in the Learner's process, where nothing is copied).
- ``compression_ratio``: a CWorker's raw / sent rollout bytes (1.0 when lz4 is off: DESIGN, data path).

The picture uses matplotlib's object API on the Agg canvas, no pyplot state
(https://matplotlib.org/stable/gallery/user_interfaces/web_application_server_sgskip.html), imported
only when drawn; boxes are coloured by node, so placement on a cluster shows at a glance.
"""

from __future__ import annotations

import csv
import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

from colonyrl.scheme.worker_set import InProcess

__all__ = ["WorkerRow", "topology", "to_markdown", "write_topology", "draw", "log_topology", "FIELDS"]

FIELDS = ("kind", "name", "parent", "node", "fps", "policy_lag", "restarts", "bytes_sent", "compression_ratio")
#: CWorkers drawn per GWorker; the rest are summed up in one box (the table lists them all).
MAX_DRAWN_CWORKERS = 8


@dataclasses.dataclass(frozen=True)
class WorkerRow:
    """One worker of the topology; a figure the worker kind has no measure for is None."""

    kind: str  # "Learner", "GWorker", "CWorker"
    name: str  # "learner", "g0", "g0.c1"
    parent: str | None
    node: str
    fps: float | None
    policy_lag: float | None
    restarts: int | None
    bytes_sent: float | None
    compression_ratio: float | None


def topology(learner_or_scheme: Any) -> list[WorkerRow]:
    """The rows of a live Learner (or of a Scheme's), Learner first, each GWorker before its CWorkers."""
    learner = getattr(learner_or_scheme, "learner", learner_or_scheme)
    figures = learner.worker_figures
    elapsed = max(time.perf_counter() - learner.created_at, 1e-9)

    def mean(key: str) -> float | None:
        return figures.sums[key] / figures.counts[key] if figures.counts.get(key) else None

    def total(key: str) -> float:
        return float(figures.sums.get(key, 0.0))

    driver, gworker_nodes, cworker_nodes = _nodes(learner)
    names = learner.gworkers.names
    rows = [WorkerRow("Learner", "learner", None, driver, sum(total(f"env_steps/{g}") for g in names) / elapsed,
                      None, None, None, None)]
    for g, g_node, c_nodes in zip(names, gworker_nodes, cworker_nodes, strict=True):
        rows.append(WorkerRow("GWorker", g, "learner", g_node, total(f"env_steps/{g}") / elapsed,
                              mean(f"gradient_staleness/{g}"), int(total(f"restarts/{g}")),
                              total(f"gradient_bytes/{g}"), None))
        cworkers = [n for n in learner.worker_names if n.split(".")[0] == g and n != g]
        for c, c_node in zip(cworkers, c_nodes, strict=True):
            raw, wire = total(f"rollout_bytes_raw/{c}"), total(f"rollout_bytes_wire/{c}")
            rows.append(WorkerRow("CWorker", c, g, c_node, mean(f"collect_fps/{c}"), mean(f"policy_lag/{c}"),
                                  int(total(f"restarts/{c}")), wire, raw / wire if wire else None))
    return rows


def _nodes(learner: Any) -> tuple[str, list[str], list[list[str]]]:
    """Where the Learner, each GWorker and each GWorker's CWorkers run: ``local`` for a scheme wholly
    in this process; else Ray nodes as ``<ip>/<first 6 hex digits of its id>`` (the nodes of one
    machine share the ip), asked of the actors only."""
    gworkers = learner.gworkers
    if isinstance(gworkers.group, InProcess) and all(isinstance(w.cworkers.group, InProcess) for w in gworkers.workers):
        return "local", ["local"] * len(gworkers.names), [["local"] * len(w.cworkers.names) for w in gworkers.workers]
    import ray  # the scheme runs actors: Ray is up

    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}

    def label(node_id: str) -> str:
        return f"{ips.get(node_id, '?')}/{node_id[:6]}"

    driver = label(ray.get_runtime_context().get_node_id())
    if not isinstance(gworkers.group, InProcess):
        return driver, [label(n) for n in gworkers.nodes()], [[label(n) for n in c] for c in gworkers.cworker_nodes()]
    cworkers = [[driver] * len(w.cworkers.names) if isinstance(w.cworkers.group, InProcess)
                else [label(n) for n in w.cworkers.nodes()] for w in gworkers.workers]
    return driver, [driver] * len(gworkers.names), cworkers


def _cell(value: float | int | str | None, digits: int = 1) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[WorkerRow]) -> str:
    """The rows as a Markdown table (what ``topology.csv`` holds, rounded)."""
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + " --- |" * len(FIELDS)]
    for r in rows:
        cells = [r.kind, r.name, r.parent, r.node, _cell(r.fps), _cell(r.policy_lag, 2), _cell(r.restarts),
                 _cell(r.bytes_sent, 0), _cell(r.compression_ratio, 2)]
        lines.append("| " + " | ".join(c or "" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_topology(rows: list[WorkerRow], folder: str | Path) -> list[Path]:
    """``topology.csv`` (every row, full precision) and ``topology.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "topology.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows([_cell(v, 6) if isinstance(v, float) else ("" if v is None else v)
                          for v in dataclasses.astuple(r)] for r in rows)
    picture = folder / "topology.png"
    draw(rows, picture)
    return [table, picture]


def draw(rows: list[WorkerRow], path: str | Path) -> None:
    """The hierarchy as a tree: the Learner on top, its GWorkers below, each one's CWorkers under it."""
    from matplotlib.figure import Figure  # lazy: ~0.8 s

    gworkers = [r for r in rows if r.kind == "GWorker"]
    columns = {g.name: [r for r in rows if r.parent == g.name] for g in gworkers}
    drawn = {g: c[:MAX_DRAWN_CWORKERS] for g, c in columns.items()}
    width = sum(max(len(c) + (len(columns[g]) > len(c)), 1) for g, c in drawn.items())
    fig = Figure(figsize=(min(2.2 * max(width, 2), 60), 4.8))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(-0.5, max(width, 1) - 0.5)
    ax.set_ylim(-0.6, 2.6)
    colours = {node: f"C{i % 10}" for i, node in enumerate(dict.fromkeys(r.node for r in rows))}
    learner_x, x, places = (max(width, 1) - 1) / 2, 0.0, {}
    for g in gworkers:
        span = max(len(drawn[g.name]) + (len(columns[g.name]) > len(drawn[g.name])), 1)
        places[g.name] = (x + (span - 1) / 2, 1.0)
        for i, c in enumerate(drawn[g.name]):
            places[c.name] = (x + i, 0.0)
        x += span
    for r in rows:  # edges first, boxes over them
        if r.parent is not None and r.name in places:
            px, py = (learner_x, 2.0) if r.parent == "learner" else places[r.parent]
            ax.plot([px, places[r.name][0]], [py, places[r.name][1]], color="0.6", linewidth=1, zorder=1)
    _box(ax, learner_x, 2.0, rows[0], colours)
    for r in rows[1:]:
        if r.name in places:
            _box(ax, *places[r.name], r, colours)
    for g in gworkers:  # CWorkers left out of the picture (not of the table)
        hidden = columns[g.name][MAX_DRAWN_CWORKERS:]
        if hidden:
            ax.text(places[g.name][0] + (len(drawn[g.name]) - 1) / 2 + 0.5, 0.0, f"+{len(hidden)} CWorkers",
                    ha="center", va="center", fontsize=7, zorder=2)
    ax.set_title("colonyrl topology: boxes coloured by node; fps, policy lag, bytes sent, restarts", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _box(ax: Any, x: float, y: float, r: WorkerRow, colours: dict[str, str]) -> None:
    lines = [r.name, r.node, f"{_cell(r.fps)} fps"]
    if r.policy_lag is not None:
        lines.append(f"lag {_cell(r.policy_lag, 2)}")
    if r.bytes_sent:
        ratio = f" (x{r.compression_ratio:.2f})" if r.compression_ratio else ""
        lines.append(f"{r.bytes_sent / 1e6:.2f} MB sent{ratio}")
    if r.restarts:
        lines.append(f"{r.restarts} restarts")
    ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=7, zorder=2,
            bbox={"boxstyle": "round", "facecolor": colours[r.node], "alpha": 0.35})


def log_topology(learner: Any, tracker: Any, folder: str | Path) -> list[WorkerRow] | None:
    """Write the topology of ``learner`` into ``folder`` and log it to ``tracker``'s run (nothing
    when tracking is off); a failure warns and never fails the run. Returns the rows."""
    if not tracker.enabled:
        return None
    try:
        rows = topology(learner)
        for path in write_topology(rows, folder):
            tracker.log_artifact(path)
        return rows
    except Exception as e:  # a picture is not worth a finished run
        warnings.warn(f"could not log the run's topology artifact: {e!r}", stacklevel=2)
        return None
