"""When and where it runs: the retraining schedule, the tracking server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pdmflow.config.base import _Strict


class ScheduleConfig(_Strict):
    """When the scheduler (scheduler.py) retrains and monitors this tenant."""

    cadence: Literal["daily", "weekly"] = "daily"
    at: str = Field("02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # weekly: the day of the week.
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = (
        "monday"
    )
    timezone: str = "UTC"
    # `pdmflow monitor` runs daily at this time; a drift or accuracy drop past monitoring.*
    # retrains at once. null: no monitoring.
    monitor_at: str | None = Field("01:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # A scheduled retrain missed while the scheduler was down runs once when it starts, if it
    # was due less than this many hours ago (older ones are skipped, said in the log).
    catch_up_hours: float = Field(168.0, ge=0)

    @model_validator(mode="after")
    def _known_timezone(self) -> ScheduleConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule.timezone '{self.timezone}' is not an IANA time zone "
                "(e.g. UTC, Europe/Berlin)"
            ) from None
        return self


class TrackingConfig(_Strict):
    """The tenant's account on an authenticated tracking server (`mlflow server --app-name
    basic-auth`) and how long to wait for the server. The password is read from the environment
    variable named here, never from this file, and never logged."""

    username: str | None = None
    password_env: str = Field("PDMFLOW_TRACKING_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # How long a step waits for an unreachable tracking server (retrying, one line per retry)
    # before it gives up with exit status 4.
    max_wait_seconds: float = Field(300, ge=0)
