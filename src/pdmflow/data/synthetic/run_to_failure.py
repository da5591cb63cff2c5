"""A run-to-failure fleet (like the C-MAPSS turbofan test fleets): every device starts at the
same time with its own initial wear, wears out ever faster, and runs until its one failure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.config import SyntheticSource
from pdmflow.data.synthetic.fleet import (
    FAILURE_TYPES,
    KNOWN_SENSORS,
    START,
    boolean_readings,
    oscillation,
    with_target,
)

# Run-to-failure lifetimes: `days` times a log-normal factor, kept inside [0.5, 2].
LIFETIME_SIGMA = 0.35
LIFETIME_RANGE = (0.5, 2.0)
# New units are not pristine (C-MAPSS: "different degrees of initial wear").
INITIAL_WEAR_MAX = 0.3
# Share of the wear that comes in the late, faster phase (the last degradation_hours).
LATE_WEAR_SHARE = 0.4


def generate_run_to_failure(
    settings: SyntheticSource,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
    device_column: str = "device_id",
    time_column: str = "timestamp",
    event_time_column: str = "event_time",
    target_column: str | None = None,
    horizon_hours: float = 24.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (telemetry, failure events) of a seeded run-to-failure fleet.

    All `n_devices` devices start at the same time. Each has a lifetime of `days` times a
    log-normal factor kept within [0.5, 2] and an initial wear in [0, 0.3]. Wear only grows: a
    slow, convex part over the whole life (a normalised gamma process, squared) plus a late,
    faster part over the last `degradation_hours`; it reaches 1 at the failure. Each continuous
    sensor drifts with wear (direction, strength and curvature of its own) plus noise, except
    a third of the sensors (rounded; never all of them), which carry no information at all.
    Alarm-like boolean sensors fire more often in the late phase. Readings come every
    `sample_minutes` (jittered by up to +/-5 %); each device has exactly one failure event, one
    `sample_minutes` after its last reading, and no readings after it.
    `mean_days_between_failures` is not used.
    """
    rng = np.random.default_rng(settings.seed)
    step_hours = settings.sample_minutes / 60.0
    mean_life_hours = settings.days * 24
    n_sensors = len(continuous_sensors)
    drift = rng.choice([-1.0, 1.0], size=n_sensors) * rng.uniform(2.5, 5.0, size=n_sensors)
    curvature = rng.uniform(1.5, 3.0, size=n_sensors)
    # About a third of the sensors carry no information (C-MAPSS has flat and noisy ones too).
    informative = np.ones(n_sensors, dtype=bool)
    n_uninformative = max(0, min(n_sensors - 1, round(n_sensors / 3)))
    informative[rng.choice(n_sensors, size=n_uninformative, replace=False)] = False
    drift = np.where(informative, drift, 0.0)
    telemetry_parts: list[pd.DataFrame] = []
    event_rows: list[dict[str, object]] = []

    for device_index in range(settings.n_devices):
        device_id = f"D{device_index:04d}"
        factor = np.clip(rng.lognormal(0.0, LIFETIME_SIGMA), *LIFETIME_RANGE)
        n_samples = max(3, int(mean_life_hours * factor / step_hours))
        gaps = step_hours * rng.uniform(0.95, 1.05, size=n_samples)
        hours = np.cumsum(gaps) - gaps[0]
        failure_hour = hours[-1] + step_hours
        # Slow wear: gamma increments (wear never goes back), normalised to end at 1, squared.
        increments = rng.gamma(2.0, 1.0, size=n_samples)
        slow = (np.cumsum(increments) / increments.sum()) ** 2
        late_span = min(settings.degradation_hours, failure_hour)
        late = np.clip(1.0 - (failure_hour - hours) / late_span, 0.0, 1.0) ** 2
        initial_wear = rng.uniform(0.0, INITIAL_WEAR_MAX)
        wear = initial_wear + (1 - initial_wear) * (
            (1 - LATE_WEAR_SHARE) * slow + LATE_WEAR_SHARE * late
        )

        columns: dict[str, object] = {
            device_column: device_id,
            time_column: START + pd.to_timedelta(hours, unit="h"),
        }
        for index, sensor in enumerate(continuous_sensors):
            base, spread = KNOWN_SENSORS.get(sensor, (50.0, 2.0))
            device_base = base + rng.normal(0, spread)
            noise = rng.normal(0, spread * settings.noise, size=n_samples)
            values = device_base + noise + drift[index] * spread * wear ** curvature[index]
            if "vibration" in sensor:
                values = values + oscillation(rng, spread, wear * informative[index])
            columns[sensor] = values
        for sensor in boolean_sensors:
            columns[sensor] = boolean_readings(rng, sensor, late)
        telemetry_parts.append(pd.DataFrame(columns))
        event_rows.append(
            {
                device_column: device_id,
                event_time_column: START + pd.to_timedelta(failure_hour, unit="h"),
                "failure_type": FAILURE_TYPES[int(rng.integers(len(FAILURE_TYPES)))],
            }
        )

    telemetry = pd.concat(telemetry_parts, ignore_index=True)
    events = pd.DataFrame(event_rows, columns=[device_column, event_time_column, "failure_type"])
    telemetry = with_target(
        telemetry,
        events,
        target_column,
        horizon_hours,
        device_column,
        time_column,
        event_time_column,
    )
    return telemetry, events
