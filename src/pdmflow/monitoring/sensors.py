"""Sensor health of the fleet in the newest window: which devices' scores are unreliable now."""

from __future__ import annotations

import pandas as pd

from pdmflow.features.builder import FeatureSpec
from pdmflow.serving.health import HEALTHY, sensor_health


def recent_sensor_health(
    telemetry: pd.DataFrame, spec: FeatureSpec, window_start: pd.Timestamp
) -> dict[str, str]:
    """device -> `sensor_health` at its latest reading, for every device with a reading after
    `window_start`; `telemetry` typed and sorted by device then time with its gaps (NaN) and
    out-of-range readings kept (`serving.scorer.validate_for_spec`)."""
    device, time = spec.device_column, spec.time_column
    recent = telemetry[device][telemetry[time] > window_start].unique()
    health = sensor_health(telemetry[telemetry[device].isin(recent)], spec)
    return {str(name): str(flags) for name, flags in health.items()}


def unhealthy_count(health: dict[str, str]) -> int:
    """Devices whose sensor health is not `ok`."""
    return sum(flags != HEALTHY for flags in health.values())
