"""Features at each device's latest reading only: the serving path.

Training builds every row's features at once (builder.py, pandas' rolling kernels over the
whole fleet). Serving needs one row per device, so this module computes the same definitions
for that row alone, from the windows that end at it, with NumPy: a handful of array operations
per window instead of a rolling pass per feature. The values equal the training build's for the
same readings to floating-point rounding (tests/test_latest_features.py holds them to 1e-9);
the rules that builder.py (pandas) applies to degenerate windows are kept: a window of one
reading has standard deviation 0; a constant window has standard deviation, skewness and
kurtosis 0 and its value as mean; a window of fewer than three (four) readings has skewness
(kurtosis) 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.data.validation import CleanArrays
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import CYCLES, FeatureSpec


def _divide(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (builder's rule)."""
    numerator = np.asarray(numerator, dtype="float64")
    denominator = np.asarray(denominator, dtype="float64")
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _window_statistics(window: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
    """Rolling statistics of a [readings, sensors] window, per sensor, as builder computes them.

    Plain reductions (sum / n, not mean): the same values, without np.mean's per-call overhead,
    which at three windows a device is most of serving's feature time.
    """
    n = len(window)
    lowest, highest = window.min(axis=0), window.max(axis=0)
    constant = lowest == highest
    # pandas returns a constant window's value as its mean, exactly.
    mean = np.where(constant, window[-1], window.sum(axis=0) / n)
    result = {"mean": mean, "min": lowest, "max": highest}
    if "median" in wanted:
        result["median"] = np.median(window, axis=0)
    if not {"std", "skew", "kurt"} & set(wanted):
        return result
    centred = window - mean
    squared = centred * centred
    m2 = squared.sum(axis=0) / n  # population variance
    if "std" in wanted:
        result["std"] = (
            np.where(constant, 0.0, np.sqrt(m2 * n / (n - 1))) if n > 1 else np.zeros_like(mean)
        )
    flat = constant | (m2 <= 0)
    safe_m2 = np.where(flat, 1.0, m2)
    if "skew" in wanted:
        if n < 3:
            result["skew"] = np.zeros_like(mean)
        else:
            m3 = (squared * centred).sum(axis=0) / n
            skew = np.sqrt(n * (n - 1.0)) * m3 / ((n - 2.0) * safe_m2**1.5)
            result["skew"] = np.where(flat, 0.0, skew)
    if "kurt" in wanted:
        if n < 4:
            result["kurt"] = np.zeros_like(mean)
        else:
            m4 = (squared * squared).sum(axis=0) / n
            excess = (n * n - 1.0) * m4 / (safe_m2 * safe_m2) - 3.0 * (n - 1.0) ** 2
            result["kurt"] = np.where(flat, 0.0, excess / ((n - 2.0) * (n - 3.0)))
    return result


class _Plan:
    """What the spec asks for, and every feature's name, worked out once per spec."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        needed = set(spec.feature_names)
        sensors = spec.continuous_sensors
        self.statistics = {
            window: sorted(
                {
                    stat
                    for stat in spec.rolling_statistics
                    if any(f"{s}_roll_{window}_{stat}" in needed for s in sensors)
                }
                | ({"mean", "std"} if window == spec.zscore_window else set())
            )
            for window in spec.windows
        }
        self.rolling_names = {
            (window, stat): [f"{s}_roll_{window}_{stat}" for s in sensors]
            for window, stats in self.statistics.items()
            for stat in stats
        }
        self.zscore_names = [f"{s}_zscore_{spec.zscore_window}" for s in sensors]
        self.lag_names = {lag: [f"{s}_lag_{lag}" for s in sensors] for lag in spec.lags}
        self.difference_names = [
            [f"{s}_diff_1" for s in sensors],
            [f"{s}_diff_2" for s in sensors],
            [f"{s}_pct_change" for s in sensors],
        ]
        self.activity_names = {
            window: (
                [f"{s}_share_on_{window}" for s in spec.boolean_sensors],
                [f"{s}_switches_{window}" for s in spec.boolean_sensors],
            )
            for window in spec.windows
        }
        self.window_ns = {window: int(pd.Timedelta(window).value) for window in spec.windows}
        self.lag_ns = {lag: int(pd.Timedelta(lag).value) for lag in spec.lags}
        self.history_ns = int(spec.history.value)
        self.min_readings = spec.min_readings
        self.sensor_index = {sensor: j for j, sensor in enumerate(sensors)}
        self.spectral = [
            sensor
            for sensor in spec.spectral_sensors
            if {f"{sensor}_dominant_frequency_hz", f"{sensor}_spectral_energy"} & needed
        ]


def _device_row(
    plan: _Plan,
    times_ns: np.ndarray,
    continuous: np.ndarray,
    booleans: np.ndarray,
    failures_ns: np.ndarray | None,
) -> dict[str, float]:
    """Every feature of one device's last reading (arrays: that device's readings, in order)."""
    spec = plan.spec
    last = len(times_ns) - 1
    now = times_ns[last]
    columns: dict[str, float] = {}
    sensors = spec.continuous_sensors
    current = continuous[last]
    windows = {}
    for window, span in plan.window_ns.items():
        start = int(np.searchsorted(times_ns, now - span, side="right"))
        windows[window] = start
        stats = _window_statistics(continuous[start:], plan.statistics[window])
        for stat in plan.statistics[window]:
            columns.update(zip(plan.rolling_names[window, stat], stats[stat], strict=True))
        if window == spec.zscore_window:
            zscores = _divide(current - stats["mean"], stats["std"])
    columns.update(zip(sensors, current, strict=True))
    columns.update(zip(plan.zscore_names, zscores, strict=True))
    for lag, span in plan.lag_ns.items():
        row = int(np.searchsorted(times_ns, now - span, side="right")) - 1
        columns.update(zip(plan.lag_names[lag], continuous[row], strict=True))
    if spec.differences:
        previous, before = continuous[last - 1], continuous[last - 2]
        diff_1 = current - previous
        diff_2 = diff_1 - (previous - before)
        pct = _divide(diff_1, np.abs(previous))
        for names, values in zip(plan.difference_names, (diff_1, diff_2, pct), strict=True):
            columns.update(zip(names, values, strict=True))
    if spec.boolean_sensors:
        switched = np.abs(np.diff(booleans, axis=0, prepend=booleans[:1]))
        for window, start in windows.items():
            share_names, switch_names = plan.activity_names[window]
            columns.update(zip(share_names, booleans[start:].mean(axis=0), strict=True))
            columns.update(zip(switch_names, switched[start:].sum(axis=0), strict=True))
        columns.update(zip(spec.boolean_sensors, booleans[last], strict=True))
    index = plan.sensor_index
    for a, b in spec.interactions:
        first, second = current[index[a]], current[index[b]]
        columns[f"{a}_times_{b}"] = first * second
        columns[f"{a}_per_{b}"] = float(_divide(first, second))
        columns[f"{a}_minus_{b}"] = first - second
    if spec.cross_sensor:
        columns["cross_sensor_abs_zscore_mean"] = np.abs(zscores).mean()
        columns["cross_sensor_abs_zscore_max"] = np.abs(zscores).max()
        columns["cross_sensor_zscore_std"] = zscores.std()
    n = spec.spectral_window
    seconds = (times_ns[last] - times_ns[last - n + 1]) / 1e9 if plan.spectral else 0.0
    for sensor in plan.spectral:
        block = continuous[last - n + 1 :, index[sensor]]
        power = np.abs(np.fft.rfft(block - block.mean())) ** 2
        peak = int(np.argmax(power[1:])) + 1
        columns[f"{sensor}_dominant_frequency_hz"] = float(_divide(peak / n, seconds / (n - 1)))
        columns[f"{sensor}_spectral_energy"] = power[1:].sum() / n
    if spec.cyclical:
        stamp = pd.Timestamp(int(now))
        parts = {
            "hour": stamp.hour + stamp.minute / 60,
            "day_of_week": stamp.day_of_week,
            "month": stamp.month - 1,
        }
        for unit, period in CYCLES:
            angle = 2 * np.pi * float(parts[unit]) / period
            columns[f"{unit}_sin"], columns[f"{unit}_cos"] = np.sin(angle), np.cos(angle)
    cap = spec.time_since_cap_hours
    if spec.time_since_failure:
        hours = cap
        if failures_ns is not None and len(failures_ns):
            found = int(np.searchsorted(failures_ns, now, side="right")) - 1
            if found >= 0:
                hours = min((now - failures_ns[found]) / 3.6e12, cap)
        columns["hours_since_failure"] = hours
    if spec.maintenance_sensor:
        on = np.flatnonzero(
            continuous[:, index[spec.maintenance_sensor]] > 0
            if spec.maintenance_sensor in index
            else booleans[:, spec.boolean_sensors.index(spec.maintenance_sensor)] > 0
        )
        columns["hours_since_maintenance"] = (
            min((now - times_ns[on[-1]]) / 3.6e12, cap) if len(on) else cap
        )
    return columns


def _failures_by_device(
    events: pd.DataFrame | None, spec: FeatureSpec, devices: np.ndarray
) -> dict[object, np.ndarray]:
    """Sorted failure times (ns) of each of `devices` that has any."""
    if events is None or not len(events):
        return {}
    names = events[spec.device_column].to_numpy(dtype=object)
    stamps = events[spec.event_time_column].to_numpy(dtype="datetime64[ns]").view(np.int64)
    present = np.isin(names, devices)
    names, stamps = names[present], stamps[present]
    return {name: np.sort(stamps[names == name]) for name in set(names)}


def _matrix(telemetry: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """[rows, columns] float64, column by column (a list getitem would build a frame first)."""
    if not columns:
        return np.empty((len(telemetry), 0))
    return np.column_stack([telemetry[c].to_numpy(dtype="float64") for c in columns])


class LatestFeatures:
    """The spec's features at each device's latest reading; build once per model, call often.

    `matrix(telemetry, events)` equals `build_features(telemetry, spec, events)` at each
    device's last row, to rounding; `telemetry` validated and sorted by device then time.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._plan = _Plan(spec)

    def matrix(
        self, telemetry: pd.DataFrame, events: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(device per row, its latest timestamp, [devices, features] float32 in spec order)
        for validated telemetry (`normalise_telemetry`).

        A device with less than `spec.history` of readings (or fewer than `spec.min_readings`)
        is an error naming it.
        """
        spec = self.spec
        clean = CleanArrays(
            telemetry[spec.device_column].to_numpy(),
            telemetry[spec.time_column].to_numpy(dtype="datetime64[ns]"),
            _matrix(telemetry, spec.continuous_sensors),
            _matrix(telemetry, spec.boolean_sensors),
        )
        return self.from_arrays(clean, events)

    def from_arrays(
        self, telemetry: CleanArrays, events: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`matrix` for telemetry held as arrays, rows in (device, time) order; `events` need
        a device and an event-time (datetime64) column, in any order."""
        spec, plan = self.spec, self._plan
        if spec.time_since_failure and events is None:
            raise DataValidationError(
                "this model uses hours_since_failure: pass the failure events along with telemetry"
            )
        devices, stamps = telemetry.devices, telemetry.times
        times_ns = stamps.view(np.int64)
        continuous, booleans = telemetry.continuous, telemetry.booleans
        changes = np.flatnonzero(devices[1:] != devices[:-1]) + 1
        starts, ends = np.r_[0, changes], np.r_[changes, len(devices)]
        failures = (
            _failures_by_device(events, spec, devices[starts]) if spec.time_since_failure else {}
        )
        values = np.empty((len(starts), len(spec.feature_names)), dtype=np.float32)
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            device_times = times_ns[start:end]
            if (
                device_times[-1] - device_times[0] < plan.history_ns
                or end - start < plan.min_readings
            ):
                span = pd.Timedelta(int(device_times[-1] - device_times[0]))
                raise DataValidationError(
                    f"device '{devices[start]}' has {end - start} readings over {span}; "
                    f"scoring needs {spec.history} of history and at least "
                    f"{spec.min_readings} readings"
                )
            row = _device_row(
                plan,
                device_times,
                continuous[start:end],
                booleans[start:end],
                failures.get(devices[start]),
            )
            values[i] = [row[name] for name in spec.feature_names]
        return devices[ends - 1], stamps[ends - 1], values

    def frame(self, telemetry: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
        """`matrix` as a frame: device, time, then the spec's features (float32)."""
        devices, times, values = self.matrix(telemetry, events)
        features = pd.DataFrame(values, columns=self.spec.feature_names, copy=False)
        features.insert(0, self.spec.time_column, times)
        features.insert(0, self.spec.device_column, devices)
        return features


def latest_features(
    telemetry: pd.DataFrame, spec: FeatureSpec, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One feature row per device at its latest reading (`LatestFeatures(spec).frame`). Give
    at least `spec.serving_history` of recent readings per device (`spec.history`, or the
    time-since cap for hours_since_maintenance); more only costs time."""
    return LatestFeatures(spec).frame(telemetry, events)
