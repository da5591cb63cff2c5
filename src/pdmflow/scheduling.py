"""Unattended daily retraining: one run at a time, bounded retries, clean stop on SIGTERM.

Each retrain is `python -m pdmflow.cli main` in a child process, so a crash, a leak or a hung
library in one run cannot take the scheduler down with it. The lock is an OS file lock
(`flock`): the kernel drops it when its holder dies, so a crashed run never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import schedule

from pdmflow.errors import GateFailure

log = logging.getLogger("pdmflow.scheduler")

# Exit status when another retrain holds the lock (EX_TEMPFAIL: try again later).
LOCKED_EXIT = 75


@dataclass(frozen=True)
class RetrainSettings:
    config: str = "configs/default.yaml"
    at: str = "02:00"
    timezone: str = "UTC"
    retries: int = 2
    backoff_seconds: float = 60.0
    lock_file: str = ".pdmflow/retrain.lock"
    n_trials: int | None = None


class LockHeld(Exception):
    """Another process is retraining right now."""


@contextmanager
def retrain_lock(path: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on `path` for the duration of one retrain."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockHeld(f"another retrain holds {lock_path} (pid {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


class Retrainer:
    """Runs the pipeline on demand or on a daily schedule."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def _pipeline_command(self) -> list[str]:
        command = [sys.executable, "-m", "pdmflow.cli", "main", "--config", self.settings.config]
        if self.settings.n_trials:
            command += ["--n-trials", str(self.settings.n_trials)]
        return command

    def _run_pipeline_once(self) -> int:
        # The child imports pdmflow from wherever this process did (installed or a checkout).
        package_root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._child = subprocess.Popen(
            self._pipeline_command(), env={**os.environ, "PYTHONPATH": python_path}
        )
        try:
            return self._child.wait()
        finally:
            self._child = None

    def retrain(self) -> int:
        """One retrain with retries; the exit status of the last attempt (or LOCKED_EXIT)."""
        try:
            with retrain_lock(self.settings.lock_file):
                return self._retrain_with_retries()
        except LockHeld as held:
            log.warning("skipping this retrain: %s", held)
            return LOCKED_EXIT

    def _retrain_with_retries(self) -> int:
        status = 1
        for attempt in range(self.settings.retries + 1):
            if self.stopping.is_set():
                break
            log.info("retrain attempt %d of %d", attempt + 1, self.settings.retries + 1)
            status = self._run_pipeline_once()
            # A gate rejection is a verdict, not a failure: retrying the same data changes nothing.
            if status in (0, GateFailure.exit_code):
                outcome = "released a new model" if status == 0 else "model rejected by gates"
                log.info("retrain finished: %s", outcome)
                return status
            log.error("retrain attempt %d failed with exit status %d", attempt + 1, status)
            if attempt < self.settings.retries:
                delay = self.settings.backoff_seconds * 2**attempt
                log.info("retrying in %.0f s", delay)
                if self.stopping.wait(delay):
                    break
        return status

    def schedule_daily(self, scheduler: schedule.Scheduler) -> schedule.Job:
        """Register the daily job; a failing job is logged and the loop goes on."""

        def job() -> None:
            try:
                self.retrain()
            except Exception:  # the loop must outlive any single run
                log.exception("retrain crashed")

        return scheduler.every().day.at(self.settings.at, self.settings.timezone).do(job)

    def stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop waiting, ask a running pipeline to stop, then exit."""
        log.info("stop requested")
        self.stopping.set()
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()

    def serve_forever(self, scheduler: schedule.Scheduler | None = None) -> int:
        scheduler = scheduler or schedule.Scheduler()
        job = self.schedule_daily(scheduler)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.info("next retrain at %s (%s)", job.next_run, self.settings.timezone)
        while not self.stopping.is_set():
            scheduler.run_pending()
            self.stopping.wait(min(30.0, max(scheduler.idle_seconds or 30.0, 0.5)))
        log.info("scheduler stopped")
        return 0
