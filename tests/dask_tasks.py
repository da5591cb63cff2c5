"""Partition functions for the Dask fault tests, imported by the tests' `dask worker` processes
(servers.DaskCluster puts this folder on their path); the standard library only."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

OPEN = "open"
STARTED = "started-"


@dataclass(frozen=True)
class Held:
    """`fn` of a partition, held on its worker until the test opens the gate: each call leaves
    `directory/started-<worker pid>-<id>` when it begins, then waits for `directory/open`. A
    test acts (kills a worker, stops the scheduler) while tasks are surely running."""

    fn: Callable[[pd.DataFrame], pd.DataFrame]
    directory: str

    def __call__(self, partition: pd.DataFrame) -> pd.DataFrame:
        gate = Path(self.directory)
        (gate / f"{STARTED}{os.getpid()}-{uuid.uuid4().hex}").touch()
        while not (gate / OPEN).exists():
            time.sleep(0.01)
        return self.fn(partition)


def started_by(directory: Path) -> dict[int, int]:
    """Calls begun so far, by worker process id."""
    counts: dict[int, int] = {}
    for marker in directory.glob(f"{STARTED}*"):
        pid = int(marker.name[len(STARTED) :].split("-")[0])
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def open_gate(directory: Path) -> None:
    (directory / OPEN).touch()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Until `condition()` holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)
