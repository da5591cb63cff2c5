"""A process log (like the AI4I 2020 milling data set): one machine, one reading per step, and a
0/1 failure column whose failures follow physics rules plus a few random ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pdmflow.data.synthetic.fleet import START

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
