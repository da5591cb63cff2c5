"""Unattended retraining for a fleet of tenants: each on the cadence in its config, one run at a
time per tenant, bounded retries, a catch-up after downtime, daily monitoring, a clean stop on
SIGTERM.

Every retrain or check is `python -m pdmflow.cli main|monitor` in a child process, so a crash, a
leak or a hung library in one run cannot take the scheduler (or another tenant) down. Each
tenant's work runs on its own thread: a slow, failing or backing-off tenant never delays
another. The per-tenant lock is an OS file lock (`flock`): the kernel drops it when its holder
dies, so a crashed run never leaves it stuck. A JSON state file records every attempt and the
next runs; `pdmflow status` prints it and the next start reads it to catch up.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

import schedule

from pdmflow.config import DEFAULT_CONFIG_PATH, ScheduleConfig, load_config
from pdmflow.errors import ConfigError, GateFailure, PdmflowError
from pdmflow.models.threads import THREADS_ENV, share_of_cores

log = logging.getLogger("pdmflow.scheduler")

# Exit status when another process holds the tenant's lock (EX_TEMPFAIL: try again later).
LOCKED_EXIT = 75
# `pdmflow monitor`: drift or an accuracy drop; its last stdout line is "retrain advised: ...".
RETRAIN_ADVISED_EXIT = 5
# Verdicts are final: retrying the same data or config changes nothing. Anything else (1, 4 =
# tracking server unreachable (TrackingUnreachable), 6 = artifact store full or read-only, a
# crash) is retried with backoff.
RETRAIN_VERDICTS = frozenset({0, PdmflowError.exit_code, GateFailure.exit_code})
MONITOR_VERDICTS = frozenset({0, PdmflowError.exit_code, RETRAIN_ADVISED_EXIT})

DEFAULT_STATE_DIR = ".pdmflow"
STATE_FILE_ENV = "PDMFLOW_SCHEDULER_STATE"
RUN_NOW_REASON = "manual: scheduler.py --run-now"
# A serving scheduler rewrites the state file at least this often; older means it is down.
HEARTBEAT_SECONDS = 30.0
STOP_GRACE_SECONDS = 45.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def state_file_path(state_dir: str | None = None) -> Path:
    """The scheduler's state file: `<state_dir>/scheduler/state.json`; without a state dir,
    $PDMFLOW_SCHEDULER_STATE if set, else `.pdmflow/scheduler/state.json`."""
    if state_dir is not None:
        return Path(state_dir) / "scheduler" / "state.json"
    override = os.environ.get(STATE_FILE_ENV)
    return Path(override) if override else Path(DEFAULT_STATE_DIR) / "scheduler" / "state.json"


# --- tenants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    config_path: str
    schedule: ScheduleConfig


def load_tenants(
    config_paths: Sequence[str] = (),
    config_dir: str | None = None,
    only: Sequence[str] = (),
) -> list[Tenant]:
    """Every tenant in the given configs and in `config_dir/*.yaml` (default: the default
    config), restricted to the ids in `only`. Raises ConfigError naming the file or the id."""
    paths = [str(path) for path in config_paths]
    if config_dir is not None:
        folder = Path(config_dir)
        if not folder.is_dir():
            raise ConfigError(f"--configs {folder}: not a directory")
        found = sorted(str(path) for path in folder.glob("*.yaml"))
        if not found:
            raise ConfigError(f"--configs {folder}: no *.yaml tenant configs in it")
        paths += found
    if not paths:
        paths = [DEFAULT_CONFIG_PATH]
    unique = list(dict.fromkeys(paths, None))  # the same file named twice is one tenant
    tenants = []
    for path in unique:
        config = load_config(path)
        tenants.append(Tenant(config.tenant_id, path, config.schedule))
    known = [tenant.tenant_id for tenant in tenants]
    for tenant_id in only:
        if tenant_id not in known:
            raise ConfigError(
                f"unknown tenant '{tenant_id}' (the configs hold: {', '.join(sorted(known))})"
            )
    selected = [tenant for tenant in tenants if not only or tenant.tenant_id in only]
    first_file: dict[str, str] = {}
    for tenant in selected:
        if tenant.tenant_id in first_file:
            raise ConfigError(
                f"tenant '{tenant.tenant_id}' is in both {first_file[tenant.tenant_id]} and "
                f"{tenant.config_path}: the lock and the state are per tenant, one config per "
                "tenant (name the configs with --config)"
            )
        first_file[tenant.tenant_id] = tenant.config_path
    return selected


# --- when: cadence, slots, catch-up (pure) ------------------------------------------------

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def describe_schedule(plan: ScheduleConfig) -> str:
    """'daily 02:00 UTC' or 'weekly monday 02:00 Europe/Berlin'."""
    day = f" {plan.day}" if plan.cadence == "weekly" else ""
    return f"{plan.cadence}{day} {plan.at} {plan.timezone}"


def _slot(plan: ScheduleConfig, day: date) -> datetime:
    hour, minute = (int(part) for part in plan.at.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(plan.timezone))


def last_due_slot(plan: ScheduleConfig, now: datetime) -> datetime:
    """The most recent scheduled retrain at or before `now` (aware, in the tenant's zone)."""
    today = now.astimezone(ZoneInfo(plan.timezone)).date()
    step = 1
    if plan.cadence == "weekly":
        step = 7
        today -= timedelta(days=(today.weekday() - WEEKDAYS.index(plan.day)) % 7)
    slot = _slot(plan, today)
    return slot if slot <= now else _slot(plan, today - timedelta(days=step))


@dataclass(frozen=True)
class CatchUp:
    """What a start does about retrains missed since the last attempt."""

    run_slot: datetime | None  # the one missed slot to run now, if any
    missed: int  # scheduled slots after the last attempt
    skipped_slot: datetime | None  # the newest missed slot when it is too old to run


def catch_up_decision(
    plan: ScheduleConfig, last_attempt: datetime | None, now: datetime
) -> CatchUp:
    """Run the newest missed slot once if it was due within catch_up_hours; never more."""
    if last_attempt is None:
        return CatchUp(None, 0, None)
    step = timedelta(days=7 if plan.cadence == "weekly" else 1)
    newest = slot = last_due_slot(plan, now)
    missed = 0
    while slot > last_attempt and missed < 10_000:
        missed += 1
        slot = _slot(plan, slot.date() - step)
    if missed == 0:
        return CatchUp(None, 0, None)
    if now - newest <= timedelta(hours=plan.catch_up_hours):
        return CatchUp(newest, missed, None)
    return CatchUp(None, missed, newest)


def _local(moment: datetime, zone: str) -> str:
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _parse(moment: str | None) -> datetime | None:
    return None if not moment else datetime.fromisoformat(moment)


# --- the state file -------------------------------------------------------------------------


class SchedulerState:
    """The JSON state file: the writer's pid and `updated_at`, and one entry per tenant (see
    README). Writes merge into what is on disk under a lock and land atomically (os.replace),
    so a reader never sees half a file and two schedulers serving other tenants coexist."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utc_now, mode: str = "serve"):
        self.path = path
        self.clock = clock
        self.mode = mode
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        return read_scheduler_state(self.path) or {}

    def update(self, tenants: dict[str, dict[str, Any]] | None = None) -> None:
        """Merge these fields into each named tenant's entry and refresh the heartbeat."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                state = read_scheduler_state(self.path) or {}
            except ValueError as unreadable:
                log.warning("%s; starting a new one", unreadable)
                state = {}
            now = _iso(self.clock())
            state.update(pid=os.getpid(), mode=self.mode, updated_at=now)
            entries = state.setdefault("tenants", {})
            for tenant_id, fields in (tenants or {}).items():
                entries.setdefault(tenant_id, {}).update(fields, pid=os.getpid(), updated_at=now)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            os.replace(partial, self.path)


def read_scheduler_state(path: Path | None = None) -> dict[str, Any] | None:
    """The scheduler state file (default: `state_file_path()`), or None when there is none.
    Raises ValueError naming the file when it is not JSON."""
    path = path or state_file_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"scheduler state {path} is not JSON ({error})") from None
    if not isinstance(state, dict):
        raise ValueError(f"scheduler state {path}: expected a JSON object")
    return state


def scheduler_status_lines(
    tenant_id: str, path: Path | None = None, now: datetime | None = None
) -> list[str]:
    """What the scheduler last did for this tenant and will do next; [] without a state file."""
    path = path or state_file_path()
    try:
        state = read_scheduler_state(path)
    except ValueError as unreadable:
        return [f"scheduler: {unreadable}"]
    if state is None:
        return []
    try:
        return _status_lines(state, tenant_id, path, now or utc_now())
    except (ValueError, TypeError, AttributeError) as unexpected:
        return [f"scheduler state {path}: unexpected content ({unexpected})"]


def _status_lines(state: dict[str, Any], tenant_id: str, path: Path, now: datetime) -> list[str]:
    entry = state.get("tenants", {}).get(tenant_id)
    if entry is None:
        return [f"scheduler: tenant '{tenant_id}' is not in {path}"]
    zone = entry.get("timezone", "UTC")
    header = f"scheduler ({entry.get('schedule', '?')}; state {path}, pid {entry.get('pid')}"
    updated = _parse(state.get("updated_at"))
    if state.get("mode") == "stopped" and updated is not None:
        header += f", stopped {_local(updated, zone)}"
    if state.get("mode") == "serve" and updated is not None:
        age = now - updated
        header += f", heartbeat {_local(updated, zone)}"
        if age > timedelta(seconds=4 * HEARTBEAT_SECONDS):
            header += f": {age.total_seconds() / 60:.0f} min old, is the scheduler running?"
    lines = [header + "):"]
    for kind in ("retrain", "monitor"):
        attempt = entry.get(f"last_{kind}")
        if not attempt:
            lines.append(f"  last {kind}: none yet")
            continue
        started = _parse(attempt.get("started_at"))
        ended = _parse(attempt.get("ended_at"))
        when = _local(started, zone) if started else "?"
        if ended:
            when += f" to {ended.astimezone(ZoneInfo(zone)):%H:%M}"
        reason = f" (reason: {attempt['reason']})" if attempt.get("reason") else ""
        lines.append(f"  last {kind}: {attempt.get('outcome')}, {when}{reason}")
    next_runs = [
        f"next {kind} {_local(moment, zone)}"
        for kind in ("retrain", "monitor")
        if (moment := _parse(entry.get(f"next_{kind}")))
    ]
    lines.append("  " + ("; ".join(next_runs) if next_runs else "next run: none scheduled"))
    return lines


# --- one tenant -----------------------------------------------------------------------------


class LockHeld(Exception):
    """Another process is retraining this tenant right now."""


@contextmanager
def retrain_lock(path: str | Path) -> Iterator[None]:
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


@dataclass(frozen=True)
class FleetSettings:
    retries: int = 2
    backoff_seconds: float = 60.0
    n_trials: int | None = None
    # Locks in <state_dir>/locks/<tenant_id>.lock, state in <state_dir>/scheduler/state.json.
    state_dir: str | None = None
    # How to run the pdmflow command line; a wrapper (nice, a container) may stand in front.
    pdmflow_command: tuple[str, ...] = field(
        default_factory=lambda: (sys.executable, "-m", "pdmflow.cli")
    )

    def lock_path(self, tenant_id: str) -> Path:
        return Path(self.state_dir or DEFAULT_STATE_DIR) / "locks" / f"{tenant_id}.lock"


def retrain_outcome(status: int) -> str:
    if status == 0:
        return "released"
    if status == GateFailure.exit_code:
        return "rejected by gates"
    if status == LOCKED_EXIT:
        return "skipped: locked"
    return f"failed exit {status}"


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
            log.warning("%s: still running, skipping this %s trigger", self.tenant.tenant_id, kind)
            return False
        work = self.monitor if kind == "monitor" else lambda: self.retrain(reason or "")
        self.thread = threading.Thread(
            target=self._run_and_release, args=(work,), name=f"tenant-{self.tenant.tenant_id}"
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
        attempt = {"started_at": _iso(self.clock()), "reason": reason, "outcome": "running"}
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
                    [*command, "--resume", "auto", "--resume-since", attempt["started_at"]],
                )
        except LockHeld as held:
            log.warning("%s: skipping this retrain: %s", tenant_id, held)
            status, attempts = LOCKED_EXIT, 0
        outcome = retrain_outcome(status)
        if status not in RETRAIN_VERDICTS | {LOCKED_EXIT} and self.stopping.is_set():
            outcome = f"stopped (exit {status})"
        log.info("%s: retrain finished: %s", tenant_id, outcome)
        attempt.update(
            ended_at=_iso(self.clock()), outcome=outcome, exit_status=status, attempts=attempts
        )
        self._record(running=None, last_retrain=attempt)
        return status

    def monitor(self) -> int:
        """`pdmflow monitor`; on exit 5 retrain at once with the monitor's reason."""
        tenant_id = self.tenant.tenant_id
        check = {"started_at": _iso(self.clock()), "outcome": "running"}
        self._record(running="monitor", last_monitor=check)
        command = [*self.settings.pdmflow_command, "monitor", "--config", self.tenant.config_path]
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
            ended_at=_iso(self.clock()),
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
                "%s: %s attempt %d failed with exit status %d", tenant_id, step, attempts, status
            )
            if attempt < self.settings.retries:
                delay = self.settings.backoff_seconds * 2**attempt
                log.info("%s: retrying in %g s", tenant_id, delay)
                if self.stopping.wait(delay):
                    break
        return status, attempts, stdout

    def _run_child(self, command: list[str], capture: bool) -> tuple[int, str]:
        # The child imports pdmflow from wherever this process did (installed or a checkout).
        package_root = str(Path(__file__).resolve().parents[1])
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


# --- the fleet ------------------------------------------------------------------------------


def worst_status(statuses: Sequence[int]) -> int:
    """The exit status of several retrains: any failure beats bad input, which beats a skipped
    (locked) run, a gate rejection, then success."""
    order = {0: 0, GateFailure.exit_code: 1, LOCKED_EXIT: 2, PdmflowError.exit_code: 3}
    worst = max(statuses, key=lambda status: order.get(status, 4), default=0)
    return 128 - worst if worst < 0 else worst  # killed by signal N: 128 + N, as a shell says


class Fleet:
    """Every selected tenant's jobs on one `schedule.Scheduler`; the work on their threads."""

    def __init__(
        self,
        tenants: Sequence[Tenant],
        settings: FleetSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
        mode: str = "serve",
    ) -> None:
        self.settings = settings or FleetSettings()
        self.clock = clock
        self.stopping = threading.Event()
        self.state = SchedulerState(state_file_path(self.settings.state_dir), clock, mode)
        threads = share_of_cores(len(tenants))
        self.runners = {
            tenant.tenant_id: TenantRunner(
                tenant, self.settings, self.state, self.stopping, clock, threads
            )
            for tenant in tenants
        }
        self.jobs: dict[str, dict[str, schedule.Job]] = {}

    def schedule_jobs(self, scheduler: schedule.Scheduler) -> None:
        """Per tenant: the retrain at its cadence and the daily monitor (unless monitor_at is
        null). A job only hands work to the tenant's thread, so the loop is never held up."""
        for tenant_id, runner in self.runners.items():
            plan = runner.tenant.schedule
            every = scheduler.every()
            unit = every.day if plan.cadence == "daily" else getattr(every, plan.day)
            reason = f"schedule: {describe_schedule(plan)}"
            jobs = {
                "retrain": unit.at(plan.at, plan.timezone)
                .do(runner.trigger, "retrain", reason)
                .tag(tenant_id, "retrain")
            }
            if plan.monitor_at is not None:
                jobs["monitor"] = (
                    scheduler.every()
                    .day.at(plan.monitor_at, plan.timezone)
                    .do(runner.trigger, "monitor")
                    .tag(tenant_id, "monitor")
                )
            self.jobs[tenant_id] = jobs

    def next_runs(self) -> dict[str, dict[str, datetime]]:
        """Per tenant, the next retrain and monitor as aware UTC datetimes."""
        # schedule keeps next_run as a naive local time.
        return {
            tenant_id: {kind: job.next_run.astimezone(UTC) for kind, job in jobs.items()}
            for tenant_id, jobs in self.jobs.items()
        }

    def _write_next_runs(self) -> None:
        runs = self.next_runs()
        self.state.update(
            {
                tenant_id: {
                    "next_retrain": _iso(runs.get(tenant_id, {}).get("retrain")),
                    "next_monitor": _iso(runs.get(tenant_id, {}).get("monitor")),
                }
                for tenant_id in self.runners
            }
        )

    def _previous_entries(self) -> dict[str, dict[str, Any]]:
        try:
            return self.state.read().get("tenants", {})
        except ValueError as unreadable:
            log.warning("%s: no catch-up this time", unreadable)
            return {}

    def _register(self, previous: dict[str, dict[str, Any]], after_crash: bool) -> None:
        """Each tenant's config and schedule in the state file; `since` (first served) is what
        catch-up compares with until a retrain is on record."""
        now = _iso(self.clock())
        entries: dict[str, dict[str, Any]] = {}
        for tenant_id, runner in self.runners.items():
            before = previous.get(tenant_id, {})
            entry: dict[str, Any] = {
                "config": runner.tenant.config_path,
                "schedule": describe_schedule(runner.tenant.schedule),
                "timezone": runner.tenant.schedule.timezone,
                "since": before.get("since") or now,
            }
            if after_crash:  # a run the previous scheduler never saw end (crashed or killed)
                entry["running"] = None
                for kind in ("retrain", "monitor"):
                    attempt = before.get(f"last_{kind}")
                    if attempt and attempt.get("outcome") == "running":
                        entry[f"last_{kind}"] = {**attempt, "outcome": "interrupted"}
            entries[tenant_id] = entry
        self.state.update(entries)

    def _catch_up_reasons(self, previous: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Per tenant with a retrain to catch up: its reason; the skipped ones are logged."""
        now = self.clock()
        reasons = {}
        for tenant_id, runner in self.runners.items():
            plan = runner.tenant.schedule
            before = previous.get(tenant_id, {})
            last_attempt = _parse((before.get("last_retrain") or {}).get("started_at"))
            decision = catch_up_decision(plan, last_attempt or _parse(before.get("since")), now)
            if decision.run_slot is not None:
                slot = _local(decision.run_slot, plan.timezone)
                older = decision.missed - 1
                log.info(
                    "%s: missed the retrain due %s: catching up once now%s",
                    tenant_id,
                    slot,
                    f" ({older} older missed slot(s) not run)" if older else "",
                )
                reasons[tenant_id] = f"catch-up: missed {slot}"
            elif decision.skipped_slot is not None:
                log.info(
                    "%s: missed %d retrain slot(s), the last due %s, more than "
                    "schedule.catch_up_hours (%g h) ago: skipped, not caught up",
                    tenant_id,
                    decision.missed,
                    _local(decision.skipped_slot, plan.timezone),
                    plan.catch_up_hours,
                )
        return reasons

    def start(self, scheduler: schedule.Scheduler) -> None:
        """Schedule the jobs, record the tenants in the state file, start any catch-ups."""
        self.schedule_jobs(scheduler)
        previous = self._previous_entries()
        catch_ups = self._catch_up_reasons(previous)
        self._register(previous, after_crash=True)
        self._write_next_runs()
        for tenant_id, runs in self.next_runs().items():
            zone = self.runners[tenant_id].tenant.schedule.timezone
            described = ", ".join(f"next {kind} {_local(at, zone)}" for kind, at in runs.items())
            log.info("%s: %s (state: %s)", tenant_id, described, self.state.path)
        for tenant_id, reason in catch_ups.items():
            self.runners[tenant_id].trigger("retrain", reason)

    def tick(self, scheduler: schedule.Scheduler) -> None:
        """Hand every due job to its tenant's thread; record the next runs (the heartbeat)."""
        scheduler.run_pending()
        self._write_next_runs()

    def serve_forever(self, scheduler: schedule.Scheduler | None = None) -> int:
        """Run every tenant's jobs until SIGTERM/SIGINT; then stop running children, exit 0."""
        scheduler = scheduler or schedule.Scheduler()
        with self._stop_on_signals():
            self.start(scheduler)
            try:
                while not self.stopping.is_set():
                    self.tick(scheduler)
                    idle = scheduler.idle_seconds
                    self.stopping.wait(min(HEARTBEAT_SECONDS, max(idle or HEARTBEAT_SECONDS, 0.5)))
            finally:
                self.shutdown()
                # Said in the state file, so `pdmflow status` shows no next runs that won't come.
                self.state.mode = "stopped"
                self.state.update(
                    {
                        tenant: {"next_retrain": None, "next_monitor": None}
                        for tenant in self.runners
                    }
                )
        log.info("scheduler stopped")
        return 0

    def run_now(self) -> int:
        """Retrain every tenant once now, in parallel; the worst exit status."""
        with self._stop_on_signals():
            self._register(self._previous_entries(), after_crash=False)
            for runner in self.runners.values():
                runner.trigger("retrain", RUN_NOW_REASON)
            while not self.stopping.is_set() and not self.wait_idle(timeout=0.5):
                pass
            if self.stopping.is_set():
                self.shutdown()
        return worst_status([runner.last_status or 0 for runner in self.runners.values()])

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait (up to `timeout` s in all) for every tenant's current work to end; False if
        some is still running."""
        deadline = None if timeout is None else monotonic() + timeout
        for runner in self.runners.values():
            if runner.thread is not None:
                runner.thread.join(None if deadline is None else max(deadline - monotonic(), 0))
        return not any(r.thread is not None and r.thread.is_alive() for r in self.runners.values())

    def request_stop(self, *_: object) -> None:
        """Signal handler: only sets the event; the main loop then stops the children."""
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop every running child (SIGTERM, then SIGKILL after a grace period)."""
        self.stopping.set()
        for runner in self.runners.values():
            runner.terminate_child()
        if not self.wait_idle(timeout=STOP_GRACE_SECONDS):
            for runner in self.runners.values():
                runner.terminate_child(kill=True)
            self.wait_idle(timeout=5.0)

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
