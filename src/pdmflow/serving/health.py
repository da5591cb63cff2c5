"""Sensor health beside each score: is a device's continuous sensor missing, flat-lined or out
of range over the readings its latest features read?

A model that leans on one sensor loses its signal when that sensor freezes or stops reporting,
and an absent alert from such a device says nothing. So every score carries `sensor_health`:

- `ok`: every continuous sensor of the device is healthy;
- otherwise `<sensor>:<reason>` entries joined by `;`, sorted by sensor name, then reason in the
  order below, e.g. `pressure:missing;vibration:flat-lined`.

Reasons, over the device's health window (t - `spec.health_window`, t], t its latest reading
(the readings the rolling windows and lags of t's features look at):
- `missing`: the sensor column is absent, or every reading of the sensor in the window is
  missing (NaN);
- `flat-lined`: at least `MIN_FLAT_READINGS` readings in the window, all equal;
- `out-of-range`: the latest reading in the window lies outside `spec.value_ranges[sensor]`
  ([low, high], the tenant's `schema.value_ranges`; sensors without a range are not checked).
A flat-lined sensor out of range carries both reasons.

Pure functions on arrays or frames sorted by device then time, as serving holds them; NumPy
reductions per device (`ufunc.reduceat`) or per row (cumulative sums), no loop over devices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.features.builder import FeatureSpec

HEALTHY = "ok"
REASONS = ("missing", "flat-lined", "out-of-range")
# Fewer equal readings than this say too little to call a sensor frozen.
MIN_FLAT_READINGS = 3


def _ranges(spec: FeatureSpec, sensors: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per sensor; -inf/inf for sensors without a range."""
    ranges = spec.value_ranges
    low = np.array([ranges[s][0] if s in ranges else -np.inf for s in sensors], dtype="float64")
    high = np.array([ranges[s][1] if s in ranges else np.inf for s in sensors], dtype="float64")
    return low, high


def _labels(flags: np.ndarray, sensors: list[str]) -> np.ndarray:
    """One string per row of `flags` [rows, sensors, reasons] (bool): `ok` or the entries.

    Rows share few distinct flag patterns: each pattern is spelled once (np.unique), not once
    per row."""
    rows = len(flags)
    if rows == 0:
        return np.empty(0, dtype=object)
    order = np.argsort(sensors, kind="stable")  # entries sorted by sensor name
    flat = flags[:, order, :].reshape(rows, -1)
    if not flat.any():
        return np.full(rows, HEALTHY, dtype=object)
    names = [f"{sensors[j]}:{reason}" for j in order for reason in REASONS]
    patterns, inverse = np.unique(flat, axis=0, return_inverse=True)
    spelled = np.array(
        [";".join(n for n, on in zip(names, p, strict=True) if on) or HEALTHY for p in patterns],
        dtype=object,
    )
    return spelled[inverse.reshape(-1)]


def latest_health(
    devices: np.ndarray, times: np.ndarray, continuous: np.ndarray, spec: FeatureSpec
) -> np.ndarray:
    """`sensor_health` of each device at its latest reading, in the order devices appear.

    `devices` [rows], `times` [rows] datetime64[ns], `continuous` [rows, sensors] float64 in
    `spec.continuous_sensors` order (NaN: missing; an absent column is all NaN); rows sorted by
    device then time.
    """
    if len(devices) == 0:
        return np.empty(0, dtype=object)
    sensors = spec.continuous_sensors
    times_ns = np.asarray(times, dtype="datetime64[ns]").view(np.int64)
    changes = np.flatnonzero(devices[1:] != devices[:-1]) + 1
    starts, ends = np.r_[0, changes], np.r_[changes, len(devices)]
    window_begins = times_ns[ends - 1] - int(spec.health_window.value)
    inside = times_ns > np.repeat(window_begins, ends - starts)
    present = ~np.isnan(continuous) & inside[:, None]
    readings = np.add.reduceat(present, starts, axis=0)
    held = np.where(present, continuous, np.nan)
    # fmin/fmax skip NaN: a window's extremes over the readings present.
    lowest = np.fmin.reduceat(held, starts, axis=0)
    highest = np.fmax.reduceat(held, starts, axis=0)
    rows = np.arange(len(devices))[:, None]
    last_row = np.maximum.reduceat(np.where(present, rows, -1), starts, axis=0)
    latest = np.take_along_axis(continuous, np.maximum(last_row, 0), axis=0)
    low, high = _ranges(spec, sensors)
    flags = np.stack(
        [
            readings == 0,
            (readings >= MIN_FLAT_READINGS) & (lowest == highest),
            (readings > 0) & ((latest < low) | (latest > high)),
        ],
        axis=-1,
    )
    return _labels(flags, sensors)


def rowwise_health(
    devices: np.ndarray, times: np.ndarray, continuous: np.ndarray, spec: FeatureSpec
) -> np.ndarray:
    """`sensor_health` at every reading, each over its own window (t - health_window, t];
    arrays as `latest_health` takes them. For backfills (`pdmflow score --all-rows`)."""
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=object)
    sensors = spec.continuous_sensors
    times_ns = np.asarray(times, dtype="datetime64[ns]").view(np.int64)
    changes = np.flatnonzero(devices[1:] != devices[:-1]) + 1
    starts, ends = np.r_[0, changes], np.r_[changes, n]
    span = int(spec.health_window.value)
    # Each row's window start: one binary search per device over its own times.
    begin = np.empty(n, dtype=np.int64)
    for start, end in zip(starts, ends, strict=True):
        own = times_ns[start:end]
        begin[start:end] = start + np.searchsorted(own, own - span, side="right")
    rows = np.arange(n)
    present = ~np.isnan(continuous)
    counted = np.vstack([np.zeros((1, len(sensors)), np.int64), np.cumsum(present, axis=0)])
    readings = counted[rows + 1] - counted[begin]
    # The latest reading present at or before each row; in the window when past its start.
    last_row = np.maximum.accumulate(np.where(present, rows[:, None], -1), axis=0)
    latest = np.take_along_axis(continuous, np.maximum(last_row, 0), axis=0)
    # Flat: no change between consecutive present readings inside the window. A change at
    # row r (its reading differs from the previous present one) counts when that previous
    # reading is in r's window too, i.e. when both readings are in the window.
    previous_row = np.vstack([np.full((1, len(sensors)), -1), last_row[:-1]])
    previous = np.take_along_axis(continuous, np.maximum(previous_row, 0), axis=0)
    changed = present & (previous_row >= 0) & (continuous != previous)
    change_at = np.where(changed, previous_row, -1)  # the earlier reading of each change
    # A window holds a change iff the latest change ending at or before t started at or after
    # the window's first row.
    latest_change_start = np.maximum.accumulate(change_at, axis=0)
    has_change = latest_change_start >= begin[:, None]
    low, high = _ranges(spec, sensors)
    flags = np.stack(
        [
            readings == 0,
            (readings >= MIN_FLAT_READINGS) & ~has_change,
            (readings > 0) & ((latest < low) | (latest > high)),
        ],
        axis=-1,
    )
    return _labels(flags, sensors)


def _arrays(telemetry: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, ...]:
    """(devices, times, continuous [rows, sensors] float64: NaN for an absent column)."""
    columns = [
        telemetry[s].to_numpy(dtype="float64", na_value=np.nan)
        if s in telemetry.columns
        else np.full(len(telemetry), np.nan)
        for s in spec.continuous_sensors
    ]
    continuous = np.column_stack(columns) if columns else np.empty((len(telemetry), 0))
    return (
        telemetry[spec.device_column].to_numpy(),
        telemetry[spec.time_column].to_numpy(dtype="datetime64[ns]"),
        continuous,
    )


def sensor_health(telemetry: pd.DataFrame, spec: FeatureSpec) -> pd.Series:
    """`sensor_health` per device at its latest reading, indexed by device (in the order the
    devices appear); `telemetry` typed and sorted by device then time, gaps (NaN) kept."""
    devices, times, continuous = _arrays(telemetry, spec)
    health = latest_health(devices, times, continuous, spec)
    changes = np.flatnonzero(devices[1:] != devices[:-1]) + 1 if len(devices) else []
    names = devices[np.r_[0, changes]] if len(devices) else devices
    return pd.Series(health, index=pd.Index(names, name=spec.device_column), name="sensor_health")


def sensor_health_by_row(telemetry: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """`rowwise_health` of a frame typed and sorted by device then time, gaps kept."""
    return rowwise_health(*_arrays(telemetry, spec), spec)
