"""When a tenant retrains: its cadence, the slots it was due, and what a start does about
the ones it missed (pure functions of the schedule and the clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

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
    """'daily 02:00 UTC', 'weekly monday 02:00 Europe/Berlin' or 'cron 0 3 * * sun UTC'."""
    if plan.cron is not None:
        return f"cron {plan.cron} {plan.timezone}"
    day = f" {plan.day}" if plan.cadence == "weekly" else ""
    return f"{plan.cadence}{day} {plan.at} {plan.timezone}"


def _slot(plan: ScheduleConfig, day: date) -> datetime:
    hour, minute = (int(part) for part in plan.at.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(plan.timezone))


def next_cron_slot(plan: ScheduleConfig, after: datetime) -> datetime:
    """schedule.cron's first slot strictly after `after` (aware, in the tenant's zone)."""
    return croniter(plan.cron, after.astimezone(ZoneInfo(plan.timezone))).get_next(datetime)


def _previous_slot(plan: ScheduleConfig, slot: datetime) -> datetime:
    """The scheduled retrain before `slot`."""
    if plan.cron is not None:
        return croniter(plan.cron, slot).get_prev(datetime)
    return _slot(plan, slot.date() - timedelta(days=7 if plan.cadence == "weekly" else 1))


def last_due_slot(plan: ScheduleConfig, now: datetime) -> datetime:
    """The most recent scheduled retrain at or before `now` (aware, in the tenant's zone)."""
    if plan.cron is not None:
        # croniter's get_prev is strictly before its start: a slot exactly at `now` counts.
        start = now.astimezone(ZoneInfo(plan.timezone)) + timedelta(seconds=1)
        return croniter(plan.cron, start).get_prev(datetime)
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
    newest = slot = last_due_slot(plan, now)
    missed = 0
    while slot > last_attempt and missed < 10_000:
        missed += 1
        slot = _previous_slot(plan, slot)
    if missed == 0:
        return CatchUp(None, 0, None)
    if now - newest <= timedelta(hours=plan.catch_up_hours):
        return CatchUp(newest, missed, None)
    return CatchUp(None, missed, newest)
