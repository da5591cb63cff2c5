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

import numpy as np
import pandas as pd

from pdmflow.config import SyntheticSource
from pdmflow.data.labels import failure_within_horizon
from pdmflow.errors import ConfigError

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
    # The Azure PdM telemetry's hourly readings.
    "volt": (170.0, 15.0),
    "rotate": (446.0, 52.0),
}


def _oscillation(rng: np.random.Generator, spread: float, level: np.ndarray) -> np.ndarray:
    """A machine's own oscillation whose amplitude grows with its degradation `level`."""
    period_samples = rng.uniform(3.0, 6.0)
    phase = 2 * np.pi * np.arange(len(level)) / period_samples
    return spread * (1 + 3 * level) * np.sin(phase)


def _boolean_readings(rng: np.random.Generator, sensor: str, level: np.ndarray) -> np.ndarray:
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
            base, spread = _KNOWN_SENSORS.get(sensor, (50.0, 2.0))
            device_base = base + rng.normal(0, spread)
            noise = rng.normal(0, spread * settings.noise, size=n_samples)
            level = (
                np.where(next_component == index, degradation, 0.0)
                if settings.component_failures
                else degradation
            )
            values = device_base + noise + drift[sensor] * spread * level
            if "vibration" in sensor:
                values = values + _oscillation(rng, spread, level)
            columns[sensor] = values
        alarm_level = np.zeros(n_samples) if settings.component_failures else degradation
        for sensor in boolean_sensors:
            columns[sensor] = _boolean_readings(rng, sensor, alarm_level)
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

    telemetry = pd.concat(telemetry_parts, ignore_index=True)
    events = pd.DataFrame(event_rows, columns=[device_column, event_time_column, "failure_type"])
    if target_column:
        labels = failure_within_horizon(
            telemetry, events, horizon_hours, device_column, time_column, event_time_column
        )
        telemetry[target_column] = labels.fillna(0.0).astype(int)
    return telemetry, events


def _with_target(
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
            base, spread = _KNOWN_SENSORS.get(sensor, (50.0, 2.0))
            device_base = base + rng.normal(0, spread)
            noise = rng.normal(0, spread * settings.noise, size=n_samples)
            values = device_base + noise + drift[index] * spread * wear ** curvature[index]
            if "vibration" in sensor:
                values = values + _oscillation(rng, spread, wear * informative[index])
            columns[sensor] = values
        for sensor in boolean_sensors:
            columns[sensor] = _boolean_readings(rng, sensor, late)
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
    telemetry = _with_target(
        telemetry,
        events,
        target_column,
        horizon_hours,
        device_column,
        time_column,
        event_time_column,
    )
    return telemetry, events


PROCESS_LOG_SENSORS = (
    "air_temperature",  # K
    "process_temperature",  # K
    "rotational_speed",  # rpm
    "torque",  # N m
    "tool_wear",  # minutes of use of the current tool
)
# Each failure mode's share of the failures (AI4I 2020 counts: 46 tool wear, 115 heat
# dissipation, 95 power, 98 overstrain; random failures are rare).
FAILURE_MODE_SHARES = {
    "tool_wear": 0.13,
    "heat_dissipation": 0.32,
    "power": 0.26,
    "overstrain": 0.27,
    "random": 0.02,
}
# Heat dissipation fails only at low speed: below this many rpm (AI4I's rule).
HEAT_DISSIPATION_MAX_RPM = 1380.0
# Products of quality L, M, H (half, 30 %, 20 % of the runs) wear the tool 2, 3, 5 minutes.
TOOL_WEAR_STEPS = (2.0, 3.0, 5.0)
TOOL_WEAR_STEP_PROBABILITIES = (0.5, 0.3, 0.2)
TOOL_LIFE_MINUTES = (200.0, 240.0)


def _ar1(rng: np.random.Generator, n: int, correlation_steps: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with standard deviation `sd` (a slowly wandering signal)."""
    phi = float(np.exp(-1.0 / correlation_steps))
    shocks = rng.normal(0.0, sd * np.sqrt(1 - phi**2), size=n)
    values = np.empty(n)
    previous = rng.normal(0.0, sd)
    for i in range(n):
        previous = phi * previous + shocks[i]
        values[i] = previous
    return values


def generate_process_log(
    n_rows: int,
    seed: int,
    positive_rate: float = 0.034,
    sample_minutes: float = 1.0,
    device_column: str = "device_id",
    time_column: str = "timestamp",
    target_column: str = "machine_failure",
    device_id: str = "M0001",
) -> pd.DataFrame:
    """Return one milling machine's seeded process log (AI4I 2020 shaped), one row per reading.

    Columns: `device_column` (one device), `time_column` (every `sample_minutes`, from
    2026-01-01), the sensors in PROCESS_LOG_SENSORS, `target_column` (0/1) and `failure_mode`
    (the modes of a failing row joined by '+', else empty). About `positive_rate` of the rows
    fail:
    - air temperature wanders around 300 K (a daily cycle plus a slow random walk); process
      temperature is air + 10 K plus its own slow walk;
    - torque is drawn per run (about 40 +/- 10 N m); rotational speed falls as torque rises
      (about 1540 rpm at 40 N m), with noise;
    - tool wear grows by 2, 3 or 5 minutes per run and resets at a tool change, when it reaches
      the tool's life (200-240 min);
    - failure modes: power (torque x speed in W) outside a band; heat dissipation (process - air
      temperature below a limit while the speed is under 1380 rpm); overstrain (tool wear x
      torque above a limit); tool wear (the tool breaks at its end of life instead of being
      changed); and random failures.
    The limits are set from the generated readings (quantiles) so each mode causes its share
    (FAILURE_MODE_SHARES) of the failures; random failures make up what overlaps leave short.
    They are recorded in `frame.attrs["failure_limits"]`. The log carries no failure events:
    the label is the column.
    """
    if n_rows < 10:
        raise ValueError(f"n_rows: expected at least 10 readings, got {n_rows}")
    if not 0 < positive_rate < 0.5:
        raise ValueError(f"positive_rate: expected a share in (0, 0.5), got {positive_rate}")
    rng = np.random.default_rng(seed)
    minutes = np.arange(n_rows) * sample_minutes
    steps_per_hour = 60.0 / sample_minutes
    day_phase = 2 * np.pi * minutes / (24 * 60)
    air = 300.0 + 1.5 * np.sin(day_phase - np.pi / 2) + _ar1(rng, n_rows, 6 * steps_per_hour, 1.0)
    process = air + 10.0 + _ar1(rng, n_rows, 0.5 * steps_per_hour, 1.0)
    torque = np.clip(rng.normal(40.0, 10.0, size=n_rows), 3.0, None)
    speed = np.clip(
        1538.0 - 17.0 * (torque - 40.0) + rng.normal(0.0, 60.0, size=n_rows), 1100, 2900
    )
    power = torque * speed * 2 * np.pi / 60  # W

    # Tool wear: accumulate per run, change the tool when it reaches its life.
    wear_steps = rng.choice(TOOL_WEAR_STEPS, size=n_rows, p=TOOL_WEAR_STEP_PROBABILITIES)
    tool_lives = rng.uniform(*TOOL_LIFE_MINUTES, size=n_rows)  # one per possible tool
    wear = np.empty(n_rows)
    end_of_life = np.zeros(n_rows, dtype=bool)
    current, tool = 0.0, 0
    for i in range(n_rows):
        wear[i] = current
        if current >= tool_lives[tool]:
            end_of_life[i] = True
            current, tool = 0.0, tool + 1
        else:
            current += wear_steps[i]
    strain = wear * torque  # minute N m
    temperature_difference = process - air
    low_speed = speed < HEAT_DISSIPATION_MAX_RPM
    breaks = rng.random(n_rows)
    random_order = rng.permutation(n_rows)

    def physics(scale: float) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        share = {
            mode: min(0.99, scale * s * positive_rate) for mode, s in FAILURE_MODE_SHARES.items()
        }
        power_low, power_high = np.quantile(power, [share["power"] / 2, 1 - share["power"] / 2])
        low_speed_share = min(1.0, share["heat_dissipation"] / max(low_speed.mean(), 1e-9))
        difference_limit = (
            float(np.quantile(temperature_difference[low_speed], low_speed_share))
            if low_speed.any()
            else -np.inf
        )
        strain_limit = float(np.quantile(strain, 1 - share["overstrain"]))
        break_probability = min(1.0, share["tool_wear"] / max(end_of_life.mean(), 1e-9))
        modes = {
            "tool_wear": end_of_life & (breaks < break_probability),
            "heat_dissipation": low_speed & (temperature_difference < difference_limit),
            "power": (power < power_low) | (power > power_high),
            "overstrain": strain > strain_limit,
        }
        limits = {
            "power_low_w": float(power_low),
            "power_high_w": float(power_high),
            "temperature_difference_k": difference_limit,
            "heat_dissipation_max_rpm": HEAT_DISSIPATION_MAX_RPM,
            "overstrain_minute_nm": strain_limit,
            "tool_break_probability": break_probability,
        }
        return modes, limits

    # Modes overlap (high torque strains the tool and leaves the power band): scale the shares
    # until the physics failures come close to their part of the target.
    physics_target = (1 - FAILURE_MODE_SHARES["random"]) * positive_rate
    scale = 1.0
    for _ in range(6):
        modes, limits = physics(scale)
        physics_rate = np.logical_or.reduce(list(modes.values())).mean()
        scale *= physics_target / max(physics_rate, 1e-9)
    modes, limits = physics(scale)
    failing = np.logical_or.reduce(list(modes.values()))
    wanted_random = max(
        int(round(FAILURE_MODE_SHARES["random"] * positive_rate * n_rows)),
        int(round(positive_rate * n_rows)) - int(failing.sum()),
    )
    random_failure = np.zeros(n_rows, dtype=bool)
    random_failure[random_order[~failing[random_order]][:wanted_random]] = True
    modes["random"] = random_failure
    failing |= random_failure

    failure_mode = np.full(n_rows, "", dtype=object)
    for mode, rows in modes.items():
        failure_mode[rows] = np.where(
            failure_mode[rows] == "", mode, failure_mode[rows] + "+" + mode
        )
    frame = pd.DataFrame(
        {
            device_column: device_id,
            time_column: START + pd.to_timedelta(minutes, unit="min"),
            "air_temperature": air,
            "process_temperature": process,
            "rotational_speed": speed,
            "torque": torque,
            "tool_wear": wear,
            target_column: failing.astype(int),
            "failure_mode": failure_mode,
        }
    )
    frame.attrs["failure_limits"] = limits
    return frame


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
