"""open_engine: the engine a step runs on, from the config's engine block."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pdmflow.config import TenantConfig, dask_address
from pdmflow.engine.base import Engine, LocalEngine
from pdmflow.errors import EngineUnreachable

if TYPE_CHECKING:
    from distributed import Client

# How long to wait for a running scheduler to answer, and for it to have a worker.
CONNECT_TIMEOUT_SECONDS = 10


@contextmanager
def open_engine(config: TenantConfig) -> Iterator[Engine]:
    """The engine of `config.engine` for the length of the block.

    local: this process. dask with no address: a LocalCluster of engine.n_workers processes
    (threads_per_worker, memory_limit each), closed on exit. dask with an address (or
    $PDMFLOW_DASK_ADDRESS): a client of that scheduler, closed on exit; EngineUnreachable (exit
    4) when it does not answer or has no worker within CONNECT_TIMEOUT_SECONDS.
    """
    engine = config.engine
    if engine.kind == "local":
        yield LocalEngine()
        return
    # Imported here: the local engine (every command by default) never pays for Dask's import.
    from distributed import Client, LocalCluster

    from pdmflow.engine.dask_engine import DaskEngine, StdoutToStderr

    address = dask_address(engine)
    if address is None:
        with (
            _environment_restored(),
            LocalCluster(
                n_workers=engine.n_workers,
                threads_per_worker=engine.threads_per_worker,
                memory_limit=engine.memory_limit_bytes,
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(StdoutToStderr())
            yield DaskEngine(client, None)
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError:  # TimeoutError too: refused connections are retried until the timeout
        raise EngineUnreachable(
            f"Dask scheduler {address} did not answer within {CONNECT_TIMEOUT_SECONDS} s: is it "
            "running? (engine.address, or PDMFLOW_DASK_ADDRESS when set)"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            raise EngineUnreachable(
                f"Dask scheduler {address} has no worker after {CONNECT_TIMEOUT_SECONDS} s: "
                "start `dask worker` processes against it"
            ) from None
        yield DaskEngine(client, address)
    finally:
        _close(client)


@contextmanager
def _environment_restored() -> Iterator[None]:
    """Dask's keys of os.environ as they were once the block ends. A LocalCluster's nannies
    live in this process and set Dask's `distributed.nanny.pre-spawn-environ`
    (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_=65536, PYTHONHASHSEED, ...) in *its* environment
    before each worker starts; left there, every later subprocess of the step (and of a test
    run) would inherit them. Only those keys are put back (one by one: other threads never see
    an empty environment, and what the step sets meanwhile stays)."""
    import dask

    keys = {
        *dask.config.get("distributed.nanny.pre-spawn-environ", {}),
        *dask.config.get("distributed.nanny.environ", {}),
        "PYTHONHASHSEED",  # the nanny adds it to the pre-spawn ones
        "__DASK_PARENT_PID",  # the nanny, for its workers' process titles
        "DASK_SCHEDULER_ADDRESS",  # the scheduler, once it listens
    }
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            elif os.environ.get(key) != value:
                os.environ[key] = value


def _close(client: Client) -> None:
    """Close the client; one whose scheduler is gone is still reconnecting, and Dask logs the
    cancelled attempt as an error with a traceback: the step's one line has said it all."""
    if client.status == "running":
        client.close()
        return
    log = logging.getLogger("distributed.client")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        client.close()
    finally:
        log.setLevel(level)
