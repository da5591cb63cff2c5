"""When a tenant retrains: its cadence, the slots it was due, and what a start does about
the ones it missed (pure functions of the schedule and the clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pdmflow.config import ScheduleConfig

WEEKDAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)


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
