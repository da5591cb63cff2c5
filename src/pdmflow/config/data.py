"""Where the readings come from and what they look like: source, schema, labels."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from pdmflow.config.base import SQL_IDENTIFIER, _Strict


class SyntheticSource(_Strict):
    """Seeded generator of a degrading fleet (see pdmflow.data.synthetic)."""

    n_devices: int = Field(40, ge=1)
    days: float = Field(30.0, gt=0)
    sample_minutes: float = Field(30.0, gt=0)
    mean_days_between_failures: float = Field(9.0, gt=0)
    degradation_hours: float = Field(36.0, gt=0)
    noise: float = Field(1.0, ge=0)
    seed: int = 7
    # The shape of history (at most one of the three; none: a fleet observed side by side over
    # calendar time). run_to_failure: every device starts at once, worn to its own degree, and
    # runs until its single failure; `days` is the mean lifetime (each between 0.5x and 2x),
    # `degradation_hours` the late, faster phase of wear.
    run_to_failure: bool = False
    # process_log: one machine's log, one reading per sample_minutes over `days`, with the
    # milling sensors (air/process temperature, rotational speed, torque, tool wear) and a 0/1
    # column named by labels.target_column; failures come from physics rules.
    process_log: bool = False
    # process_log: share of readings that are failures (AI4I 2020: 3.4 %).
    process_log_failure_rate: float = Field(0.034, gt=0, lt=0.5)
    # component_failures: the calendar fleet, but each failure is of one component, and component
    # i shows only in continuous sensor i (like the Azure PdM telemetry: volt, rotate, pressure,
    # vibration); the other sensors carry no sign of it. Events' failure_type names it.
    component_failures: bool = False


class SourceConfig(_Strict):
    """Where telemetry and failure events come from."""

    kind: Literal["synthetic", "csv", "json", "jsonl", "parquet", "sql", "dataframe"] = "synthetic"
    synthetic: SyntheticSource = SyntheticSource()
    telemetry_path: str | None = None
    events_path: str | None = None
    # SQLAlchemy URL. Put the password in PDMFLOW_DB_PASSWORD rather than in the file;
    # it is never logged (see pdmflow.data.sources.redact_url).
    url: str | None = None
    telemetry_table: str | None = None  # [schema.]table
    events_table: str | None = None
    # SQL filters, sent as bound parameters: rows of this tenant (tenant_column = tenant_id),
    # these devices, readings in [start, end).
    tenant_column: str | None = None
    devices: list[str] = []
    start: datetime | None = None
    end: datetime | None = None
    chunk_rows: int = Field(100_000, ge=1000)

    @model_validator(mode="after")
    def _identifiers_are_plain(self) -> SourceConfig:
        # Names end up in SQL (quoted by SQLAlchemy); anything but a plain identifier is refused
        # here, before a connection is even opened.
        for key in ("telemetry_table", "events_table", "tenant_column"):
            value = getattr(self, key)
            if value is not None and not SQL_IDENTIFIER.fullmatch(value):
                raise ValueError(
                    f"source.{key} {value!r} is not a plain SQL identifier ([schema.]name of "
                    "letters, digits and underscores)"
                )
        return self

    @model_validator(mode="after")
    def _paths_for_kind(self) -> SourceConfig:
        if self.kind in ("csv", "json", "jsonl", "parquet") and not self.telemetry_path:
            raise ValueError(f"source.telemetry_path is required when source.kind is {self.kind}")
        if self.kind == "sql" and not (self.url and self.telemetry_table):
            raise ValueError("source.url and source.telemetry_table are required for kind sql")
        return self


class SchemaConfig(_Strict):
    """How the tenant's columns map onto pdmflow's names."""

    device_column: str = "device_id"
    time_column: str = "timestamp"
    event_time_column: str = "event_time"
    continuous_sensors: list[str] = Field(min_length=1)
    boolean_sensors: list[str] = []
    # source column name -> pdmflow column name, applied right after reading.
    rename: dict[str, str] = {}
    # Plausible [low, high] per continuous sensor: readings outside are sensor faults, treated
    # as missing (carried forward); more than data.max_out_of_range_fraction of a device's
    # readings out of range is an error.
    value_ranges: dict[str, tuple[float, float]] = {}

    @model_validator(mode="after")
    def _ranges_name_sensors(self) -> SchemaConfig:
        for sensor, (low, high) in self.value_ranges.items():
            if sensor not in self.continuous_sensors:
                raise ValueError(f"schema.value_ranges names '{sensor}', not a continuous sensor")
            if not low < high:
                raise ValueError(f"schema.value_ranges.{sensor}: expected [low, high], low < high")
        return self


class LabelConfig(_Strict):
    horizon_hours: float = Field(24.0, gt=0)
    # A 0/1 column already in the telemetry (e.g. failure_indicator): when set, it is the label
    # and failure events are optional.
    target_column: str | None = None
    # Remaining useful life (task: regression): hours to the next failure, capped here.
    rul_cap_hours: float = Field(168.0, gt=0)
    # Health status from RUL: critical below the first, warning below the second, else normal.
    critical_hours: float = Field(10.0, gt=0)
    warning_hours: float = Field(50.0, gt=0)
    # A RUL prediction within this many hours of the truth is neither early nor late.
    rul_tolerance_hours: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> LabelConfig:
        if not self.critical_hours < self.warning_hours <= self.rul_cap_hours:
            raise ValueError("labels: expected critical_hours < warning_hours <= rul_cap_hours")
        return self


class DataConfig(_Strict):
    min_rows: int = Field(1000, ge=1)
    max_out_of_range_fraction: float = Field(0.05, ge=0, le=1)
