"""Per-process set-up shared by every worker kind (driver, GWorker, CWorker)."""

from __future__ import annotations

import os

import torch

__all__ = ["init_process", "WorkerTimeoutError", "WorkerDiedError"]


def init_process(torch_threads: int | None = 1) -> None:
    """One torch thread per worker unless told otherwise (None: keep this process's setting, for a
    worker sharing the process of another, e.g. a GWorker's in-process CWorker).

    Measured here: 2 processes x 2 threads ran 3.4x slower than 2 x 1 on 2 cores, 4 x 2 ran 7x
    slower (platform.md §4). Ray sets OMP_NUM_THREADS for actors but not for the driver.
    """
    if torch_threads is None:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(torch_threads))
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


class WorkerTimeoutError(TimeoutError):
    """A worker did not answer within the configured timeout; names the worker and the stage."""

    def __init__(self, workers: list[str], stage: str, timeout_s: float) -> None:
        self.workers, self.stage, self.timeout_s = workers, stage, timeout_s
        super().__init__(f"{', '.join(workers)} did not answer '{stage}' within {timeout_s:g} s")


class WorkerDiedError(RuntimeError):
    """A worker process died while doing ``stage``."""

    def __init__(self, worker: str, stage: str, cause: BaseException) -> None:
        self.worker, self.stage = worker, stage
        super().__init__(f"{worker} died during '{stage}': {type(cause).__name__}: {str(cause)[:300]}")
