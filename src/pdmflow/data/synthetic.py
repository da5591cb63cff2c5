"""A seeded synthetic fleet whose sensors drift before each failure.

Every device has its own baseline per sensor. Failures arrive at random (exponential gaps with a
floor). In the `degradation_hours` before a failure a degradation level rises from 0 to 1 and
pushes each continuous sensor away from its baseline (up or down, by a sensor-specific amount)
and makes alarm-like boolean sensors fire more often. After the failure the device is repaired
and the level drops back to 0. Same seed, same fleet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.config import SyntheticSource
from pdmflow.data.labels import failure_within_horizon

FAILURE_TYPES = ("bearing", "seal", "motor", "electrical")
START = pd.Timestamp("2026-01-01 00:00:00")

# Baseline and spread of sensors users recognise; any other name gets a generic profile.
_KNOWN_SENSORS: dict[str, tuple[float, float]] = {
    "temperature": (70.0, 2.0),
    "vibration": (0.5, 0.05),
    "pressure": (100.0, 3.0),
    "current": (15.0, 0.6),
    "rpm": (1500.0, 20.0),
    "power_consumption": (45.0, 1.5),
    "flow_rate": (30.0, 1.0),
    "voltage": (400.0, 4.0),
}


def generate_fleet(
    settings: SyntheticSource,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
    device_column: str = "device_id",
    time_column: str = "timestamp",
    event_time_column: str = "event_time",
    target_column: str | None = None,
    horizon_hours: float = 24.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (telemetry, failure events) for a seeded fleet shaped by the given sensors.

    With `target_column`, the telemetry also carries a plant-style 0/1 indicator: 1 when the
    device fails within `horizon_hours`, else 0 (also at the end, where a plant cannot know).
    """
    rng = np.random.default_rng(settings.seed)
    step_hours = settings.sample_minutes / 60.0
    n_samples = int(settings.days * 24 / step_hours)
    telemetry_parts: list[pd.DataFrame] = []
    event_rows: list[dict[str, object]] = []

    # Each sensor degrades in its own direction and strength (in units of its spread).
    drift = {s: rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 5.0) for s in continuous_sensors}

    for device_index in range(settings.n_devices):
        device_id = f"D{device_index:04d}"
        # Irregular sampling: each interval is jittered by up to +/-10 %.
        gaps = step_hours * rng.uniform(0.9, 1.1, size=n_samples)
        hours = np.cumsum(gaps) - gaps[0]

        failure_hours = []
        mean_gap = settings.mean_days_between_failures * 24
        # A repaired device runs a while before it can fail again (at most two days).
        min_gap = min(48.0, 2 * settings.degradation_hours)
        t = rng.uniform(min(24.0, mean_gap / 2), mean_gap)
        while t < hours[-1]:
            failure_hours.append(t)
            t += min_gap + rng.exponential(mean_gap)
        failure_hours_arr = np.asarray(failure_hours)

        # Hours until the next failure (inf when none follows), then the degradation level.
        next_index = np.searchsorted(failure_hours_arr, hours, side="left")
        has_next = next_index < len(failure_hours_arr)
        time_to_failure = np.full(n_samples, np.inf)
        time_to_failure[has_next] = failure_hours_arr[next_index[has_next]] - hours[has_next]
        degradation = np.clip(1.0 - time_to_failure / settings.degradation_hours, 0.0, 1.0) ** 1.5

        columns: dict[str, object] = {
            device_column: device_id,
            time_column: START + pd.to_timedelta(hours, unit="h"),
        }
        for sensor in continuous_sensors:
            base, spread = _KNOWN_SENSORS.get(sensor, (50.0, 2.0))
            device_base = base + rng.normal(0, spread)
            noise = rng.normal(0, spread * settings.noise, size=n_samples)
            values = device_base + noise + drift[sensor] * spread * degradation
            if "vibration" in sensor:
                # A machine's own oscillation whose amplitude grows as it degrades.
                period_samples = rng.uniform(3.0, 6.0)
                phase = 2 * np.pi * np.arange(n_samples) / period_samples
                values = values + spread * (1 + 3 * degradation) * np.sin(phase)
            columns[sensor] = values
        for sensor in boolean_sensors:
            alarm_like = any(word in sensor for word in ("alarm", "fault", "warning"))
            if "maintenance" in sensor:
                rate = np.full(n_samples, 0.01)  # now and then, whatever the device's state
            else:
                base_rate = 0.03 if alarm_like else 0.9
                rate = base_rate + (0.6 if alarm_like else -0.3) * degradation
            columns[sensor] = rng.random(n_samples) < rate
        telemetry_parts.append(pd.DataFrame(columns))

        for failure_hour in failure_hours_arr:
            event_rows.append(
                {
                    device_column: device_id,
                    event_time_column: START + pd.to_timedelta(failure_hour, unit="h"),
                    "failure_type": FAILURE_TYPES[int(rng.integers(len(FAILURE_TYPES)))],
                }
            )

    telemetry = pd.concat(telemetry_parts, ignore_index=True)
    events = pd.DataFrame(event_rows, columns=[device_column, event_time_column, "failure_type"])
    if target_column:
        labels = failure_within_horizon(
            telemetry, events, horizon_hours, device_column, time_column, event_time_column
        )
        telemetry[target_column] = labels.fillna(0.0).astype(int)
    return telemetry, events
