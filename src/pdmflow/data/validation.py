"""Validate and normalise telemetry and events once, at the door.

Rules (each one documented in docs/data-scientist/configs.md, "Data rules"):
- required columns: the device column, the time column and every configured sensor;
- timestamps: parsed; timezone-aware ones are converted to UTC, naive ones are taken as UTC;
- rows are sorted by device and time; duplicate (device, timestamp) rows keep the last one;
- missing sensor values are carried forward within a device (then backward for leading gaps);
  a sensor with no value at all for a device is an error naming the device and the sensor;
- fewer rows than `data.min_rows` is an error (the brief's "too little data").
Problems that do not make training meaningless are warnings in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.data.labels import failure_within_horizon
from pdmflow.errors import DataValidationError


def _utc_naive(values: pd.Series, where: str) -> pd.Series:
    if values.dtype == "datetime64[ns]":  # already what the rules make (no missing allowed)
        if values.isna().any():
            raise DataValidationError(f"{where}: {int(values.isna().sum())} missing timestamps")
        return values
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        # Epoch numbers are ambiguous (s? ms? ns?): refuse rather than guess 1970.
        raise DataValidationError(f"{where}: expected date-times (ISO 8601), found numbers")
    try:
        parsed = pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"{where}: cannot parse timestamps ({exc})") from None
    if parsed.isna().any():
        raise DataValidationError(f"{where}: {int(parsed.isna().sum())} missing timestamps")
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _plain_numbers(values: pd.Series) -> bool:
    """A numeric (not boolean) column: converting it to float64 cannot fail."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _time_ordered_per_device(codes: np.ndarray, stamps: np.ndarray) -> bool:
    """Whether each device's readings arrive in non-decreasing time order (rows of a device
    need not be adjacent)."""
    order = np.argsort(codes, kind="stable")
    same_device = codes[order][1:] == codes[order][:-1]
    return bool((np.diff(stamps[order])[same_device] >= 0).all())


def _require_columns(frame: pd.DataFrame, required: list[str], where: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{where}: missing required column '{missing[0]}'"
            f" (expected {', '.join(required)}; found {', '.join(map(str, frame.columns))})"
        )


def normalise_telemetry(
    telemetry: pd.DataFrame,
    device: str,
    time: str,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
    where: str,
    carried: list[str] | None = None,
    value_ranges: dict[str, tuple[float, float]] | None = None,
    max_out_of_range_fraction: float = 1.0,
    fill_gaps: bool = True,
) -> tuple[pd.DataFrame, TelemetryCounts]:
    """Typed, sorted, de-duplicated, gap-filled telemetry (training and serving share this),
    and what was found on the way (`TelemetryCounts`: warnings and report entries).

    `carried` columns (a target, say) are required and kept row for row, but not filled.
    Readings outside `value_ranges` are treated as missing. With `fill_gaps=False` missing
    sensor values stay NaN (serving reads them for sensor health, then `filled_gaps`); a device
    without any value for a sensor is an error either way.
    """
    sensors = [*continuous_sensors, *boolean_sensors]
    carried = carried or []
    if telemetry.empty:
        raise DataValidationError(f"{where}: the dataset is empty (0 rows)")
    _require_columns(telemetry, [device, time, *sensors, *carried], where)
    frame = telemetry[[device, time, *sensors, *carried]].copy()
    if not pd.api.types.is_string_dtype(frame[device]) or frame[device].isna().any():
        frame[device] = frame[device].astype(str)
    frame[time] = _utc_naive(frame[time], f"{where}, column '{time}'")
    for sensor in continuous_sensors:
        if _plain_numbers(frame[sensor]):  # nothing to coerce
            if frame[sensor].dtype != "float64":
                frame[sensor] = frame[sensor].astype("float64")
            continue
        numeric = pd.to_numeric(frame[sensor], errors="coerce")
        bad = numeric.isna() & frame[sensor].notna()
        if bad.any():
            found = frame[sensor][bad].iloc[0]
            raise DataValidationError(
                f"{where}, column '{sensor}': expected numbers, found {found!r}"
            )
        frame[sensor] = numeric.astype("float64")
    for sensor in boolean_sensors:
        values = frame[sensor]
        if _plain_numbers(values) or pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype="float64")
            valid = bool(np.isin(numbers[~np.isnan(numbers)], (0.0, 1.0)).all())
        else:
            valid = bool(values.dropna().isin([0, 1, True, False]).all())
        if not valid:
            raise DataValidationError(
                f"{where}, column '{sensor}': expected booleans (true/false or 0/1)"
            )
        if values.dtype != "float64":
            frame[sensor] = values.astype("float64")

    out_of_range: dict[str, int] = {}  # every ranged sensor, in value_ranges order
    for sensor, (low, high) in (value_ranges or {}).items():
        outside = (frame[sensor] < low) | (frame[sensor] > high)
        out_of_range[sensor] = int(outside.sum())
        if not out_of_range[sensor]:
            continue
        share = outside.groupby(frame[device]).mean()
        if share.max() > max_out_of_range_fraction:
            raise DataValidationError(
                f"{where}: device '{share.idxmax()}' column '{sensor}': {share.max():.0%} of "
                f"readings outside [{low}, {high}] (value range check; at most "
                f"{max_out_of_range_fraction:.0%} allowed)"
            )
        frame.loc[outside, sensor] = np.nan

    # Every sensor is float64 by now: one block, one NaN test.
    missing = np.isnan(frame[sensors].to_numpy(dtype="float64")) if sensors else None
    missing_counts = {
        c: int(missing[:, j].sum()) if missing is not None else 0 for j, c in enumerate(sensors)
    }

    codes = pd.factorize(frame[device], sort=True)[0]
    stamps = frame[time].to_numpy(dtype="datetime64[ns]").view(np.int64)
    was_sorted = _time_ordered_per_device(codes, stamps)
    if was_sorted and bool((np.diff(codes) >= 0).all()):
        # Already in (device, time) order: a duplicate is a row equal to the next in both keys.
        same_as_next = (codes[1:] == codes[:-1]) & (stamps[1:] == stamps[:-1])
        duplicated = pd.Series(np.r_[same_as_next, False], index=frame.index)
    else:
        frame = frame.sort_values([device, time], kind="stable")
        duplicated = frame.duplicated([device, time], keep="last")
    if duplicated.any():
        frame = frame[~duplicated]

    if missing is not None and missing.any():
        unseen = frame.groupby(device, sort=False)[sensors].count() == 0
        if unseen.any().any():
            sensor = unseen.any().idxmax()
            raise DataValidationError(
                f"{where}: device '{unseen[sensor].idxmax()}' has no value at all for sensor "
                f"'{sensor}'"
            )
        if fill_gaps:
            frame = filled_gaps(frame, device, sensors)
    counts = TelemetryCounts(
        rows_in=len(telemetry),
        duplicates=int(duplicated.sum()),
        missing=missing_counts,
        out_of_range=out_of_range,
        sorted_on_arrival=was_sorted,
    )
    return frame.reset_index(drop=True), counts


@dataclass(frozen=True)
class TelemetryCounts:
    """What `normalise_telemetry` found, as counts: those of parts of whole devices add up to
    the whole fleet's (`add`), and its warnings and report entries follow from them."""

    rows_in: int
    duplicates: int
    missing: dict[str, int]  # sensor -> readings missing (or out of range) as read
    out_of_range: dict[str, int]
    sorted_on_arrival: bool

    def add(self, other: TelemetryCounts) -> TelemetryCounts:
        return TelemetryCounts(
            self.rows_in + other.rows_in,
            self.duplicates + other.duplicates,
            {k: v + other.missing.get(k, 0) for k, v in self.missing.items()},
            {k: v + other.out_of_range.get(k, 0) for k, v in self.out_of_range.items()},
            self.sorted_on_arrival and other.sorted_on_arrival,
        )

    def null_fraction(self) -> dict[str, float]:
        return {k: v / self.rows_in if self.rows_in else 0.0 for k, v in self.missing.items()}

    def warnings(self, value_ranges: dict[str, tuple[float, float]] | None) -> list[str]:
        warnings = [
            f"column '{sensor}': {self.out_of_range[sensor]} readings outside [{low}, {high}] "
            "treated as missing"
            for sensor, (low, high) in (value_ranges or {}).items()
            if self.out_of_range.get(sensor)
        ]
        warnings += [
            f"column '{sensor}' is {fraction:.0%} missing"
            for sensor, fraction in self.null_fraction().items()
            if fraction > 0.2
        ]
        if not self.sorted_on_arrival:
            warnings.append("rows were not in time order within each device; sorted")
        if self.duplicates:
            warnings.append(f"{self.duplicates} duplicate (device, timestamp) rows; kept the last")
        return warnings

    def stats(self) -> dict[str, Any]:
        return {
            "duplicates_dropped": self.duplicates,
            "null_fraction": self.null_fraction(),
            "out_of_range": {k: v for k, v in self.out_of_range.items() if v},
            "sorted_on_arrival": self.sorted_on_arrival,
        }


def filled_gaps(frame: pd.DataFrame, device: str, sensors: list[str]) -> pd.DataFrame:
    """`frame` with missing sensor values carried forward within each device, then backward
    for leading gaps (rows sorted by device then time)."""
    frame = frame.copy()
    frame[sensors] = frame.groupby(device, sort=False)[sensors].transform(
        lambda s: s.ffill().bfill()
    )
    return frame


@dataclass(frozen=True)
class PartFacts:
    """What the fleet-wide checks and the report need of one part of whole devices (or of the
    whole fleet): the parts' facts add up to the fleet's (`fleet_report`)."""

    counts: TelemetryCounts
    rows: int
    devices: frozenset[str]
    time_start: pd.Timestamp | None
    time_end: pd.Timestamp | None
    values: dict[str, tuple[float, ...]]  # per sensor, up to two of its distinct values
    label_sum: float = 0.0  # the label as the default task sees it (censored rows left out)
    label_count: int = 0


def validate_part(
    telemetry: pd.DataFrame, config: TenantConfig, source: str
) -> tuple[pd.DataFrame, PartFacts]:
    """Telemetry of whole devices normalised by the tenant's rules (or DataValidationError
    naming the device, column or key), with its facts; labels not counted yet (`count_labels`)."""
    schema = config.schema_
    device, time = schema.device_column, schema.time_column
    where = f"telemetry {source}"
    target = config.labels.target_column
    frame, counts = normalise_telemetry(
        telemetry,
        device,
        time,
        schema.continuous_sensors,
        schema.boolean_sensors,
        where,
        carried=[target] if target else None,
        value_ranges=schema.value_ranges,
        max_out_of_range_fraction=config.data.max_out_of_range_fraction,
    )
    if target:
        values = pd.to_numeric(frame[target], errors="coerce")
        if not values.dropna().isin([0, 1]).all():
            raise _target_error(config, source)
        frame[target] = values.astype("float64")  # NaN: unlabelled, dropped from training
    facts = PartFacts(
        counts,
        len(frame),
        frozenset(frame[device]),
        frame[time].min() if len(frame) else None,
        frame[time].max() if len(frame) else None,
        {s: tuple(pd.unique(frame[s].dropna())[:2]) for s in config.sensors},
    )
    return frame, facts


def count_labels(
    frame: pd.DataFrame, facts: PartFacts, events: pd.DataFrame, config: TenantConfig
) -> PartFacts:
    """`facts` with the part's labels counted: its target column, or failures within the
    horizon from `events` (normalised; other devices' events are ignored)."""
    schema = config.schema_
    if config.labels.target_column:
        labels = frame[config.labels.target_column]
    else:
        labels = failure_within_horizon(
            frame,
            events,
            config.labels.horizon_hours,
            schema.device_column,
            schema.time_column,
            schema.event_time_column,
        )
    return replace(facts, label_sum=float(labels.sum()), label_count=int(labels.notna().sum()))


def check_rows(rows: int, config: TenantConfig, source: str) -> None:
    if rows < config.data.min_rows:
        raise DataValidationError(
            f"telemetry {source}: too little data: {rows} rows, need at least "
            f"{config.data.min_rows} (data.min_rows)"
        )


def _target_error(config: TenantConfig, source: str) -> DataValidationError:
    return DataValidationError(
        f"telemetry {source}, column '{config.labels.target_column}' (labels.target_column): "
        "expected 0/1 labels"
    )


def fleet_report(
    parts: list[PartFacts],
    events: pd.DataFrame,
    event_warnings: list[str],
    config: TenantConfig,
    source: str,
) -> dict[str, Any]:
    """The validation report of the fleet whose parts `parts` describe (their labels counted),
    with its clean `events` and their warnings; DataValidationError when no row is labelled by
    the target column."""
    counts = parts[0].counts
    for part in parts[1:]:
        counts = counts.add(part.counts)
    label_sum = sum(p.label_sum for p in parts)
    label_count = sum(p.label_count for p in parts)
    target = config.labels.target_column
    if target and not label_count:
        raise _target_error(config, source)
    warnings = counts.warnings(config.schema_.value_ranges)
    constant = [s for s in config.sensors if len({v for p in parts for v in p.values[s]}) <= 1]
    if constant:
        warnings.append(f"constant sensors carry no signal: {', '.join(constant)}")
    warnings += event_warnings
    rate = label_sum / label_count if label_count else 0.0
    if not target and rate == 0.0:
        warnings.append("no reading is followed by a failure within the horizon")
    starts = [p.time_start for p in parts if p.time_start is not None]
    ends = [p.time_end for p in parts if p.time_end is not None]
    return {
        "source": source,
        "rows": sum(p.rows for p in parts),
        "rows_in": counts.rows_in,
        "devices": len(frozenset().union(*(p.devices for p in parts))),
        "failures": len(events),
        "time_start": str(min(starts)) if starts else "NaT",
        "time_end": str(max(ends)) if ends else "NaT",
        **counts.stats(),
        "label_positive_rate": rate,
        "warnings": warnings,
        "passed": True,
    }


def validate(
    telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig, source: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Return clean (telemetry, events, report) or raise DataValidationError."""
    frame, facts = validate_part(telemetry, config, source)
    target = config.labels.target_column
    if target:  # its labels are in the frame: counted, and refused when none, before the rows
        facts = count_labels(frame, facts, events, config)
        if not facts.label_count:
            raise _target_error(config, source)
    check_rows(facts.rows, config, source)
    clean_events, event_warnings = validate_events(events, config, source, facts.devices)
    if not target:
        facts = count_labels(frame, facts, clean_events, config)
    return frame, clean_events, fleet_report([facts], clean_events, event_warnings, config, source)


def normalise_events(
    events: pd.DataFrame, device: str, event_time: str, where: str
) -> pd.DataFrame:
    """Typed, sorted failure events (device as text, event time as naive UTC)."""
    _require_columns(events, [device, event_time], where)
    keep = [c for c in events.columns if c in (device, event_time, "failure_type")]
    clean = events[keep].copy()
    if not pd.api.types.is_string_dtype(clean[device]) or clean[device].isna().any():
        clean[device] = clean[device].astype(str)
    if clean.empty:
        clean[event_time] = pd.Series(dtype="datetime64[ns]")
        return clean
    clean[event_time] = _utc_naive(clean[event_time], f"{where}, column '{event_time}'")
    codes = pd.factorize(clean[device], sort=True)[0]
    stamps = clean[event_time].to_numpy(dtype="datetime64[ns]").view(np.int64)
    ordered = (np.diff(codes) > 0) | ((np.diff(codes) == 0) & (np.diff(stamps) >= 0))
    if ordered.all():  # already in (device, time) order, as events a step wrote are
        return clean.reset_index(drop=True)
    return clean.sort_values([device, event_time]).reset_index(drop=True)


def validate_events(
    events: pd.DataFrame, config: TenantConfig, source: str, known_devices: frozenset[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Clean failure events of the telemetry's devices (`known_devices`), and warnings."""
    schema = config.schema_
    device = schema.device_column
    clean = normalise_events(events, device, schema.event_time_column, f"events {source}")
    if clean.empty:
        if config.labels.target_column is None:  # with a target column the label is there
            return clean, ["no failure events: every label will be 0"]
        return clean, []
    unknown = sorted(set(clean[device]) - known_devices)
    if not unknown:
        return clean, []
    warning = f"events for devices without telemetry ignored: {', '.join(unknown[:5])}"
    return clean[clean[device].isin(known_devices)].reset_index(drop=True), [warning]


def summarise(report: dict[str, Any]) -> str:
    """The validation report as a few lines a person reads in the run's artifacts or log."""
    lines = [
        f"source:      {report['source']}",
        f"rows:        {report['rows']:,} kept of {report['rows_in']:,} read "
        f"({report['duplicates_dropped']:,} duplicates dropped)",
        f"devices:     {report['devices']:,}; failures: {report['failures']:,}",
        f"time:        {report['time_start']} .. {report['time_end']} (UTC)",
    ]
    missing = {k: v for k, v in report["null_fraction"].items() if v > 0}
    if missing:
        lines.append("missing:     " + ", ".join(f"{k} {v:.1%}" for k, v in missing.items()))
    if report.get("out_of_range"):
        lines.append(
            "out of range: " + ", ".join(f"{k} {v:,}" for k, v in report["out_of_range"].items())
        )
    if "label_positive_rate" in report:
        lines.append(f"label:       {report['label_positive_rate']:.1%} positive")
    lines += [f"warning:     {w}" for w in report["warnings"]] or ["warnings:    none"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CleanArrays:
    """Telemetry as the arrays `normalise_telemetry` would give, for a frame that needs none of
    its work: devices (object, text), times (datetime64[ns]), sensors (float64 matrices)."""

    devices: np.ndarray
    times: np.ndarray
    continuous: np.ndarray
    booleans: np.ndarray


def _plain_float_matrix(telemetry: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """[rows, columns] float64 of numeric (or boolean) columns without a missing value.

    Column by column: a frame's `dtypes` or a list getitem costs more here than the columns.
    """
    if not columns:
        return np.empty((len(telemetry), 0))
    values = []
    for column in columns:
        series = telemetry[column]
        dtype = series.dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            return None
        if isinstance(dtype, np.dtype):
            values.append(series.to_numpy(dtype="float64"))
        else:  # nullable extension types: their NA as NaN, found below
            values.append(series.to_numpy(dtype="float64", na_value=np.nan))
    matrix = np.column_stack(values)
    return None if np.isnan(matrix).any() else matrix


def clean_arrays(
    telemetry: pd.DataFrame,
    device: str,
    time: str,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
) -> CleanArrays | None:
    """The arrays of telemetry that is already clean: every column present and typed (text
    devices, naive datetime64[ns] times, numeric sensors, booleans 0/1), nothing missing, rows
    in (device, time) order without a duplicate. None when any of that fails: then
    `normalise_telemetry` applies the rules (and names what is wrong). Serving's fast path:
    what a scoring client sends is usually clean, and checking is cheaper than normalising.
    """
    columns = telemetry.columns
    if telemetry.empty or any(c not in columns for c in [device, time, *continuous_sensors]):
        return None
    if any(c not in columns for c in boolean_sensors):
        return None
    names, stamps = telemetry[device], telemetry[time]
    if not pd.api.types.is_string_dtype(names) or names.hasnans:
        return None
    if stamps.dtype != "datetime64[ns]" or stamps.hasnans:
        return None
    continuous = _plain_float_matrix(telemetry, continuous_sensors)
    booleans = _plain_float_matrix(telemetry, boolean_sensors)
    if continuous is None or booleans is None or not np.isin(booleans, (0.0, 1.0)).all():
        return None
    devices = names.to_numpy(dtype=object)
    times = stamps.to_numpy()
    same_device = devices[1:] == devices[:-1]
    later = np.diff(times.view(np.int64)) > 0
    if not (same_device <= later).all() or not (devices[1:] >= devices[:-1]).all():
        return None  # out of order, or a duplicate (device, time): the full rules decide
    return CleanArrays(devices, times, continuous, booleans)
