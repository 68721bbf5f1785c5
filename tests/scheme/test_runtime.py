"""scheme/runtime.py: ``init_process`` has glibc's malloc keep freed memory instead of faulting it
in again every update (``keep_freed_memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Rounds of ten 300 kB arrays written and freed, the pattern of an update's activations: with
# glibc's default thresholds the freed heap top goes back to the kernel every round.
_PATTERN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "init":
        from colonyrl.scheme.runtime import init_process, keep_freed_memory
        init_process(1)
        assert keep_freed_memory()  # already done, and says so
    def rounds(n):
        for _ in range(n):
            arrays = [np.ones(300_000 // 8) for _ in range(10)]
            del arrays
    rounds(3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(50)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PATTERN, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_init_process_stops_freed_memory_being_faulted_in_again():
    default, tuned = _faults("default"), _faults("init")
    assert default > 10_000  # 50 rounds x 3 MB: the pattern does fault with glibc's defaults
    assert tuned < 500
