"""One tenant's retrains and monitoring checks, each a `pdmflow` child process, on a thread of
its own: one at a time, bounded retries with backoff."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pdmflow.models.threads import THREADS_ENV
from pdmflow.scheduling.lock import LockHeld, retrain_lock
from pdmflow.scheduling.outcomes import (
    LOCKED_EXIT,
    MONITOR_VERDICTS,
    RETRAIN_ADVISED_EXIT,
    RETRAIN_VERDICTS,
    retrain_outcome,
)
from pdmflow.scheduling.state_file import SchedulerState, iso_time, utc_now
from pdmflow.scheduling.tenants import FleetSettings, Tenant

log = logging.getLogger("pdmflow.scheduler")


class TenantRunner:
    """One tenant's retrains and checks, on a thread of its own; one at a time."""

    def __init__(
        self,
        tenant: Tenant,
        settings: FleetSettings,
        state: SchedulerState,
        stopping: threading.Event,
        clock: Callable[[], datetime] = utc_now,
        threads: int | None = None,
    ) -> None:
        self.tenant = tenant
        self.settings = settings
        self.state = state
        self.stopping = stopping
        self.clock = clock
        self.last_status: int | None = None
        self.thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self._child_lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        # Estimator threads of this tenant's child: its share of the cores, since several
        # tenants may retrain at once (PDMFLOW_THREADS in the environment, when set, wins).
        self.threads = threads

    def trigger(self, kind: str, reason: str | None = None) -> bool:
        """Start a retrain ('retrain') or a check ('monitor') on this tenant's thread and return
        at once; False (logged) when this tenant is still busy or the scheduler is stopping."""
        if self.stopping.is_set():
            return False
        if not self._busy.acquire(blocking=False):
            log.warning(
                "%s: still running, skipping this %s trigger",
                self.tenant.tenant_id,
                kind,
            )
            return False
        work = self.monitor if kind == "monitor" else lambda: self.retrain(reason or "")
        self.thread = threading.Thread(
            target=self._run_and_release,
            args=(work,),
            name=f"tenant-{self.tenant.tenant_id}",
        )
        self.thread.daemon = True  # never keeps a dying scheduler alive; shutdown() joins it
        self.thread.start()
        return True

    def _run_and_release(self, work: Callable[[], int]) -> None:
        try:
            self.last_status = work()
        except Exception:  # a bug here must not kill the thread silently or keep the tenant busy
            log.exception("%s: scheduler error", self.tenant.tenant_id)
            self.last_status = 1
        finally:
            self._busy.release()

    def _record(self, **fields: Any) -> None:
        self.state.update({self.tenant.tenant_id: fields})

    def retrain(self, reason: str) -> int:
        """One retrain with retries under the tenant's lock; the last attempt's exit status
        (LOCKED_EXIT when another process holds the lock)."""
        tenant_id = self.tenant.tenant_id
        attempt = {
            "started_at": iso_time(self.clock()),
            "reason": reason,
            "outcome": "running",
        }
        self._record(running="retrain", last_retrain=attempt)
        log.info("%s: retrain (%s)", tenant_id, reason)
        command = [
            *self.settings.pdmflow_command,
            *("main", "--config", self.tenant.config_path, "--reason", reason),
        ]
        if self.settings.n_trials:
            command += ["--n-trials", str(self.settings.n_trials)]
        try:
            with retrain_lock(self.settings.lock_path(tenant_id)):
                # A retry continues the failed attempt's pipeline from its first unfinished
                # step (auto: afresh when that attempt never started one).
                status, attempts, _ = self._with_retries(
                    "retrain",
                    command,
                    RETRAIN_VERDICTS,
                    [
                        *command,
                        "--resume",
                        "auto",
                        "--resume-since",
                        attempt["started_at"],
                    ],
                )
        except LockHeld as held:
            log.warning("%s: skipping this retrain: %s", tenant_id, held)
            status, attempts = LOCKED_EXIT, 0
        outcome = retrain_outcome(status)
        if status not in RETRAIN_VERDICTS | {LOCKED_EXIT} and self.stopping.is_set():
            outcome = f"stopped (exit {status})"
        log.info("%s: retrain finished: %s", tenant_id, outcome)
        attempt.update(
            ended_at=iso_time(self.clock()),
            outcome=outcome,
            exit_status=status,
            attempts=attempts,
        )
        self._record(running=None, last_retrain=attempt)
        return status

    def monitor(self) -> int:
        """`pdmflow monitor`; on exit 5 retrain at once with the monitor's reason."""
        tenant_id = self.tenant.tenant_id
        check = {"started_at": iso_time(self.clock()), "outcome": "running"}
        self._record(running="monitor", last_monitor=check)
        command = [
            *self.settings.pdmflow_command,
            "monitor",
            "--config",
            self.tenant.config_path,
        ]
        status, attempts, stdout = self._with_retries("monitor", command, MONITOR_VERDICTS)
        reason = None
        if status == 0:
            outcome = "monitor ok"
        elif status == RETRAIN_ADVISED_EXIT:
            outcome = "retrain advised"
            lines = [line.strip() for line in stdout.splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            prefix = "retrain advised:"
            reason = last[len(prefix) :].strip() if last.startswith(prefix) else ""
            reason = reason or "monitor: retrain advised (no reason given)"
        else:
            outcome = f"monitor failed exit {status}"
        log.info("%s: %s%s", tenant_id, outcome, f": {reason}" if reason else "")
        check.update(
            ended_at=iso_time(self.clock()),
            outcome=outcome,
            exit_status=status,
            attempts=attempts,
            reason=reason,
        )
        self._record(running=None, last_monitor=check)
        if reason is not None and not self.stopping.is_set():
            return self.retrain(reason)
        return status

    def _with_retries(
        self,
        step: str,
        command: list[str],
        verdicts: frozenset[int],
        retry_command: list[str] | None = None,
    ) -> tuple[int, int, str]:
        """(exit status, attempts made, stdout of the last attempt); failures that are not
        verdicts are retried with a doubling backoff, running `retry_command` when given."""
        tenant_id = self.tenant.tenant_id
        status, stdout, attempts = 1, "", 0
        total = self.settings.retries + 1
        for attempt in range(total):
            if self.stopping.is_set():
                break
            log.info("%s: %s attempt %d of %d", tenant_id, step, attempt + 1, total)
            attempts += 1
            attempt_command = retry_command if attempt and retry_command else command
            status, stdout = self._run_child(attempt_command, capture=step == "monitor")
            if status in verdicts or self.stopping.is_set():
                break
            log.error(
                "%s: %s attempt %d failed with exit status %d",
                tenant_id,
                step,
                attempts,
                status,
            )
            if attempt < self.settings.retries:
                delay = self.settings.backoff_seconds * 2**attempt
                log.info("%s: retrying in %g s", tenant_id, delay)
                if self.stopping.wait(delay):
                    break
        return status, attempts, stdout

    def _run_child(self, command: list[str], capture: bool) -> tuple[int, str]:
        # The child imports pdmflow from wherever this process did (installed or a checkout).
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        with self._child_lock:  # stop() cannot miss a child started right after it looked
            if self.stopping.is_set():
                return 1, ""
            env = {**os.environ, "PYTHONPATH": python_path}
            if self.threads is not None:
                env.setdefault(THREADS_ENV, str(self.threads))
            child = self._child = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE if capture else None,
                text=True,
            )
        try:
            stdout, _ = child.communicate()
        finally:
            with self._child_lock:
                self._child = None
        if stdout:
            sys.stdout.write(stdout)  # the monitor's report stays in the scheduler's output
            sys.stdout.flush()
        return child.returncode, stdout or ""

    def terminate_child(self, kill: bool = False) -> None:
        with self._child_lock:
            if self._child is not None and self._child.poll() is None:
                if kill:
                    self._child.kill()
                else:
                    self._child.terminate()
