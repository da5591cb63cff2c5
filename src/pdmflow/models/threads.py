"""How many threads LightGBM and the forest use: the cores this process may run on, or
`PDMFLOW_THREADS`.

OpenMP keeps its default wait policy (threads spin briefly between parallel regions): waiting
passively made a 2-thread LightGBM fit 2.7x slower on an idle 2-core machine, slower than one
thread. Spinning hurts only when two multi-threaded processes share the cores (7x slower each
here), so whatever runs several at once gives each its share instead: tuning workers on one
machine (`tuning.threads_per_worker`), the scheduler's tenants, the test suite's workers.
"""

from __future__ import annotations

import os

from pdmflow.errors import ConfigError

THREADS_ENV = "PDMFLOW_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def estimator_threads() -> int:
    """Threads for one fit or predict: `PDMFLOW_THREADS` when set (a positive integer), else
    every available core."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return available_cores()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(
            f"environment variable {THREADS_ENV}: expected a positive integer (threads), "
            f"got {value!r}"
        )
    return threads


def share_of_cores(processes: int) -> int:
    """Threads for each of `processes` processes sharing this process's budget
    (`estimator_threads`); one process gets all of it."""
    return max(1, estimator_threads() // max(1, processes))
