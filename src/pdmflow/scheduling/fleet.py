"""The fleet: every tenant's jobs on one `schedule.Scheduler`, a catch-up on start, heartbeats
in the state file and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from time import monotonic
from typing import Any

import schedule

from pdmflow.config import ScheduleConfig
from pdmflow.models.threads import share_of_cores
from pdmflow.scheduling.catch_up import catch_up_decision, describe_schedule, next_cron_slot
from pdmflow.scheduling.outcomes import worst_status
from pdmflow.scheduling.state_file import (
    HEARTBEAT_SECONDS,
    SchedulerState,
    iso_time,
    local_time,
    parse_time,
    state_file_path,
    utc_now,
)
from pdmflow.scheduling.tenant_runner import TenantRunner
from pdmflow.scheduling.tenants import RUN_NOW_REASON, FleetSettings, Tenant

log = logging.getLogger("pdmflow.scheduler")


STOP_GRACE_SECONDS = 45.0


class CronJob(schedule.Job):
    """A `schedule` job that fires on schedule.cron's slots, in the tenant's time zone
    (`schedule` itself knows only every-N-units)."""

    def __init__(self, plan: ScheduleConfig, scheduler: schedule.Scheduler) -> None:
        super().__init__(interval=1, scheduler=scheduler)
        self.plan = plan
        self.unit = "cron"

    def _schedule_next_run(self) -> None:
        # `schedule` keeps next_run as a naive local time and reads its own clock.
        now = schedule.datetime.datetime.now().astimezone()
        self.next_run = next_cron_slot(self.plan, now).astimezone().replace(tzinfo=None)


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
        """Per tenant: the retrain at its cadence (or on schedule.cron) and the daily monitor
        (unless monitor_at is null). A job only hands work to the tenant's thread, so the loop
        is never held up."""
        for tenant_id, runner in self.runners.items():
            plan = runner.tenant.schedule
            if plan.cron is not None:  # it takes precedence over cadence, at and day
                retrain = CronJob(plan, scheduler)
            else:
                every = scheduler.every()
                unit = every.day if plan.cadence == "daily" else getattr(every, plan.day)
                retrain = unit.at(plan.at, plan.timezone)
            reason = f"schedule: {describe_schedule(plan)}"
            jobs = {
                "retrain": retrain.do(runner.trigger, "retrain", reason).tag(tenant_id, "retrain")
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
                    "next_retrain": iso_time(runs.get(tenant_id, {}).get("retrain")),
                    "next_monitor": iso_time(runs.get(tenant_id, {}).get("monitor")),
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
        now = iso_time(self.clock())
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
            last_attempt = parse_time((before.get("last_retrain") or {}).get("started_at"))
            decision = catch_up_decision(plan, last_attempt or parse_time(before.get("since")), now)
            if decision.run_slot is not None:
                slot = local_time(decision.run_slot, plan.timezone)
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
                    local_time(decision.skipped_slot, plan.timezone),
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
            described = ", ".join(
                f"next {kind} {local_time(at, zone)}" for kind, at in runs.items()
            )
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
