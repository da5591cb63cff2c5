"""Feature families computed per device from the past only, and the spec serving reuses.

Every feature at reading t of a device uses that device's readings at t and before (and failure
events at or before t), never after. Lags are time offsets (the last reading at or before
t - lag); rolling windows are time windows (t - w, t]. A device's readings less than the longest
lag or window after its first reading lack a full history: they are dropped in training and
refused in serving, never padded.

All windows are computed in one vectorised pass over the whole fleet: the window bounds of every
row are found once with a binary search over a (device, time) key, and pandas' rolling kernels
run on those bounds (`pandas.api.indexers.BaseIndexer`), so no Python loop runs per device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pandas.api.indexers import BaseIndexer

from pdmflow.errors import DataValidationError
from pdmflow.features.spec import CYCLES, FeatureSpec


class _Bounds(BaseIndexer):
    """Precomputed [start, end) row bounds handed to pandas' rolling kernels."""

    def get_window_bounds(
        self, num_values=0, min_periods=None, center=None, closed=None, step=None
    ):
        return self.start, self.end


class _FleetClock:
    """Row positions in time, per device, for a frame sorted by device then time."""

    def __init__(self, device: pd.Series, times: pd.Series) -> None:
        codes = pd.factorize(device, sort=False)[0]
        # Nanoseconds since the fleet's first reading: window edges compare exactly as pandas'.
        self.elapsed_ns = (times - times.min()).to_numpy(dtype="timedelta64[ns]").astype(np.int64)
        self.row = np.arange(len(codes), dtype=np.int64)
        first = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.array([], bool)
        self.device_start = np.maximum.accumulate(np.where(first, self.row, 0))
        self.position = self.row - self.device_start
        self.first_elapsed_ns = self.elapsed_ns[self.device_start]
        starts = np.flatnonzero(first)
        self.device_ranges = list(zip(starts, np.r_[starts[1:], len(codes)], strict=True))

    def _search(self, offset: str, side: str) -> np.ndarray:
        """Per row: searchsorted(device's times, t - offset), as a row number."""
        shift = int(pd.Timedelta(offset).value)
        found = np.empty(len(self.row), dtype=np.int64)
        # One binary search per device over its own readings (a loop over devices, not rows).
        for begin, end in self.device_ranges:
            times = self.elapsed_ns[begin:end]
            found[begin:end] = begin + np.searchsorted(times, times - shift, side=side)
        return found

    def window(self, span: str) -> _Bounds:
        """Bounds of (t - span, t] within each row's device."""
        return _Bounds(start=self._search(span, "right"), end=self.row + 1)

    def as_of(self, lag: str) -> np.ndarray:
        """Row of the last reading at or before t - lag (-1 when the device has none)."""
        found = self._search(lag, "right") - 1
        return np.where(found >= self.device_start, found, -1)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (documented rule)."""
    out = np.zeros_like(numerator, dtype="float64")
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _spectral(values: np.ndarray, seconds: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Dominant frequency (Hz) and spectral energy of the last n readings at every row."""
    dominant = np.full(len(values), np.nan)
    energy = np.full(len(values), np.nan)
    if len(values) < n:
        return dominant, energy
    windows = sliding_window_view(values, n)
    spans = seconds[n - 1 :] - seconds[: len(seconds) - n + 1]
    chunk = 500_000  # bounds the complex FFT buffer on 10M-row fleets
    for begin in range(0, len(windows), chunk):
        block = windows[begin : begin + chunk]
        power = np.abs(np.fft.rfft(block - block.mean(axis=1, keepdims=True), axis=1)) ** 2
        rows = slice(begin + n - 1, begin + n - 1 + len(block))
        sample_seconds = spans[begin : begin + chunk] / (n - 1)
        peak = np.argmax(power[:, 1:], axis=1) + 1
        dominant[rows] = _safe_divide(peak / n, sample_seconds)
        energy[rows] = power[:, 1:].sum(axis=1) / n
    return dominant, energy


def _time_since_failure(
    clock: _FleetClock,
    device: pd.Series,
    times: pd.Series,
    events: pd.DataFrame | None,
    spec: FeatureSpec,
) -> np.ndarray:
    """Hours since the device's last failure at or before t, capped (also when none is known)."""
    cap = spec.time_since_cap_hours
    result = np.full(len(times), cap)
    if events is None or events.empty:
        return result
    time_values = times.to_numpy(dtype="datetime64[ns]")
    failures = events.groupby(spec.device_column)[spec.event_time_column]
    starts = np.flatnonzero(clock.position == 0)
    ends = np.r_[starts[1:], len(time_values)]
    for start, end in zip(starts, ends, strict=True):
        name = device.iat[start]
        if name not in failures.groups:
            continue
        known = np.sort(failures.get_group(name).to_numpy(dtype="datetime64[ns]"))
        device_times = time_values[start:end]
        found = np.searchsorted(known, device_times, side="right") - 1
        hours = (device_times - known[np.maximum(found, 0)]) / np.timedelta64(1, "h")
        result[start:end] = np.where(found >= 0, np.minimum(hours, cap), cap)
    return result


def _full_history(clock: _FleetClock, spec: FeatureSpec) -> np.ndarray:
    """Rows whose device has `history` of time and `min_readings` readings behind them."""
    return (clock.elapsed_ns - clock.first_elapsed_ns >= spec.history.value) & (
        clock.position >= spec.min_readings - 1
    )


def device_chunks(
    device_starts: np.ndarray, rows: int, rows_per_chunk: int
) -> list[tuple[int, int]]:
    """[start, end) ranges of whole devices, about `rows_per_chunk` rows each (a chunk holds at
    least one device), for `rows` rows sorted by device whose devices begin at `device_starts`
    (ascending, the first 0)."""
    if rows == 0:
        return []
    chunks, begin = [], 0
    for start in device_starts[1:]:
        if start - begin >= rows_per_chunk:
            chunks.append((begin, int(start)))
            begin = int(start)
    chunks.append((begin, rows))
    return chunks


def build_features(
    telemetry: pd.DataFrame,
    spec: FeatureSpec,
    events: pd.DataFrame | None = None,
    rows_per_chunk: int = 200_000,
) -> pd.DataFrame:
    """Feature rows (device, time, features in spec order) for every reading with full history.

    `telemetry` must be validated: sorted by device then time, no missing sensor values. The
    result keeps the telemetry's index for the rows it keeps, so labels can be joined on it.
    Features are float32, the precision the ONNX model computes in. Whole devices are processed
    in chunks of about `rows_per_chunk` rows, so the working memory beyond the result stays
    bounded however large the fleet is.
    """
    device, times = telemetry[spec.device_column], telemetry[spec.time_column]
    clock = _FleetClock(device, times)
    keep = _full_history(clock, spec)
    values = np.empty((int(keep.sum()), len(spec.feature_names)), dtype=np.float32)
    written = 0
    starts = np.flatnonzero(clock.position == 0)
    for begin, end in device_chunks(starts, len(clock.position), rows_per_chunk):
        chunk = telemetry.iloc[begin:end]
        columns = _feature_columns(chunk, spec, events)
        chunk_keep = keep[begin:end]
        kept = int(chunk_keep.sum())
        for j, name in enumerate(spec.feature_names):
            values[written : written + kept, j] = columns[name][chunk_keep]
        written += kept
    # copy=False: pandas 3 would otherwise copy the whole table once more.
    features = pd.DataFrame(
        values, columns=spec.feature_names, index=telemetry.index[keep], copy=False
    )
    features.insert(0, spec.time_column, times.to_numpy()[keep])
    features.insert(0, spec.device_column, device.to_numpy()[keep])
    return features


def _feature_columns(
    telemetry: pd.DataFrame, spec: FeatureSpec, events: pd.DataFrame | None
) -> dict[str, np.ndarray]:
    """Every feature column (float64) for every row of whole devices."""
    device, times = telemetry[spec.device_column], telemetry[spec.time_column]
    clock = _FleetClock(device, times)
    columns: dict[str, np.ndarray] = {}
    continuous = telemetry[spec.continuous_sensors].astype("float64")
    bounds = {window: clock.window(window) for window in spec.windows}
    # Only the statistics the model reads (after selection), plus the z-score window's mean
    # and std, which z-scores and cross-sensor statistics need.
    needed = set(spec.feature_names)
    zscore_window = spec.zscore_window
    rolled = {
        window: {
            stat: getattr(continuous.rolling(bounds[window], min_periods=1), stat)()
            for stat in spec.rolling_statistics
            if any(name.endswith(f"_roll_{window}_{stat}") for name in needed)
            or (window == zscore_window and stat in ("mean", "std"))
        }
        for window in spec.windows
    }
    if "mean" not in rolled[zscore_window] or "std" not in rolled[zscore_window]:
        for stat in ("mean", "std"):
            rolled[zscore_window][stat] = getattr(
                continuous.rolling(bounds[zscore_window], min_periods=1), stat
            )()
    zscores = {}
    for sensor in spec.continuous_sensors:
        values = continuous[sensor].to_numpy()
        columns[sensor] = values
        for lag in spec.lags:
            columns[f"{sensor}_lag_{lag}"] = values[clock.as_of(lag)]
        if spec.differences:
            previous = np.r_[np.nan, values[:-1]]
            diff_1 = values - previous
            columns[f"{sensor}_diff_1"] = diff_1
            columns[f"{sensor}_diff_2"] = diff_1 - np.r_[np.nan, diff_1[:-1]]
            columns[f"{sensor}_pct_change"] = _safe_divide(diff_1, np.abs(previous))
        for window in spec.windows:
            for stat in spec.rolling_statistics:
                name = f"{sensor}_roll_{window}_{stat}"
                if name in needed:
                    # std/skew/kurt are undefined on too few readings: 0 by rule, not NaN.
                    columns[name] = rolled[window][stat][sensor].fillna(0.0).to_numpy()
        window = spec.zscore_window
        zscore = _safe_divide(
            values - rolled[window]["mean"][sensor].to_numpy(),
            rolled[window]["std"][sensor].fillna(0.0).to_numpy(),
        )
        zscores[sensor] = zscore
        columns[f"{sensor}_zscore_{window}"] = zscore
    for sensor in spec.boolean_sensors:
        values = telemetry[sensor].astype("float64")
        columns[sensor] = values.to_numpy()
        switched = values.diff().abs().fillna(0.0)
        switched[clock.position == 0] = 0.0
        for window in spec.windows:
            columns[f"{sensor}_share_on_{window}"] = (
                values.rolling(bounds[window], min_periods=1).mean().to_numpy()
            )
            columns[f"{sensor}_switches_{window}"] = (
                switched.rolling(bounds[window], min_periods=1).sum().to_numpy()
            )
    for a, b in spec.interactions:
        first, second = continuous[a].to_numpy(), continuous[b].to_numpy()
        columns[f"{a}_times_{b}"] = first * second
        columns[f"{a}_per_{b}"] = _safe_divide(first, second)
        columns[f"{a}_minus_{b}"] = first - second
    if spec.cross_sensor:
        stacked = np.column_stack(list(zscores.values()))
        columns["cross_sensor_abs_zscore_mean"] = np.abs(stacked).mean(axis=1)
        columns["cross_sensor_abs_zscore_max"] = np.abs(stacked).max(axis=1)
        columns["cross_sensor_zscore_std"] = stacked.std(axis=1)
    seconds = clock.elapsed_ns / 1e9
    for sensor in spec.spectral_sensors:
        if not {f"{sensor}_dominant_frequency_hz", f"{sensor}_spectral_energy"} & needed:
            continue
        dominant, energy = _spectral(continuous[sensor].to_numpy(), seconds, spec.spectral_window)
        columns[f"{sensor}_dominant_frequency_hz"] = dominant
        columns[f"{sensor}_spectral_energy"] = energy
    if spec.cyclical:
        parts = {
            "hour": times.dt.hour + times.dt.minute / 60,
            "day_of_week": times.dt.day_of_week,
            "month": times.dt.month - 1,
        }
        for unit, period in CYCLES:
            angle = 2 * np.pi * parts[unit].to_numpy(dtype="float64") / period
            columns[f"{unit}_sin"], columns[f"{unit}_cos"] = np.sin(angle), np.cos(angle)
    if spec.time_since_failure:
        columns["hours_since_failure"] = _time_since_failure(clock, device, times, events, spec)
    if spec.maintenance_sensor:
        on = telemetry[spec.maintenance_sensor].to_numpy(dtype="float64") > 0
        # The latest row at or before each row, within its device, where the sensor was on.
        last_on = np.maximum.accumulate(np.where(on, clock.row, -1))
        seen = last_on >= clock.device_start
        hours = (clock.elapsed_ns - clock.elapsed_ns[np.maximum(last_on, 0)]) / 3.6e12
        columns["hours_since_maintenance"] = np.where(
            seen, np.minimum(hours, spec.time_since_cap_hours), spec.time_since_cap_hours
        )

    return columns


def latest_features(
    telemetry: pd.DataFrame, spec: FeatureSpec, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One feature row per device, at its latest reading; `telemetry` validated and sorted.

    Built by exactly the training code over the history given, so a device's latest row is
    bit for bit what training computes from the same readings. Give at least `spec.history`
    of recent readings per device; more only costs time.
    """
    if spec.time_since_failure and events is None:
        raise DataValidationError(
            "this model uses hours_since_failure: pass the failure events along with telemetry"
        )
    device, times = telemetry[spec.device_column], telemetry[spec.time_column]
    last_rows = telemetry.groupby(device, sort=False).tail(1).index
    features = build_features(telemetry, spec, events)
    features = features[features.index.isin(last_rows)]
    scored = set(features[spec.device_column])
    missing = [d for d in pd.unique(device) if d not in scored]
    if missing:
        span = times[device == missing[0]]
        raise DataValidationError(
            f"device '{missing[0]}' has {len(span)} readings over {span.max() - span.min()}; "
            f"scoring needs {spec.history} of history and at least {spec.min_readings} readings"
        )
    return features.reset_index(drop=True)
