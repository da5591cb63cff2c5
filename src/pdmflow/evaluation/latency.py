"""Serving latency measured the way serving code meets it, on the model as it is loaded there.

Three figures, each timed over repeated calls after a warm-up:
- `latency_pyfunc_*`: `mlflow.pyfunc.load_model(uri).predict` on one feature row;
- `latency_device_*`: `FailureScorer.score_telemetry` for one device from the raw readings
  its features need (validation, features of its latest reading, the model): what an alerting
  system waits for, and what the `max_latency_p99_ms` gate reads;
- `latency_batch_*` and `throughput_devices_per_s`: one `score_telemetry` call for a fleet of
  `batch_devices` devices.
The bare ONNX Runtime session on one row (`latency_onnx_*`) is kept as context: the floor the
three stand on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pdmflow.features.builder import FeatureSpec

if TYPE_CHECKING:  # serving imports evaluation (explain); the step hands the scorer in
    from pdmflow.serving import FailureScorer

WARM_UP = 10


def timed_ms(call: Callable[[int], object], repeats: int) -> np.ndarray:
    """Wall time of `call(i)` for i in 0..repeats-1, in ms, after a short warm-up."""
    for i in range(min(WARM_UP, repeats)):
        call(i)
    timings = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        timings[i] = (time.perf_counter() - start) * 1000
    return timings


def percentiles(prefix: str, timings: np.ndarray) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": float(np.percentile(timings, 50)),
        f"{prefix}_p99_ms": float(np.percentile(timings, 99)),
    }


def recent_readings(
    telemetry: pd.DataFrame, spec: FeatureSpec, margin_readings: int = 2
) -> dict[str, pd.DataFrame]:
    """Per device, the raw readings its latest reading's features need: `spec.serving_history`
    back (and `spec.min_readings`), plus a couple more so the window edge is covered."""
    device, time_column = spec.device_column, spec.time_column
    needed = {}
    for name, readings in telemetry.groupby(device, sort=False):
        cut = readings[time_column].iloc[-1] - spec.serving_history
        first = int(np.searchsorted(readings[time_column].to_numpy(), cut.to_datetime64()))
        first = max(0, min(first, len(readings) - spec.min_readings) - margin_readings)
        needed[str(name)] = readings.iloc[first:].reset_index(drop=True)
    return needed


def fleet_of(
    readings: dict[str, pd.DataFrame],
    events: pd.DataFrame | None,
    spec: FeatureSpec,
    devices: int,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A fleet of `devices` devices made of the given devices' readings (and their failure
    events), repeated under new device names."""
    sources = list(readings)
    frames, event_frames = [], []
    for i in range(devices):
        source = sources[i % len(sources)]
        name = f"{source}-copy-{i:05d}"
        frames.append(readings[source].assign(**{spec.device_column: name}))
        if events is not None:
            own = events[events[spec.device_column].astype(str) == source]
            event_frames.append(own.assign(**{spec.device_column: name}))
    fleet = pd.concat(frames, ignore_index=True)
    fleet_events = pd.concat(event_frames, ignore_index=True) if events is not None else None
    return fleet, fleet_events


def serving_latency(
    scorer: FailureScorer,
    feature_rows: np.ndarray,
    telemetry: pd.DataFrame,
    events: pd.DataFrame | None,
    onnx_predict_one: Callable[[np.ndarray], object],
    repeats: int = 300,
    device_repeats: int = 200,
    batch_devices: int = 1000,
    batch_repeats: int = 3,
) -> dict[str, float]:
    """The serving figures (see the module docstring) for `scorer`'s model.

    `feature_rows` are test feature rows (model input order); `telemetry` / `events` the raw
    readings and failure events of the test devices, validated.
    """
    rows = np.asarray(feature_rows, dtype=np.float32)
    one_row = [rows[i % len(rows)][None, :] for i in range(repeats)]
    metrics = percentiles("latency_onnx", timed_ms(lambda i: onnx_predict_one(one_row[i]), repeats))
    # pyfunc as its callers hold the rows: in the signature's dtype (float64 from pandas).
    as_called = [row.astype(scorer.input_dtype) for row in one_row]
    metrics.update(
        percentiles(
            "latency_pyfunc", timed_ms(lambda i: scorer.model.predict(as_called[i]), repeats)
        )
    )
    spec = scorer.spec
    readings = recent_readings(telemetry, spec)
    names = list(readings)
    per_device_events = {
        name: events[events[spec.device_column].astype(str) == name] if events is not None else None
        for name in names
    }

    def one_device(i: int) -> object:
        name = names[i % len(names)]
        return scorer.score_telemetry(readings[name], per_device_events[name])

    metrics.update(percentiles("latency_device", timed_ms(one_device, device_repeats)))
    fleet, fleet_events = fleet_of(readings, events, spec, batch_devices)
    batch = timed_ms(lambda i: scorer.score_telemetry(fleet, fleet_events), batch_repeats)
    metrics.update(percentiles("latency_batch", batch))
    metrics["throughput_devices_per_s"] = float(batch_devices / (np.median(batch) / 1000))
    metrics["latency_batch_devices"] = float(batch_devices)
    return metrics
