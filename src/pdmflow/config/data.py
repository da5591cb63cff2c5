"""Where the readings come from and what they look like: source, schema, labels."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pdmflow.config.base import SQL_IDENTIFIER, _Strict, refuse_url_credentials


class SyntheticSource(_Strict):
    """Seeded generator of a degrading fleet (see pdmflow.data.synthetic)."""

    n_devices: int = Field(40, ge=1, description="Number of devices in the generated fleet.")
    days: float = Field(
        30.0, gt=0, description="Days of history per device (run_to_failure: the mean lifetime)."
    )
    sample_minutes: float = Field(
        30.0, gt=0, description="Minutes between two readings of a device."
    )
    mean_days_between_failures: float = Field(
        9.0, gt=0, description="Mean days between two failures of one device (calendar fleet)."
    )
    degradation_hours: float = Field(
        36.0,
        gt=0,
        description=(
            "Hours before each failure in which the sensors drift (and vibration "
            "oscillates harder); run_to_failure: the late, faster phase of wear."
        ),
    )
    noise: float = Field(1.0, ge=0, description="Scale of the sensors' random noise.")
    seed: int = Field(7, description="Random seed: the same seed gives the same fleet.")
    run_to_failure: bool = Field(
        False,
        description=(
            "The shape of history (at most one of run_to_failure, process_log, "
            "component_failures; none: a fleet observed side by side over calendar time). "
            "run_to_failure: every device starts at once, worn to its own degree, and "
            "runs until its single failure; `days` is the mean lifetime (each between "
            "0.5x and 2x), `degradation_hours` the late, faster phase of wear."
        ),
    )
    process_log: bool = Field(
        False,
        description=(
            "process_log: one machine's log, one reading per sample_minutes over `days`, "
            "with the milling sensors (air/process temperature, rotational speed, torque, "
            "tool wear) and a 0/1 column named by labels.target_column; failures come "
            "from physics rules."
        ),
    )
    process_log_failure_rate: float = Field(
        0.034,
        gt=0,
        lt=0.5,
        description="process_log: share of readings that are failures (AI4I 2020: 3.4 %).",
    )
    component_failures: bool = Field(
        False,
        description=(
            "component_failures: the calendar fleet, but each failure is of one "
            "component, and component i shows only in continuous sensor i (like the Azure "
            "PdM telemetry: volt, rotate, pressure, vibration); the other sensors carry "
            "no sign of it. Events' failure_type names it."
        ),
    )


class SourceConfig(_Strict):
    """Where telemetry and failure events come from."""

    kind: Literal["synthetic", "csv", "json", "jsonl", "parquet", "sql", "dataframe"] = Field(
        "synthetic",
        description=(
            "Which source ingest reads: a seeded synthetic fleet, files, a SQL database, "
            "or frames handed to the Python API."
        ),
    )
    synthetic: SyntheticSource = Field(
        SyntheticSource(), description="The synthetic fleet's shape and seed (kind synthetic)."
    )
    telemetry_path: str | None = Field(
        None,
        description=(
            "Telemetry (kinds csv, json, jsonl, parquet): a file, a glob (daily/*.csv), a "
            "directory (every file of the kind in it, a Parquet dataset's hive partition "
            "folders as columns), a local path or an fsspec URL (s3://..., with its "
            "filesystem package); timestamps as ISO 8601 text."
        ),
    )
    events_path: str | None = Field(
        None,
        description=(
            "Failure events (device, event_time[, failure_type]), read as telemetry_path is; "
            "optional."
        ),
    )
    url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL (kind sql). Put the password in PDMFLOW_DB_PASSWORD rather "
            "than in the file; it is never logged (see pdmflow.data.sources.redact_url)."
        ),
    )
    telemetry_table: str | None = Field(
        None, description="Telemetry table, [schema.]table (kind sql)."
    )
    events_table: str | None = Field(
        None, description="Failure events table, [schema.]table (kind sql); optional."
    )
    tenant_column: str | None = Field(
        None,
        description=(
            "SQL filter, sent as a bound parameter: only rows whose tenant_column equals tenant_id."
        ),
    )
    devices: list[str] = Field(
        [], description="SQL filter: only these devices (empty: every device)."
    )
    start: datetime | None = Field(
        None, description="SQL filter: readings at or after this ISO date-time (inclusive)."
    )
    end: datetime | None = Field(
        None, description="SQL filter: readings before this ISO date-time (exclusive)."
    )
    chunk_rows: int = Field(
        100_000, ge=1000, description="Rows read at a time through the SQL server-side cursor."
    )

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

    @field_validator("telemetry_path", "events_path")
    @classmethod
    def _no_credentials(cls, path: str | None, info: ValidationInfo) -> str | None:
        return None if path is None else refuse_url_credentials(path, f"source.{info.field_name}")

    @model_validator(mode="after")
    def _paths_for_kind(self) -> SourceConfig:
        if self.kind in ("csv", "json", "jsonl", "parquet") and not self.telemetry_path:
            raise ValueError(f"source.telemetry_path is required when source.kind is {self.kind}")
        if self.kind == "sql" and not (self.url and self.telemetry_table):
            raise ValueError("source.url and source.telemetry_table are required for kind sql")
        return self


class SchemaConfig(_Strict):
    """How the tenant's columns map onto pdmflow's names."""

    device_column: str = Field(
        "device_id", description="Column holding the device id (telemetry and events)."
    )
    time_column: str = Field("timestamp", description="Column holding each reading's timestamp.")
    event_time_column: str = Field(
        "event_time", description="Column holding each failure event's time."
    )
    continuous_sensors: list[str] = Field(
        min_length=1, description="Numeric sensors (temperature, vibration, ...); at least one."
    )
    boolean_sensors: list[str] = Field(
        [], description="On/off sensors (pump on, valve open, alarm active, ...)."
    )
    rename: dict[str, str] = Field(
        {}, description="Source column name -> pdmflow column name, applied right after reading."
    )
    value_ranges: dict[str, tuple[float, float]] = Field(
        {},
        description=(
            "Plausible [low, high] per continuous sensor: readings outside are sensor "
            "faults, treated as missing (carried forward); more than "
            "data.max_out_of_range_fraction of a device's readings out of range is an "
            "error."
        ),
    )

    @model_validator(mode="after")
    def _ranges_name_sensors(self) -> SchemaConfig:
        for sensor, (low, high) in self.value_ranges.items():
            if sensor not in self.continuous_sensors:
                raise ValueError(f"schema.value_ranges names '{sensor}', not a continuous sensor")
            if not low < high:
                raise ValueError(f"schema.value_ranges.{sensor}: expected [low, high], low < high")
        return self


class LabelConfig(_Strict):
    horizon_hours: float = Field(
        24.0,
        gt=0,
        description=(
            "Label failure_within_horizon: 1 when the device fails within this many hours "
            "after a reading."
        ),
    )
    target_column: str | None = Field(
        None,
        description=(
            "A 0/1 column already in the telemetry (e.g. failure_indicator): when set, it "
            "is the label and failure events are optional."
        ),
    )
    rul_cap_hours: float = Field(
        168.0,
        gt=0,
        description=(
            "Remaining useful life (task: regression): hours to the next failure, capped here."
        ),
    )
    critical_hours: float = Field(
        10.0, gt=0, description="Health status from RUL: critical below this many hours."
    )
    warning_hours: float = Field(
        50.0,
        gt=0,
        description=(
            "Health status from RUL: warning below this many hours (and at least "
            "critical_hours), else normal."
        ),
    )
    rul_tolerance_hours: float = Field(
        10.0,
        gt=0,
        description=(
            "A RUL prediction within this many hours of the truth is neither early nor late."
        ),
    )

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> LabelConfig:
        if not self.critical_hours < self.warning_hours <= self.rul_cap_hours:
            raise ValueError("labels: expected critical_hours < warning_hours <= rul_cap_hours")
        return self


class DataConfig(_Strict):
    min_rows: int = Field(
        1000, ge=1, description="Fewer rows than this is an error ('too little data')."
    )
    max_out_of_range_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "More than this share of a device's readings outside schema.value_ranges is "
            "an error naming the device and column."
        ),
    )
