"""The Dask engine: whole-device partitions as tasks on a cluster, results in row order."""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from dask.utils import format_bytes
from distributed import Client, Future, wait
from distributed.client import FutureCancelledError
from distributed.comm import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from pdmflow.engine.base import PartitionFunction, device_partitions
from pdmflow.errors import EngineUnreachable

T = TypeVar("T")


class StdoutToStderr(WorkerPlugin):
    """For the workers of a local cluster: their stdout goes to stderr. They inherit the
    step's stdout, which carries its output (a run id), and libraries print there from the
    workers' C code (LightGBM's network set-up)."""

    name = "pdmflow-stdout-to-stderr"

    def setup(self, worker: Any) -> None:
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


class DaskEngine:
    """Tasks on the cluster behind `client` (a LocalCluster started for the run, or a running
    scheduler). Dask runs a task again elsewhere when its worker dies."""

    kind = "dask"

    def __init__(self, client: Client, address: str | None) -> None:
        self.client = client
        self.address = address  # None: the LocalCluster this run started

    def describe(self) -> dict[str, str]:
        workers = self._worker_info().values()
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
        # A task's exception (a DataValidationError, ...) is raised here as itself.
        results = list(self.iter_device_partitions(frame, device_column, fn, partition_rows))
        return pd.concat(results) if len(results) > 1 else results[0]

    def iter_device_partitions(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> Iterator[pd.DataFrame]:
        futures = self._submit(frame, device_column, fn, partition_rows)
        if not futures:
            yield fn(frame)
            return
        # Every task is on the cluster at once; results come back in row order, and each one
        # is let go (on the cluster too) once the caller has it.
        for index in range(len(futures)):
            with self.scheduler_loss():
                result = futures[index].result()
            futures[index] = None
            yield result

    def run_tasks(self, fn: Callable[[], T], count: int) -> list[T]:
        """`count` tasks of `fn` at once on the cluster, task k meant for worker k mod n (so
        two do not share one worker while another idles; Dask reruns one elsewhere when its
        worker dies); their results once all are done. A task's exception is raised here as
        itself, and the tasks not yet started are cancelled (one already running finishes)."""
        workers = self.workers
        with self.scheduler_loss():
            # The function (tune's: the sampled rows) goes to every worker once, not in each
            # task through the scheduler.
            shared = self.client.scatter(fn, broadcast=True, hash=False)
            futures = [
                self.client.submit(
                    _call,
                    shared,
                    pure=False,
                    workers=[workers[k % len(workers)]],
                    allow_other_workers=True,
                )
                for k in range(count)
            ]
            return self._gather(futures)

    def map_tasks(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """One task of `fn` per item, spread by Dask; their results in order once all are done.
        A task's exception is raised here as itself once every task has ended: a task cannot
        be stopped mid-run, and one still writing to storage must not outlive the caller's
        clean-up."""
        if not items:
            return []
        with self.scheduler_loss():
            # As in `_submit`: the function (the failure events, the config) goes to every
            # worker once, not inside each task, and the scheduler never unpickles it.
            shared = self.client.scatter(fn, broadcast=True, hash=False)
            futures = [self.client.submit(_apply, shared, item, pure=False) for item in items]
            try:
                return self.client.gather(futures)
            except Exception:
                with contextlib.suppress(Exception):  # no scheduler left to wait on
                    wait(futures)
                raise

    def _gather(self, futures: list[Future]) -> list[Any]:
        """The futures' results once all are done; on a task's error (raised as itself) the
        rest are cancelled."""
        try:
            return self.client.gather(futures)
        except BaseException:
            with contextlib.suppress(Exception):  # no scheduler left to cancel them on
                self.client.cancel(futures, force=True)
            raise

    @contextmanager
    def study_storage(self, url: str | None) -> Iterator[Any]:
        """The Optuna storage tasks on the workers share for the length of the block: the study
        lives on the scheduler (Optuna's DaskStorage), over `url`'s database or, with None, in
        its memory; dropped from the scheduler on exit (a long-lived one would keep every tune
        run's study)."""
        from optuna_integration.dask import DaskStorage

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*DaskStorage.*experimental.*")
            storage = DaskStorage(url, client=self.client)
        try:
            yield storage
        finally:
            with contextlib.suppress(Exception):  # a scheduler gone has dropped it already
                self.client.run_on_scheduler(_forget_storage, name=storage.name)

    @property
    def workers(self) -> list[str]:
        """The workers' addresses, in order."""
        return sorted(self._worker_info())

    def _worker_info(self) -> dict[str, Any]:
        """{address: facts} of every worker, asked of the scheduler now. Not
        `client.scheduler_info()`: it returns the client's cached identity, which its own
        periodic refresh (every 2 s, without per-worker facts) may replace in between, so it
        can come back with no workers at all."""
        return self.client.sync(self.client.scheduler.identity, n_workers=-1)["workers"]

    def spread(self, partitions: list[pd.DataFrame] | list[pd.Series]) -> Any:
        """The partitions as one Dask DataFrame (or Series) held on the workers: partition k
        on worker k mod n (`workers` order), so every worker holds data when there are
        partitions enough, and collections spread from partitions of the same rows are held
        alike (LightGBM's X, y and weights). An empty list is a ValueError."""
        import dask.dataframe as dd

        if not partitions:
            raise ValueError("spread: no partition to place on the workers")
        workers = self.workers
        futures = [
            self.client.scatter(part, workers=[workers[k % len(workers)]], hash=False)
            for k, part in enumerate(partitions)
        ]
        return dd.from_delayed(futures, meta=partitions[0].iloc[:0], verify_meta=False)

    def spread_loaded(
        self, load: Callable[[Any], tuple[Any, ...]], items: Sequence[Any], metas: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """Item k loaded on worker k mod n by `load`, which returns one frame (or series) per
        entry of `metas` (each an empty one of its columns and types); returned as one Dask
        collection per entry, partition k of each on the same worker (`spread`'s placement,
        without the data passing through this process). Dask loads an item again elsewhere
        when its worker dies."""
        import dask.dataframe as dd

        if not items:
            raise ValueError("spread_loaded: no item to load on the workers")
        workers = self.workers
        shared = self.client.scatter(load, broadcast=True, hash=False)

        def on_worker_of(k: int, fn: Callable[..., Any], *args: Any) -> Future:
            return self.client.submit(
                fn,
                *args,
                pure=False,
                workers=[workers[k % len(workers)]],
                allow_other_workers=True,
            )

        loaded = [on_worker_of(k, _apply, shared, item) for k, item in enumerate(items)]
        return tuple(
            dd.from_delayed(
                [on_worker_of(k, operator.getitem, future, i) for k, future in enumerate(loaded)],
                meta=meta,
                verify_meta=False,
            )
            for i, meta in enumerate(metas)
        )

    def _submit(
        self,
        frame: pd.DataFrame,
        device_column: str,
        fn: PartitionFunction,
        partition_rows: int,
    ) -> list[Future]:
        """One task per partition of whole devices, in row order; [] for an empty frame."""
        ranges = device_partitions(frame, device_column, partition_rows)
        with warnings.catch_warnings(), self.scheduler_loss():
            # Each partition travels inside its task, so Dask can run the task again on another
            # worker when one dies; it warns about such graphs. (Reading the partition on the
            # worker from a partitioned dataset is the next step of issue 26.)
            warnings.filterwarnings("ignore", message=".*[Ll]arge (object|graph).*")
            # The function (a model's files, the failure events) goes to every worker once, not
            # inside each task; every worker holding it, a lost one's tasks still run elsewhere.
            shared = self.client.scatter(fn, broadcast=True, hash=False)
            return [
                self.client.submit(_apply, shared, frame.iloc[begin:end], pure=False)
                for begin, end in ranges
            ]

    @contextmanager
    def scheduler_loss(self) -> Iterator[None]:
        """A scheduler lost mid-run as EngineUnreachable (exit 4) naming it; the tasks' own
        errors pass through as themselves."""
        try:
            yield
        except FutureCancelledError as error:
            if error.reason != "scheduler-connection-lost":
                raise
            raise self._lost() from None
        except (CommClosedError, OSError):
            if self.client.status == "running":
                raise
            raise self._lost() from None

    def _lost(self) -> EngineUnreachable:
        where = self.address or "of the local cluster"
        return EngineUnreachable(
            f"Dask scheduler {where} was lost mid-run: is it running? "
            "(engine.address, or PDMFLOW_DASK_ADDRESS when set)"
        )


def _call(fn: Callable[[], T]) -> T:
    """A task: the scattered function, called."""
    return fn()


def _apply(fn: Callable[[Any], T], item: Any) -> T:
    """A task: the scattered function on its partition (or item)."""
    return fn(item)


def _forget_storage(name: str, dask_scheduler: Any = None) -> None:
    """On the scheduler: drop the DaskStorage `name` registered with Optuna's extension."""
    extension = dask_scheduler.extensions.get("optuna")
    if extension is not None:
        extension.storages.pop(name, None)
