"""Real PostgreSQL databases and real `mlflow server` processes for the tests that need them.

The PostgreSQL URL comes from PDMFLOW_TEST_POSTGRES_URL (default: trust auth on 127.0.0.1:5432).
With no server reachable a test skips with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import free_port, wait_for_http
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "PDMFLOW_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def new_database(prefix: str = "pdmflow_test") -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards; skip/fail when none."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as error:
        reason = f"PostgreSQL not reachable at {make_url(POSTGRES_URL)!r}: {error.orig}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class MlflowServer:
    """`mlflow server` on `backend_uri`, serving artifacts from root/artifacts, on one port that
    stays the same across stop() and start() (a fault test takes the server away and back).

    The same command the compose file's `mlflow` service runs; the log is root/server.log.
    `command` replaces `mlflow server` with a launcher that takes the same options (e.g.
    configs/server/serve.py).
    """

    def __init__(
        self,
        backend_uri: str,
        root: Path,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        command: tuple[str, ...] | None = None,
    ) -> None:
        self.backend_uri, self.root, self.extra_args = backend_uri, root, extra_args
        self.env, self.command = env, command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [
                    *(self.command or (str(Path(sys.executable).parent / "mlflow"), "server")),
                    "--backend-store-uri",
                    self.backend_uri,
                    "--artifacts-destination",
                    str(self.root / "artifacts"),
                    "--serve-artifacts",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # stop() ends the server and its workers together
            )
        try:
            wait_for_http(f"{self.url}/health", self.process, timeout=180)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.process = None


@contextmanager
def mlflow_server(
    backend_uri: str,
    root: Path,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    command: tuple[str, ...] | None = None,
) -> Iterator[str]:
    """A started MlflowServer (see there) for the `with` block; yields its URL."""
    server = MlflowServer(backend_uri, root, extra_args, env, command)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class DaskCluster:
    """`dask scheduler` and `workers` × `dask worker` (1 thread each), separate processes like a
    user's cluster; logs in root. Each worker is its own process group (nanny and worker
    process), so a fault test can SIGKILL one for good (`kill_worker`) or stop the scheduler.

    Workers find the tests' own modules (PYTHONPATH), so a test can hand them a partition
    function from tests/dask_tasks.py.
    """

    def __init__(self, root: Path, workers: int = 1) -> None:
        self.root, self.workers = root, workers
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler: subprocess.Popen | None = None
        self.worker_processes: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        tests = str(Path(__file__).parent)
        path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
        with open(self.root / f"{name}.log", "w") as log:
            return subprocess.Popen(
                [str(Path(sys.executable).parent / "dask"), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,  # stop() ends the process and its children
            )

    def start(self) -> str:
        from distributed import Client

        self.root.mkdir(parents=True, exist_ok=True)
        port = self.address.rsplit(":", 1)[1]
        try:
            scheduler = f"scheduler --host 127.0.0.1 --port {port} --dashboard-address :0"
            self.scheduler = self._start("scheduler", *scheduler.split())
            worker = f"worker {self.address} --nthreads 1 --memory-limit 2GiB --no-dashboard"
            for index in range(self.workers):
                self.worker_processes.append(self._start(f"worker-{index}", *worker.split()))
            with Client(self.address, timeout=120) as client:
                client.wait_for_workers(self.workers, timeout=120)
        except BaseException:
            self.stop()
            raise
        return self.address

    def worker_of(self, pid: int) -> subprocess.Popen:
        """The `dask worker` command whose process group holds process `pid`."""
        group = os.getpgid(pid)
        (worker,) = [w for w in self.worker_processes if w.pid == group]
        return worker

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL the worker and its nanny at once: no goodbye to the scheduler, no restart."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)

    def stop_scheduler(self) -> None:
        _stop(self.scheduler)

    def stop(self) -> None:
        for process in [*reversed(self.worker_processes), self.scheduler]:
            _stop(process)


def _stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@contextmanager
def dask_cluster(root: Path, workers: int = 1) -> Iterator[DaskCluster]:
    """A started DaskCluster (see there) for the `with` block."""
    cluster = DaskCluster(root, workers)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
