"""Seeded synthetic histories in the three shapes the product must handle.

- `generate_fleet` (the default, a plant's fleet observed side by side over calendar time):
  every device has its own baseline per sensor. Failures arrive at random (exponential gaps with
  a floor). In the `degradation_hours` before a failure a degradation level rises from 0 to 1
  and pushes each continuous sensor away from its baseline (up or down, by a sensor-specific
  amount) and makes alarm-like boolean sensors fire more often. After the failure the device is
  repaired and the level drops back to 0.
- `generate_fleet` with `source.synthetic.component_failures: true` (like the Azure PdM
  telemetry): the same fleet, but each failure is of one component, and component i shows only
  in continuous sensor i; the other sensors (boolean ones too) carry no sign of it.
- `generate_run_to_failure` (`source.synthetic.run_to_failure: true`, like the C-MAPSS turbofan
  test fleets): every device starts at the same time with its own initial wear, wears out
  gradually and ever faster, and runs until its one failure; lifetimes differ.
- `generate_process_log` (`source.synthetic.process_log: true`, like the AI4I 2020 milling
  data set): one machine, one reading per step, and a 0/1 failure column whose failures follow
  physics rules (power band, heat dissipation, overstrain, tool wear) plus a few random ones.

`generate_synthetic` picks the shape from the settings; `pdmflow.data.sources` calls it. Same
seed, same data.
"""

from __future__ import annotations

import pandas as pd

from pdmflow.config import SyntheticSource
from pdmflow.data.synthetic.fleet import FAILURE_TYPES, START, generate_fleet
from pdmflow.data.synthetic.process_log import PROCESS_LOG_SENSORS, generate_process_log
from pdmflow.data.synthetic.run_to_failure import generate_run_to_failure
from pdmflow.errors import ConfigError

__all__ = [
    "FAILURE_TYPES",
    "PROCESS_LOG_SENSORS",
    "START",
    "generate_fleet",
    "generate_process_log",
    "generate_run_to_failure",
    "generate_synthetic",
]


def generate_synthetic(
    settings: SyntheticSource,
    continuous_sensors: list[str],
    boolean_sensors: list[str],
    device_column: str = "device_id",
    time_column: str = "timestamp",
    event_time_column: str = "event_time",
    target_column: str | None = None,
    horizon_hours: float = 24.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(telemetry, failure events) in the shape `settings` asks for (see the module docstring).

    The process log needs `target_column` (its label is a column; it has no events) and a schema
    of its own sensors (PROCESS_LOG_SENSORS, no boolean sensors); it has
    `days * 24 * 60 / sample_minutes` readings.
    """
    shapes = [
        name
        for name in ("run_to_failure", "process_log", "component_failures")
        if getattr(settings, name)
    ]
    if len(shapes) > 1:
        raise ConfigError(
            f"source.synthetic: {' and '.join(shapes)} are different shapes of history; "
            "set at most one"
        )
    arguments = (
        settings,
        continuous_sensors,
        boolean_sensors,
        device_column,
        time_column,
        event_time_column,
        target_column,
        horizon_hours,
    )
    if settings.run_to_failure:
        return generate_run_to_failure(*arguments)
    if not settings.process_log:
        return generate_fleet(*arguments)
    if not target_column:
        raise ConfigError(
            "source.synthetic.process_log: the label is a column; set labels.target_column "
            "(e.g. machine_failure)"
        )
    unknown = [s for s in [*continuous_sensors, *boolean_sensors] if s not in PROCESS_LOG_SENSORS]
    if unknown:
        raise ConfigError(
            f"source.synthetic.process_log: schema names sensor '{unknown[0]}'; the process log "
            f"has {', '.join(PROCESS_LOG_SENSORS)} (continuous) and no boolean sensors"
        )
    n_rows = int(settings.days * 24 * 60 / settings.sample_minutes)
    telemetry = generate_process_log(
        n_rows,
        settings.seed,
        settings.process_log_failure_rate,
        settings.sample_minutes,
        device_column,
        time_column,
        target_column,
    )
    events = pd.DataFrame(
        {
            device_column: pd.Series(dtype="object"),
            event_time_column: pd.Series(dtype="datetime64[ns]"),
            "failure_type": pd.Series(dtype="object"),
        }
    )
    return telemetry, events
