"""Console output of a run: a progress bar, a periodic metric table, the final evaluation."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["Console"]

# Shown in the periodic table, in this order, when present.
_COLUMNS = (
    ("env_steps", "steps", "{:,.0f}"),
    ("fps", "fps", "{:,.0f}"),
    ("episode_return", "return", "{:.1f}"),
    ("episode_length", "length", "{:.0f}"),
    ("policy_loss", "pi loss", "{:+.4f}"),
    ("value_loss", "v loss", "{:.3f}"),
    ("entropy", "entropy", "{:.3f}"),
    ("approx_kl", "kl", "{:.4f}"),
    ("clipfrac", "clip", "{:.3f}"),
    ("explained_variance", "expl var", "{:+.2f}"),
    ("policy_lag", "lag", "{:.1f}"),
)


class Console:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        # Piped output (CI logs, subprocess tests) gets 80 columns from rich: too narrow for the table.
        self.out = RichConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
        self._progress: Progress | None = None

    def header(self, cfg: Any, run_id: str | None) -> None:
        s = cfg.scheme
        self.out.print(
            f"[bold]colonyrl[/] {type(cfg.algo).__name__.removesuffix('Config')} on {cfg.env.id}: "
            f"{s.num_grad_workers} GWorker(s) x {s.num_col_workers} CWorker(s) x {cfg.env.num_envs} envs, "
            f"{'Ray' if s.uses_ray else 'in-process'}, budget {cfg.run.total_env_steps:,} env steps"
            + (f", MLflow run {run_id}" if run_id else "")
        )

    def resumed(self, path: str, env_steps: int, exact: bool) -> None:
        how = "workers' envs and RNG restored" if exact else "new worker topology: envs start afresh"
        self.out.print(f"resumed from {path} at {env_steps:,} env steps ({how})")

    @contextlib.contextmanager
    def progress(self) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda steps: None
            return
        columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.out, transient=True, refresh_per_second=4) as progress:
            self._progress = progress
            task = progress.add_task("train", total=self.total)
            yield lambda steps: progress.update(task, completed=min(steps, self.total))
        self._progress = None

    def metrics(self, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        table = Table(box=None, pad_edge=False, show_edge=False)
        cells = []
        for key, title, fmt in _COLUMNS:
            if key in metrics:
                table.add_column(title, justify="right")
                cells.append(fmt.format(metrics[key]))
        table.add_row(*cells)
        self.out.print(table)

    def evaluation(self, env_steps: int, result: Any) -> None:
        if self.enabled:
            self.out.print(f"  eval at {env_steps:,} steps: return {result.mean:.1f} +/- {result.std:.1f}")

    def final(self, result: Any, counters: dict[str, int], wall_s: float, model_dir: Path) -> None:
        # Always printed: scripts and smoke tests read this line.
        self.out.print(
            f"final evaluation: mean return {result.mean:.2f} +/- {result.std:.2f} over {len(result.returns)} "
            f"episodes | {counters['env_steps']:,} env steps, {counters['updates']:,} updates, {wall_s:.1f} s "
            f"| model saved to {model_dir}"
        )
