"""A plant's fleet observed side by side over calendar time (the default synthetic history),
with a degradation before each failure or, with `component_failures`, one component's sign in
its own sensor. See the package docstring."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from pdmflow.config import SyntheticSource
from pdmflow.data.labels import failure_within_horizon

FAILURE_TYPES = ("bearing", "seal", "motor", "electrical")
START = pd.Timestamp("2026-01-01 00:00:00")

# Baseline and spread of sensors users recognise; any other name gets a generic profile.
KNOWN_SENSORS: dict[str, tuple[float, float]] = {
    "temperature": (70.0, 2.0),
    "vibration": (0.5, 0.05),
    "pressure": (100.0, 3.0),
    "current": (15.0, 0.6),
    "rpm": (1500.0, 20.0),
    "power_consumption": (45.0, 1.5),
    "flow_rate": (30.0, 1.0),
    "voltage": (400.0, 4.0),
    # The Azure PdM telemetry's hourly readings.
    "volt": (170.0, 15.0),
    "rotate": (446.0, 52.0),
}


def oscillation(rng: np.random.Generator, spread: float, level: np.ndarray) -> np.ndarray:
    """A machine's own oscillation whose amplitude grows with its degradation `level`."""
    period_samples = rng.uniform(3.0, 6.0)
    phase = 2 * np.pi * np.arange(len(level)) / period_samples
    return spread * (1 + 3 * level) * np.sin(phase)


def boolean_readings(rng: np.random.Generator, sensor: str, level: np.ndarray) -> np.ndarray:
    """On/off readings: alarm-like sensors fire more, others stay on less, as `level` rises."""
    if "maintenance" in sensor:
        rate = np.full(len(level), 0.01)  # now and then, whatever the device's state
    elif any(word in sensor for word in ("alarm", "fault", "warning")):
        rate = 0.03 + 0.6 * level
    else:
        rate = 0.9 - 0.3 * level
    return rng.random(len(level)) < rate


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

    With `settings.component_failures` there are as many components as continuous sensors; each
    failure's component is drawn at random (uniformly), named in the event's `failure_type` as
    `<sensor>_component`, and only that sensor degrades before it (and, when vibration-like,
    oscillates harder); boolean sensors stay at their healthy rates.

    With `target_column`, the telemetry also carries a plant-style 0/1 indicator: 1 when the
    device fails within `horizon_hours`, else 0 (also at the end, where a plant cannot know).
    """
    (fleet,) = fleet_groups(
        settings,
        continuous_sensors,
        boolean_sensors,
        device_column,
        time_column,
        event_time_column,
        target_column,
        horizon_hours,
        group_rows=None,
    )
    return fleet


def fleet_rows(settings: SyntheticSource) -> int:
    """How many readings `generate_fleet` gives."""
    return settings.n_devices * int(settings.days * 24 / (settings.sample_minutes / 60.0))


def fleet_groups(
    settings: SyntheticSource,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
    device_column: str = "device_id",
    time_column: str = "timestamp",
    event_time_column: str = "event_time",
    target_column: str | None = None,
    horizon_hours: float = 24.0,
    group_rows: int | None = None,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """`generate_fleet`'s (telemetry, events) in groups of whole devices, in device order, of
    `group_rows` readings or more (the last one fewer; None: one group). Concatenated, the
    groups are `generate_fleet`'s frames: a fleet too large for memory is made a group at a
    time, the same readings for the same seed."""
    rng = np.random.default_rng(settings.seed)
    step_hours = settings.sample_minutes / 60.0
    n_samples = int(settings.days * 24 / step_hours)
    telemetry_parts: list[pd.DataFrame] = []
    event_rows: list[dict[str, object]] = []

    def group() -> tuple[pd.DataFrame, pd.DataFrame]:
        telemetry = pd.concat(telemetry_parts, ignore_index=True)
        columns = [device_column, event_time_column, "failure_type"]
        events = pd.DataFrame(event_rows, columns=columns)
        if target_column:
            labels = failure_within_horizon(
                telemetry, events, horizon_hours, device_column, time_column, event_time_column
            )
            telemetry[target_column] = labels.fillna(0.0).astype(int)
        telemetry_parts.clear()
        event_rows.clear()
        return telemetry, events

    # Ids as wide as the largest (D0000 ... D9999, D00000 ... past 10,000 devices): their
    # order as text, which validation sorts by, is the order they are made in.
    digits = max(4, len(str(settings.n_devices - 1)))
    # Each sensor degrades in its own direction and strength (in units of its spread).
    drift = {s: rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 5.0) for s in continuous_sensors}

    for device_index in range(settings.n_devices):
        device_id = f"D{device_index:0{digits}d}"
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
        if settings.component_failures:
            # Which continuous sensor each failure shows in (drawn only in this shape, so the
            # plain fleet's data stay what they were for the same seed).
            components = rng.integers(len(continuous_sensors), size=len(failure_hours_arr))

        # Hours until the next failure (inf when none follows), then the degradation level.
        next_index = np.searchsorted(failure_hours_arr, hours, side="left")
        has_next = next_index < len(failure_hours_arr)
        time_to_failure = np.full(n_samples, np.inf)
        time_to_failure[has_next] = failure_hours_arr[next_index[has_next]] - hours[has_next]
        degradation = np.clip(1.0 - time_to_failure / settings.degradation_hours, 0.0, 1.0) ** 1.5
        if settings.component_failures:
            next_component = np.full(n_samples, -1)
            next_component[has_next] = components[next_index[has_next]]

        columns: dict[str, object] = {
            device_column: device_id,
            time_column: START + pd.to_timedelta(hours, unit="h"),
        }
        for index, sensor in enumerate(continuous_sensors):
            base, spread = KNOWN_SENSORS.get(sensor, (50.0, 2.0))
            device_base = base + rng.normal(0, spread)
            noise = rng.normal(0, spread * settings.noise, size=n_samples)
            level = (
                np.where(next_component == index, degradation, 0.0)
                if settings.component_failures
                else degradation
            )
            values = device_base + noise + drift[sensor] * spread * level
            if "vibration" in sensor:
                values = values + oscillation(rng, spread, level)
            columns[sensor] = values
        alarm_level = np.zeros(n_samples) if settings.component_failures else degradation
        for sensor in boolean_sensors:
            columns[sensor] = boolean_readings(rng, sensor, alarm_level)
        telemetry_parts.append(pd.DataFrame(columns))

        for number, failure_hour in enumerate(failure_hours_arr):
            if settings.component_failures:
                failure_type = f"{continuous_sensors[components[number]]}_component"
            else:
                failure_type = FAILURE_TYPES[int(rng.integers(len(FAILURE_TYPES)))]
            event_rows.append(
                {
                    device_column: device_id,
                    event_time_column: START + pd.to_timedelta(failure_hour, unit="h"),
                    "failure_type": failure_type,
                }
            )
        if group_rows is not None and len(telemetry_parts) * n_samples >= group_rows:
            yield group()
    if telemetry_parts or group_rows is None:
        yield group()


def with_target(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    target_column: str | None,
    horizon_hours: float,
    device_column: str,
    time_column: str,
    event_time_column: str,
) -> pd.DataFrame:
    """The telemetry with a plant-style 0/1 'fails within the horizon' column, when asked for."""
    if target_column:
        labels = failure_within_horizon(
            telemetry, events, horizon_hours, device_column, time_column, event_time_column
        )
        telemetry[target_column] = labels.fillna(0.0).astype(int)
    return telemetry
