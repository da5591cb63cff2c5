"""Feature building speed and memory, against the naive pandas way, on the same data.

For each size, synthetic telemetry of N rows x 8 sensors (6 continuous, 2 boolean) is built
with the default config's feature families, twice in this process: by pdmflow
(`build_features`: window bounds found once, pandas' rolling kernels on them, whole devices in
chunks) and the naive way (`groupby().rolling()` per feature, `merge_asof` per lag,
`rolling().apply()` for the spectrum). The two tables are checked to agree, then the table
prints rows/s, peak memory (tracemalloc, numpy buffers included) over the feature table's size,
and the speed-up.

    python bench/features.py [--sizes 1000000 5000000 10000000] [--naive-up-to 5000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pdmflow.config import SyntheticSource, load_config  # noqa: E402
from pdmflow.data.synthetic import generate_fleet  # noqa: E402
from pdmflow.features.builder import CYCLES, FeatureSpec, build_features  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONTINUOUS = ["temperature", "vibration", "pressure", "current", "rpm", "power_consumption"]
BOOLEAN = ["pump_on", "alarm_active"]
ROWS_PER_DEVICE = 10_000


def fleet(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    devices = max(1, rows // ROWS_PER_DEVICE)
    settings = SyntheticSource(n_devices=devices, days=ROWS_PER_DEVICE / 48, sample_minutes=30)
    return generate_fleet(settings, CONTINUOUS, BOOLEAN)


def spec_for_bench() -> FeatureSpec:
    config = load_config(REPO / "configs" / "default.yaml")
    schema = config.schema_.model_copy(
        update={"continuous_sensors": CONTINUOUS, "boolean_sensors": BOOLEAN}
    )
    return FeatureSpec.from_config(config.model_copy(update={"schema_": schema}))


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator != 0)).fillna(0.0)


def naive_features(telemetry: pd.DataFrame, spec: FeatureSpec, events: pd.DataFrame):
    """The same features, written the way a notebook would: one groupby call per feature."""
    device, time_column = spec.device_column, spec.time_column
    frame = telemetry.sort_values([device, time_column]).reset_index(drop=True)
    groups = frame.groupby(device)
    out: dict[str, pd.Series] = {}

    def rolling(column: str, window: str, stat: str) -> pd.Series:
        series = frame.groupby(device).rolling(window, on=time_column)[column]
        return getattr(series, stat)().reset_index(drop=True)

    zscores = {}
    for sensor in spec.continuous_sensors:
        out[sensor] = frame[sensor]
        for lag in spec.lags:
            shifted = (
                frame[[device, time_column, sensor]]
                .assign(**{time_column: frame[time_column] + pd.Timedelta(lag)})
                .sort_values(time_column)
            )
            joined = (
                pd.merge_asof(
                    frame[[device, time_column]].reset_index().sort_values(time_column),
                    shifted,
                    on=time_column,
                    by=device,
                    direction="backward",
                )
                .set_index("index")
                .sort_index()
            )
            out[f"{sensor}_lag_{lag}"] = joined[sensor]
        diff_1 = groups[sensor].diff()
        out[f"{sensor}_diff_1"] = diff_1
        out[f"{sensor}_diff_2"] = diff_1.groupby(frame[device]).diff()
        out[f"{sensor}_pct_change"] = _ratio(diff_1, groups[sensor].shift().abs())
        for window in spec.windows:
            for stat in spec.rolling_statistics:
                out[f"{sensor}_roll_{window}_{stat}"] = rolling(sensor, window, stat).fillna(0.0)
        window = spec.zscore_window
        mean = rolling(sensor, window, "mean")
        std = rolling(sensor, window, "std").fillna(0.0)
        zscores[sensor] = _ratio(frame[sensor] - mean, std)
        out[f"{sensor}_zscore_{window}"] = zscores[sensor]
    for sensor in spec.boolean_sensors:
        out[sensor] = frame[sensor].astype(float)
        switches = groups[sensor].diff().abs().fillna(0.0)
        frame[f"__{sensor}_switch"] = switches
        for window in spec.windows:
            out[f"{sensor}_share_on_{window}"] = rolling(sensor, window, "mean")
            out[f"{sensor}_switches_{window}"] = rolling(f"__{sensor}_switch", window, "sum")
    for a, b in spec.interactions:
        out[f"{a}_times_{b}"] = frame[a] * frame[b]
        out[f"{a}_per_{b}"] = _ratio(frame[a], frame[b])
        out[f"{a}_minus_{b}"] = frame[a] - frame[b]
    stacked = pd.DataFrame(zscores)
    out["cross_sensor_abs_zscore_mean"] = stacked.abs().mean(axis=1)
    out["cross_sensor_abs_zscore_max"] = stacked.abs().max(axis=1)
    out["cross_sensor_zscore_std"] = stacked.std(axis=1, ddof=0)
    n = spec.spectral_window
    seconds = (frame[time_column] - frame[time_column].min()).dt.total_seconds()
    sample_seconds = seconds.groupby(frame[device]).diff(n - 1) / (n - 1)

    def spectrum(values: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.rfft(values - values.mean())) ** 2

    for sensor in spec.spectral_sensors:
        windows = groups[sensor].rolling(n)
        peak = windows.apply(lambda v: np.argmax(spectrum(v)[1:]) + 1, raw=True)
        energy = windows.apply(lambda v: spectrum(v)[1:].sum() / n, raw=True)
        out[f"{sensor}_dominant_frequency_hz"] = _ratio(
            peak.reset_index(drop=True) / n, sample_seconds
        )
        out[f"{sensor}_spectral_energy"] = energy.reset_index(drop=True)
    hour = frame[time_column].dt.hour + frame[time_column].dt.minute / 60
    parts = {
        "hour": hour,
        "day_of_week": frame[time_column].dt.day_of_week,
        "month": frame[time_column].dt.month - 1,
    }
    for unit, period in CYCLES:
        out[f"{unit}_sin"] = np.sin(2 * np.pi * parts[unit] / period)
        out[f"{unit}_cos"] = np.cos(2 * np.pi * parts[unit] / period)
    last_failure = (
        pd.merge_asof(
            frame[[device, time_column]].reset_index().sort_values(time_column),
            events.sort_values(spec.event_time_column),
            left_on=time_column,
            right_on=spec.event_time_column,
            by=device,
            direction="backward",
        )
        .set_index("index")
        .sort_index()
    )
    hours = (frame[time_column] - last_failure[spec.event_time_column]).dt.total_seconds() / 3600
    out["hours_since_failure"] = hours.clip(upper=spec.time_since_cap_hours).fillna(
        spec.time_since_cap_hours
    )
    keep = (frame[time_column] - groups[time_column].transform("min") >= spec.history) & (
        groups.cumcount() >= spec.min_readings - 1
    )
    return pd.DataFrame({name: out[name][keep].to_numpy() for name in spec.feature_names})


def measure(build):
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument(
        "--naive-up-to",
        type=int,
        default=1_000_000,
        help="largest size the naive baseline also runs on",
    )
    args = parser.parse_args()
    spec = spec_for_bench()
    gib = 1024**3
    print(
        f"{len(spec.feature_names)} features; python {sys.version.split()[0]}; "
        f"cores: {os.cpu_count()}"
    )
    header = (
        "| rows | pdmflow s | rows/s | peak GiB | table GiB | peak/table "
        "| naive s | naive peak GiB | speed-up |"
    )
    print(header)
    print("|---" * 9 + "|")
    timings = {}
    for rows in args.sizes:
        telemetry, events = fleet(rows)
        features, seconds, peak = measure(partial(build_features, telemetry, spec, events))
        table = features[spec.feature_names].memory_usage(index=False).sum()
        timings[rows] = seconds
        naive_cells = ("–", "–", "–")
        if rows <= args.naive_up_to:
            ours = features[spec.feature_names].to_numpy(dtype=np.float64)
            del features
            naive, naive_seconds, naive_peak = measure(
                partial(naive_features, telemetry, spec, events)
            )
            # Same features: the naive float64 table, rounded to our float32, agrees.
            np.testing.assert_allclose(naive.to_numpy(dtype=np.float32), ours, rtol=1e-5, atol=1e-5)
            del naive, ours
            naive_cells = (
                f"{naive_seconds:.1f}",
                f"{naive_peak / gib:.2f}",
                f"{naive_seconds / seconds:.1f}x",
            )
        else:
            del features
        print(
            f"| {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} | {peak / gib:.2f} "
            f"| {table / gib:.2f} | {peak / table:.2f} | " + " | ".join(naive_cells) + " |",
            flush=True,
        )
        del telemetry, events
    if len(timings) > 1:
        smallest, largest = min(timings), max(timings)
        print(
            f"scaling: {largest:,} rows took {timings[largest] / timings[smallest]:.1f}x the "
            f"time of {smallest:,} ({largest / smallest:.0f}x the rows)"
        )


if __name__ == "__main__":
    main()
