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

from dataclasses import dataclass
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
) -> tuple[pd.DataFrame, list[str], dict[str, Any]]:
    """Typed, sorted, de-duplicated, gap-filled telemetry (training and serving share this).

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
    warnings: list[str] = []

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

    out_of_range: dict[str, int] = {}
    for sensor, (low, high) in (value_ranges or {}).items():
        outside = (frame[sensor] < low) | (frame[sensor] > high)
        if not outside.any():
            continue
        out_of_range[sensor] = int(outside.sum())
        share = outside.groupby(frame[device]).mean()
        if share.max() > max_out_of_range_fraction:
            raise DataValidationError(
                f"{where}: device '{share.idxmax()}' column '{sensor}': {share.max():.0%} of "
                f"readings outside [{low}, {high}] (value range check; at most "
                f"{max_out_of_range_fraction:.0%} allowed)"
            )
        warnings.append(
            f"column '{sensor}': {out_of_range[sensor]} readings outside [{low}, {high}] "
            "treated as missing"
        )
        frame.loc[outside, sensor] = np.nan

    # Every sensor is float64 by now: one block, one NaN test.
    missing = np.isnan(frame[sensors].to_numpy(dtype="float64")) if sensors else None
    null_fraction = {
        c: float(missing[:, j].mean()) if missing is not None else 0.0
        for j, c in enumerate(sensors)
    }
    for sensor, fraction in null_fraction.items():
        if fraction > 0.2:
            warnings.append(f"column '{sensor}' is {fraction:.0%} missing")

    codes = pd.factorize(frame[device], sort=True)[0]
    stamps = frame[time].to_numpy(dtype="datetime64[ns]").view(np.int64)
    was_sorted = _time_ordered_per_device(codes, stamps)
    if not was_sorted:
        warnings.append("rows were not in time order within each device; sorted")
    if was_sorted and bool((np.diff(codes) >= 0).all()):
        # Already in (device, time) order: a duplicate is a row equal to the next in both keys.
        same_as_next = (codes[1:] == codes[:-1]) & (stamps[1:] == stamps[:-1])
        duplicated = pd.Series(np.r_[same_as_next, False], index=frame.index)
    else:
        frame = frame.sort_values([device, time], kind="stable")
        duplicated = frame.duplicated([device, time], keep="last")
    if duplicated.any():
        warnings.append(
            f"{int(duplicated.sum())} duplicate (device, timestamp) rows; kept the last"
        )
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
    stats = {
        "duplicates_dropped": int(duplicated.sum()),
        "null_fraction": null_fraction,
        "out_of_range": out_of_range,
        "sorted_on_arrival": was_sorted,
    }
    return frame.reset_index(drop=True), warnings, stats


def filled_gaps(frame: pd.DataFrame, device: str, sensors: list[str]) -> pd.DataFrame:
    """`frame` with missing sensor values carried forward within each device, then backward
    for leading gaps (rows sorted by device then time)."""
    frame = frame.copy()
    frame[sensors] = frame.groupby(device, sort=False)[sensors].transform(
        lambda s: s.ffill().bfill()
    )
    return frame


def validate(
    telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig, source: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Return clean (telemetry, events, report) or raise DataValidationError."""
    schema = config.schema_
    device, time = schema.device_column, schema.time_column
    where = f"telemetry {source}"
    target = config.labels.target_column
    frame, warnings, stats = normalise_telemetry(
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
        if not values.dropna().isin([0, 1]).all() or values.isna().all():
            raise DataValidationError(
                f"{where}, column '{target}' (labels.target_column): expected 0/1 labels"
            )
        frame[target] = values.astype("float64")  # NaN: unlabelled, dropped from training
        stats["label_positive_rate"] = float(values.mean())

    if len(frame) < config.data.min_rows:
        raise DataValidationError(
            f"{where}: too little data: {len(frame)} rows, need at least "
            f"{config.data.min_rows} (data.min_rows)"
        )

    constant = [s for s in config.sensors if frame[s].nunique() <= 1]
    if constant:
        warnings.append(f"constant sensors carry no signal: {', '.join(constant)}")

    clean_events = _validate_events(events, config, source, set(frame[device]), warnings)
    if not target:
        # Label balance as the default task will see it (censored rows left out).
        labels = failure_within_horizon(
            frame,
            clean_events,
            config.labels.horizon_hours,
            device,
            time,
            schema.event_time_column,
        )
        stats["label_positive_rate"] = float(labels.mean()) if labels.notna().any() else 0.0
        if stats["label_positive_rate"] == 0.0:
            warnings.append("no reading is followed by a failure within the horizon")
    report = {
        "source": source,
        "rows": len(frame),
        "rows_in": len(telemetry),
        "devices": int(frame[device].nunique()),
        "failures": len(clean_events),
        "time_start": str(frame[time].min()),
        "time_end": str(frame[time].max()),
        **stats,
        "warnings": warnings,
        "passed": True,
    }
    return frame, clean_events, report


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


def _validate_events(
    events: pd.DataFrame,
    config: TenantConfig,
    source: str,
    known_devices: set[str],
    warnings: list[str],
) -> pd.DataFrame:
    schema = config.schema_
    device = schema.device_column
    clean = normalise_events(events, device, schema.event_time_column, f"events {source}")
    if clean.empty:
        if config.labels.target_column is None:  # with a target column the label is there
            warnings.append("no failure events: every label will be 0")
        return clean
    unknown = sorted(set(clean[device]) - known_devices)
    if unknown:
        warnings.append(f"events for devices without telemetry ignored: {', '.join(unknown[:5])}")
        clean = clean[clean[device].isin(known_devices)].reset_index(drop=True)
    return clean


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
