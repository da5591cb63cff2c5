"""Labels derived from failure events: fails within H, remaining useful life, health status.

`failure_within_horizon`: 1 when the device fails in (t, t + H], 0 when it does not and the
device is still observed at t + H. A row whose horizon runs past the device's last reading with
no failure in between is *censored*: we cannot know its label, so it is NaN and dropped from
training and evaluation rather than silently called healthy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig


def failure_within_horizon(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    horizon_hours: float,
    device_column: str,
    time_column: str,
    event_time_column: str,
) -> pd.Series:
    """Binary label per telemetry row (float: 1.0, 0.0, or NaN when censored)."""
    horizon = pd.Timedelta(hours=horizon_hours)
    labels = np.full(len(telemetry), np.nan)
    event_times = events.groupby(events[device_column])[event_time_column].apply(
        lambda s: np.sort(s.to_numpy(dtype="datetime64[ns]"))
    )
    positions = telemetry.groupby(device_column, sort=False).indices
    for device, rows in positions.items():
        times = telemetry[time_column].to_numpy(dtype="datetime64[ns]")[rows]
        failures = event_times.get(device, np.array([], dtype="datetime64[ns]"))
        next_index = np.searchsorted(failures, times, side="right")
        has_next = next_index < len(failures)
        next_failure = np.full(len(times), np.datetime64("NaT"), dtype="datetime64[ns]")
        next_failure[has_next] = failures[next_index[has_next]]
        fails_soon = has_next & (next_failure - times <= horizon)
        # Healthy is known when a later failure or a later reading lies beyond the horizon.
        known_healthy = has_next | (times + horizon <= times.max())
        device_labels = np.where(fails_soon, 1.0, np.where(known_healthy, 0.0, np.nan))
        labels[rows] = device_labels
    return pd.Series(labels, index=telemetry.index, name="failure_within_horizon")


def remaining_useful_life(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    cap_hours: float,
    device_column: str,
    time_column: str,
    event_time_column: str,
) -> pd.Series:
    """Hours to the device's next failure, capped at `cap_hours`.

    With no later failure on record the RUL is known to be at least the time the device is still
    observed; once that reaches the cap the label is the cap, before that it is censored (NaN).
    """
    labels = np.full(len(telemetry), np.nan)
    event_times = events.groupby(events[device_column])[event_time_column].apply(
        lambda s: np.sort(s.to_numpy(dtype="datetime64[ns]"))
    )
    hour = np.timedelta64(1, "h")
    for device, rows in telemetry.groupby(device_column, sort=False).indices.items():
        times = telemetry[time_column].to_numpy(dtype="datetime64[ns]")[rows]
        failures = event_times.get(device, np.array([], dtype="datetime64[ns]"))
        next_index = np.searchsorted(failures, times, side="right")
        has_next = next_index < len(failures)
        rul = np.full(len(times), np.nan)
        rul[has_next] = (failures[next_index[has_next]] - times[has_next]) / hour
        observed = (times.max() - times) / hour
        rul = np.where(has_next, np.minimum(rul, cap_hours), np.nan)
        rul = np.where(~has_next & (observed >= cap_hours), cap_hours, rul)
        labels[rows] = rul
    return pd.Series(labels, index=telemetry.index, name="remaining_useful_life_hours")


def health_status(rul_hours: pd.Series, critical_hours: float, warning_hours: float) -> pd.Series:
    """critical (RUL < critical_hours), warning (< warning_hours), normal; NaN RUL stays unknown."""
    status = np.where(
        rul_hours < critical_hours,
        "critical",
        np.where(rul_hours < warning_hours, "warning", "normal"),
    )
    return pd.Series(status, index=rul_hours.index, name="health_status").where(rul_hours.notna())


def make_labels(
    telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig, label: str
) -> pd.DataFrame:
    """The task's label column `label` per telemetry row (plus health status for RUL)."""
    schema, labels = config.schema_, config.labels
    columns = (schema.device_column, schema.time_column, schema.event_time_column)
    if config.task == "regression":
        rul = remaining_useful_life(telemetry, events, labels.rul_cap_hours, *columns)
        return pd.DataFrame(
            {
                label: rul,
                "health_status": health_status(rul, labels.critical_hours, labels.warning_hours),
            }
        )
    if labels.target_column:
        return pd.DataFrame({label: telemetry[labels.target_column].astype("float64")})
    within = failure_within_horizon(telemetry, events, labels.horizon_hours, *columns)
    return within.rename(label).to_frame()
