"""The Dask engine: whole-device partitions as tasks on a cluster, results in row order."""

from __future__ import annotations

import warnings
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from dask.utils import format_bytes
from distributed import Client

from pdmflow.engine.base import PartitionFunction, device_partitions


class DaskEngine:
    """Tasks on the cluster behind `client` (a LocalCluster started for the run, or a running
    scheduler). Dask runs a task again elsewhere when its worker dies."""

    kind = "dask"

    def __init__(self, client: Client, address: str | None) -> None:
        self.client = client
        self.address = address  # None: the LocalCluster this run started

    def describe(self) -> dict[str, str]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        threads = sorted({str(w["nthreads"]) for w in workers})
        memory = sorted({format_bytes(w["memory_limit"]) for w in workers if w["memory_limit"]})
        return {
            "engine_kind": "dask",
            "engine_scheduler": self.address or "local cluster",
            "engine_workers": str(len(workers)),
            "engine_threads_per_worker": ",".join(threads),
            "engine_memory_per_worker": ",".join(memory) or "no limit",
        }

    @property
    def dashboard_link(self) -> str | None:
        link = self.client.dashboard_link
        if not link:
            return None
        # Never a user name or password a scheduler URL might carry.
        parts = urlsplit(link)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def map_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> pd.DataFrame:
        ranges = device_partitions(frame, device_column, partition_rows)
        if not ranges:
            return fn(frame)
        with warnings.catch_warnings():
            # Each partition travels inside its task, so Dask can run the task again on another
            # worker when one dies; it warns about such graphs. (Reading the partition on the
            # worker from a partitioned dataset is the next step of issue 26.)
            warnings.filterwarnings("ignore", message=".*[Ll]arge (object|graph).*")
            futures = [
                self.client.submit(fn, frame.iloc[begin:end], pure=False) for begin, end in ranges
            ]
            # gather keeps the order of `futures`, i.e. row order; a task's exception (a
            # DataValidationError, ...) is raised here as itself.
            results = self.client.gather(futures)
        return pd.concat(results, copy=False) if len(results) > 1 else results[0]
