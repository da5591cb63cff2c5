"""The engine's contract, the local engine, and the split of a frame into whole devices."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from pdmflow.errors import DataValidationError

PartitionFunction = Callable[[pd.DataFrame], pd.DataFrame]
T = TypeVar("T")
# An engine's `map_tasks`: fn on each item, the results in order.
MapTasks = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def in_this_process(fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    """`map_tasks` without an engine: one item after another, here."""
    return [fn(item) for item in items]


def device_partitions(
    frame: pd.DataFrame, device_column: str, partition_rows: int
) -> list[tuple[int, int]]:
    """[start, end) row ranges of whole devices, about `partition_rows` rows each, in row order.

    A partition closes at the first device boundary at or after `partition_rows` rows, so a
    device is never split and one larger than `partition_rows` is a partition of its own. The
    ranges depend on the frame alone (the same frame, the same partitions). The frame's rows
    must be grouped by device, as validated telemetry is (sorted by device, then time).
    """
    if len(frame) == 0:
        return []
    codes = pd.factorize(frame[device_column], sort=False)[0]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    if len(starts) != codes.max() + 1:
        again = pd.Series(codes[starts]).duplicated().to_numpy()
        device = frame[device_column].iloc[starts[np.argmax(again)]]
        raise DataValidationError(
            f"column '{device_column}': the rows of device '{device}' are not together; "
            "sort the frame by device (then time) before partitioning it"
        )
    ranges, begin = [], 0
    for start in starts[1:]:
        if start - begin >= partition_rows:
            ranges.append((begin, int(start)))
            begin = int(start)
    ranges.append((begin, len(frame)))
    return ranges


class Engine(Protocol):
    """What a step asks of an engine."""

    kind: str

    def describe(self) -> dict[str, str]:
        """Params to log on the run: engine kind, workers, threads and memory per worker."""
        ...

    @property
    def dashboard_link(self) -> str | None:
        """Where to watch the work (the Dask dashboard), None when there is nothing to watch."""
        ...

    def map_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> pd.DataFrame:
        """`fn` over partitions of whole devices, concatenated in row order.

        `fn` must compute each device from that device's rows alone: then the result is the
        same however the frame is partitioned, on every engine.
        """
        ...

    def iter_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> Iterator[pd.DataFrame]:
        """`fn` over partitions of whole devices, each result yielded in row order; the caller
        holds one result at a time (a writer appends it, then it can go)."""
        ...

    def map_tasks(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """`fn(item)` for each item, as one task each, their results in order. For tasks that
        read and write storage themselves (a part of a stored table each): only `items` and
        the results travel. `fn` must give the same result when run twice (a task whose
        worker dies runs again elsewhere)."""
        ...


class LocalEngine:
    """Everything in this process, as before engines existed."""

    kind = "local"
    dashboard_link = None

    def describe(self) -> dict[str, str]:
        return {
            "engine_kind": "local",
            "engine_workers": "1",
            "engine_threads_per_worker": "this process's",
            "engine_memory_per_worker": "this process's",
        }

    def map_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> pd.DataFrame:
        # The whole frame is one partition: no copy and no concatenation, the memory and the
        # result of the code before engines (fn bounds its own working memory).
        return fn(frame)

    def iter_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> Iterator[pd.DataFrame]:
        yield fn(frame)

    def map_tasks(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        return in_this_process(fn, items)
