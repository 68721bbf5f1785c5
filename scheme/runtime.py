"""Per-process set-up shared by every worker kind (driver, GWorker, CWorker)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

__all__ = ["init_process", "keep_freed_memory", "WorkerTimeoutError", "WorkerDiedError"]


def init_process(torch_threads: int | None = 1) -> None:
    """One torch thread per worker unless told otherwise (None: keep this process's setting, for a
    worker sharing the process of another, e.g. a GWorker's in-process CWorker), and glibc's
    malloc told to keep freed memory (:func:`keep_freed_memory`).

    Measured here: 2 processes x 2 threads ran 3.4x slower than 2 x 1 on 2 cores, 4 x 2 ran 7x
    slower (platform.md §4). Ray sets OMP_NUM_THREADS for actors but not for the driver.
    """
    keep_freed_memory()
    if torch_threads is None:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(torch_threads))
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned = False


def keep_freed_memory() -> bool:
    """Fix glibc malloc's mmap threshold at 32 MiB and its trim threshold at 64 MiB, once per
    process (Linux with glibc; False elsewhere, where nothing is changed).

    Why: an update allocates and frees the same few hundred KiB of tensors every step (one
    256x256 float32 activation is 256 KiB). glibc starts with a 128 KiB mmap threshold and a trim
    threshold of twice it, and raises both only up to the size of a freed mapped block (malloc.c,
    "dynamic mmap threshold"), so the heap keeps giving its free top back to the kernel and
    faulting it in again. Measured here on the ``sac-pendulum`` preset's run: 58-63 minor faults
    and 0.19-0.21 ms of system time per env step, 16.5 and 0.10 ms with this, and 4-5 % less wall
    time per env step (alternating runs). The values are the ones glibc's own adjustment ends at
    on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX 32 MiB, trim twice the mmap threshold): blocks above
    32 MiB (replay memories, frame stacks) are still mapped and returned whole, and each arena
    keeps at most 64 MiB of free heap top."""
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return _malloc_tuned
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no glibc (e.g. musl): nothing to tune
        return False
    _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))
    return _malloc_tuned


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
