"""Hand freed buffers back to the operating system (glibc), so a step's peak memory is what
it holds, not what it once held.

glibc's malloc serves large blocks from mmap and returns them on free, but raises that
threshold each time such a block is freed, up to 32 MiB: after the first LightGBM fit, the
bin-sampling buffers of the next (hundreds of MiB, freed once the bins exist) come from the heap
and stay in the process. A fixed threshold keeps them on mmap. Measured on train at 300k rows:
peak RSS 1.83 GiB with the sliding threshold, 1.39 GiB with this one, in the same time.
A user's own `MALLOC_MMAP_THRESHOLD_` wins; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 256 KiB; whether it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
