"""Freed buffers go back to the system (models/memory.py): glibc's sliding mmap threshold
otherwise keeps them in the process after the first large block is freed."""

import os
import subprocess
import sys

import pytest

from pdmflow.models.memory import fix_mmap_threshold

# In a fresh process: free one 16 MiB block (glibc raises its mmap threshold past it), then
# hold every other one of 200 one-MiB blocks and print how much RSS freeing the others gave back.
PROGRAM = """
import sys
import numpy as np
if sys.argv[1] == "fixed":
    from pdmflow.models.memory import fix_mmap_threshold
    assert fix_mmap_threshold()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
block = np.ones(16 * 2**20, np.uint8)
del block
blocks = [np.ones(2**20, np.uint8) for _ in range(200)]
before = rss()
del blocks[::2]
print((before - rss()) / 2**20)
"""


def returned_mib(mode: str) -> float:
    # glibc's own defaults: any MALLOC_* tunable in the environment (Dask's nannies set
    # MALLOC_TRIM_THRESHOLD_) turns the sliding threshold off by itself.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MALLOC_") and key != "GLIBC_TUNABLES"
    }
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_freed_blocks_go_back_to_the_system_once_the_threshold_is_fixed():
    assert returned_mib("sliding") < 20  # glibc alone keeps the 100 freed MiB
    assert returned_mib("fixed") > 90


def test_a_users_own_threshold_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
