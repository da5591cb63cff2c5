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

from pdmflow.scheduling.catch_up import (
    WEEKDAYS,
    CatchUp,
    catch_up_decision,
    describe_schedule,
    last_due_slot,
)
from pdmflow.scheduling.fleet import STOP_GRACE_SECONDS, Fleet
from pdmflow.scheduling.lock import LockHeld, retrain_lock
from pdmflow.scheduling.outcomes import (
    LOCKED_EXIT,
    MONITOR_VERDICTS,
    RETRAIN_ADVISED_EXIT,
    RETRAIN_VERDICTS,
    retrain_outcome,
    worst_status,
)
from pdmflow.scheduling.state_file import (
    HEARTBEAT_SECONDS,
    STATE_FILE_ENV,
    SchedulerState,
    iso_time,
    local_time,
    parse_time,
    read_scheduler_state,
    scheduler_status_lines,
    state_file_path,
    utc_now,
)
from pdmflow.scheduling.tenant_runner import TenantRunner
from pdmflow.scheduling.tenants import (
    DEFAULT_STATE_DIR,
    RUN_NOW_REASON,
    FleetSettings,
    Tenant,
    load_tenants,
)

__all__ = [
    "CatchUp",
    "DEFAULT_STATE_DIR",
    "Fleet",
    "FleetSettings",
    "HEARTBEAT_SECONDS",
    "LOCKED_EXIT",
    "LockHeld",
    "MONITOR_VERDICTS",
    "RETRAIN_ADVISED_EXIT",
    "RETRAIN_VERDICTS",
    "RUN_NOW_REASON",
    "STATE_FILE_ENV",
    "STOP_GRACE_SECONDS",
    "SchedulerState",
    "Tenant",
    "TenantRunner",
    "WEEKDAYS",
    "catch_up_decision",
    "describe_schedule",
    "iso_time",
    "last_due_slot",
    "load_tenants",
    "local_time",
    "parse_time",
    "read_scheduler_state",
    "retrain_lock",
    "retrain_outcome",
    "scheduler_status_lines",
    "state_file_path",
    "utc_now",
    "worst_status",
]
