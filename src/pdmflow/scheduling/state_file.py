"""The scheduler's JSON state file: what it did for each tenant and will do next (`pdmflow
status` prints it; the next start reads it to catch up)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pdmflow.scheduling.tenants import DEFAULT_STATE_DIR

log = logging.getLogger("pdmflow.scheduler")

STATE_FILE_ENV = "PDMFLOW_SCHEDULER_STATE"
# A serving scheduler rewrites the state file at least this often; older means it is down.
HEARTBEAT_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def local_time(moment: datetime, zone: str) -> str:
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"


def iso_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def parse_time(moment: str | None) -> datetime | None:
    return None if not moment else datetime.fromisoformat(moment)


def state_file_path(state_dir: str | None = None) -> Path:
    """The scheduler's state file: `<state_dir>/scheduler/state.json`; without a state dir,
    $PDMFLOW_SCHEDULER_STATE if set, else `.pdmflow/scheduler/state.json`."""
    if state_dir is not None:
        return Path(state_dir) / "scheduler" / "state.json"
    override = os.environ.get(STATE_FILE_ENV)
    return Path(override) if override else Path(DEFAULT_STATE_DIR) / "scheduler" / "state.json"


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
        with (
            self._lock,
            open(self.path.with_name(self.path.name + ".lock"), "a") as guard,
        ):
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                state = read_scheduler_state(self.path) or {}
            except ValueError as unreadable:
                log.warning("%s; starting a new one", unreadable)
                state = {}
            now = iso_time(self.clock())
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
    updated = parse_time(state.get("updated_at"))
    if state.get("mode") == "stopped" and updated is not None:
        header += f", stopped {local_time(updated, zone)}"
    if state.get("mode") == "serve" and updated is not None:
        age = now - updated
        header += f", heartbeat {local_time(updated, zone)}"
        if age > timedelta(seconds=4 * HEARTBEAT_SECONDS):
            header += f": {age.total_seconds() / 60:.0f} min old, is the scheduler running?"
    lines = [header + "):"]
    for kind in ("retrain", "monitor"):
        attempt = entry.get(f"last_{kind}")
        if not attempt:
            lines.append(f"  last {kind}: none yet")
            continue
        started = parse_time(attempt.get("started_at"))
        ended = parse_time(attempt.get("ended_at"))
        when = local_time(started, zone) if started else "?"
        if ended:
            when += f" to {ended.astimezone(ZoneInfo(zone)):%H:%M}"
        reason = f" (reason: {attempt['reason']})" if attempt.get("reason") else ""
        lines.append(f"  last {kind}: {attempt.get('outcome')}, {when}{reason}")
    next_runs = [
        f"next {kind} {local_time(moment, zone)}"
        for kind in ("retrain", "monitor")
        if (moment := parse_time(entry.get(f"next_{kind}")))
    ]
    lines.append("  " + ("; ".join(next_runs) if next_runs else "next run: none scheduled"))
    return lines
