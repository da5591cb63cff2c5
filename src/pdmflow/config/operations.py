"""When and where it runs: the retraining schedule, the tracking server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pdmflow.config.base import _Strict


class ScheduleConfig(_Strict):
    """When the scheduler (scheduler.py) retrains and monitors this tenant."""

    cadence: Literal["daily", "weekly"] = Field(
        "daily", description="How often the tenant retrains: daily or weekly."
    )
    at: str = Field(
        "02:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Retrain time, HH:MM in `timezone`.",
    )
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = (
        Field("monday", description="weekly: the day of the week.")
    )
    cron: str | None = Field(
        None,
        description=(
            "A 5-field cron expression (minute hour day-of-month month day-of-week) in "
            "`timezone`, e.g. `0 3 * * sun` for Sundays at 03:00. When set it replaces "
            "`cadence`, `at` and `day`; scheduler.py and the Airflow DAG both fire on it."
        ),
    )
    timezone: str = Field(
        "UTC",
        description="IANA time zone of `at`, `cron` and `monitor_at` (e.g. UTC, Europe/Berlin).",
    )
    monitor_at: str | None = Field(
        "01:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description=(
            "`pdmflow monitor` runs daily at this time; a drift or accuracy drop past "
            "monitoring.* retrains at once. null: no monitoring."
        ),
    )
    catch_up_hours: float = Field(
        168.0,
        ge=0,
        description=(
            "A scheduled retrain missed while the scheduler was down runs once when it "
            "starts, if it was due less than this many hours ago (older ones are skipped, "
            "said in the log)."
        ),
    )

    @field_validator("cron")
    @classmethod
    def _five_field_cron(cls, expression: str | None) -> str | None:
        if expression is None:
            return None
        from croniter import croniter

        expression = " ".join(expression.split())
        if len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise ValueError(
                f"schedule.cron '{expression}' is not a 5-field cron expression "
                "(minute hour day-of-month month day-of-week, e.g. '0 3 * * sun')"
            )
        return expression

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

    username: str | None = Field(
        None,
        description=(
            "The tenant's account on an authenticated tracking server (used only against "
            "an http(s):// tracking URI)."
        ),
    )
    password_env: str = Field(
        "PDMFLOW_TRACKING_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Environment variable holding the account's password (never this file, never logged)."
        ),
    )
    max_wait_seconds: float = Field(
        300,
        ge=0,
        description=(
            "How long a step waits for an unreachable tracking server (retrying, one line "
            "per retry) before it gives up with exit status 4."
        ),
    )


class RegistryConfig(_Strict):
    """How releases are recorded in the MLflow model registry."""

    mode: Literal["stages", "aliases"] = Field(
        "stages",
        description=(
            "stages: a release moves the version to the Production stage (archiving the one "
            "before) and sets @champion; serving loads models:/<name>/Production. aliases: no "
            "stage is ever set (MLflow has deprecated stages; Unity Catalog and other alias-only "
            "registries have none): a release moves @production and @champion, the old one is "
            "tagged pdmflow.archived_at; serving loads models:/<name>@production. Move an "
            "existing model with `pdmflow registry migrate --to aliases`."
        ),
    )
