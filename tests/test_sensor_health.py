"""Sensor health (serving/health.py) on small frames: each fault flagged with its exact string,
healthy devices `ok`, per-row health equal to the latest health of every prefix."""

import json

import numpy as np
import pandas as pd
import yaml
from conftest import SMOKE

from pdmflow.config import load_config
from pdmflow.features.builder import FeatureSpec
from pdmflow.serving.health import latest_health, rowwise_health, sensor_health

T0 = pd.Timestamp("2026-03-01")


def small_spec(value_ranges: dict[str, list[float]] | None = None) -> FeatureSpec:
    """Two continuous sensors; the longest window 3h, so hourly readings give a health window
    of three readings: (t - 3h, t]."""
    spec = FeatureSpec(
        device_column="device_id",
        time_column="timestamp",
        event_time_column="event_time",
        continuous_sensors=["volt", "pressure"],
        boolean_sensors=[],
        lags=["1h"],
        windows=["3h"],
        rolling_statistics=["mean"],
        differences=False,
        interactions=[],
        cross_sensor=False,
        cyclical=False,
        spectral_sensors=[],
        spectral_window=4,
        time_since_failure=False,
        time_since_cap_hours=48.0,
        value_ranges={"volt": [100.0, 250.0]} if value_ranges is None else value_ranges,
    )
    return FeatureSpec(**{**spec.__dict__, "feature_names": spec._names()})


def fleet(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """Hourly readings per device, sorted by device then time."""
    frames = [
        pd.DataFrame(
            {
                "device_id": name,
                "timestamp": T0 + pd.to_timedelta(np.arange(len(sensors["volt"])), "h"),
                **sensors,
            }
        )
        for name, sensors in values.items()
    ]
    return pd.concat(frames, ignore_index=True).sort_values(["device_id", "timestamp"])


NAN = float("nan")


def test_each_fault_gets_its_flag_and_healthy_devices_are_ok():
    telemetry = fleet(
        {
            "a_healthy": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
            # frozen for the last three readings (the whole window); varied before it
            "b_frozen": {"volt": [170, 168, 175, 175, 175], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
            # no pressure reading in the window; readings before it do not count
            "c_silent": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, NAN, NAN, NAN]},
            # the latest reading above the range
            "d_spike": {"volt": [170, 171, 169, 172, 260], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
            # two equal readings and a gap in the window: too few readings to call it frozen
            "e_sparse": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, 2.0, NAN, 2.0]},
            # an earlier reading out of range, the latest in range: healthy now
            "f_recovered": {"volt": [170, 171, 90, 172, 170], "pressure": [3.0, 3.1, 2.9, 3.2, 3]},
        }
    )
    health = sensor_health(telemetry, small_spec())
    assert health.to_dict() == {
        "a_healthy": "ok",
        "b_frozen": "volt:flat-lined",
        "c_silent": "pressure:missing",
        "d_spike": "volt:out-of-range",
        "e_sparse": "ok",
        "f_recovered": "ok",
    }
    assert health.name == "sensor_health" and health.index.name == "device_id"


def test_several_faults_are_sorted_by_sensor_then_reason():
    telemetry = fleet(
        {
            # volt frozen below its range, pressure gone: three entries, sensors by name
            "broken": {"volt": [170, 50, 50, 50, 50], "pressure": [3.0, NAN, NAN, NAN, NAN]},
            "fine": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
        }
    )
    assert list(sensor_health(telemetry, small_spec())) == [
        "pressure:missing;volt:flat-lined;volt:out-of-range",
        "ok",
    ]


def test_an_absent_column_is_missing_for_every_device():
    telemetry = fleet(
        {
            "a": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
            "b": {"volt": [170, 171, 169, 172, 170], "pressure": [3.0, 3.1, 2.9, 3.2, 3.0]},
        }
    ).drop(columns="pressure")
    assert list(sensor_health(telemetry, small_spec())) == ["pressure:missing"] * 2


def test_a_sensor_without_a_range_is_not_range_checked():
    telemetry = fleet({"a": {"volt": [1, 2, 3, 4, 5e9], "pressure": [1e9, -5, 3, 2, -1e9]}})
    assert list(sensor_health(telemetry, small_spec({}))) == ["ok"]
    assert list(sensor_health(telemetry, small_spec({"pressure": [0.0, 10.0]}))) == [
        "pressure:out-of-range"
    ]


def test_per_row_health_equals_the_latest_health_of_each_prefix():
    """rowwise_health at reading t == latest_health of the device's readings up to t, on a
    fleet with gaps, frozen stretches, out-of-range readings and irregular times."""
    rng = np.random.default_rng(5)
    frames = []
    for name in ("p", "q", "r"):
        n = 40
        minutes = np.cumsum(rng.choice([20, 60, 60, 90, 200], size=n))
        volt = rng.normal(170, 30, n).round(0)
        volt[10:16] = 150.0  # frozen
        volt[rng.random(n) < 0.15] = np.nan
        volt[33] = 400.0  # out of range
        pressure = rng.choice([2.0, 3.0], size=n)  # often equal neighbours
        pressure[25:31] = np.nan  # silent
        frames.append(
            pd.DataFrame(
                {
                    "device_id": name,
                    "timestamp": T0 + pd.to_timedelta(minutes, "min"),
                    "volt": volt,
                    "pressure": pressure,
                }
            )
        )
    telemetry = pd.concat(frames, ignore_index=True)
    telemetry["timestamp"] = telemetry["timestamp"].astype("datetime64[ns]")
    spec = small_spec()
    devices = telemetry["device_id"].to_numpy()
    times = telemetry["timestamp"].to_numpy()
    values = telemetry[["volt", "pressure"]].to_numpy()
    by_row = rowwise_health(devices, times, values, spec)
    expected = []
    for row in range(len(telemetry)):
        own = np.flatnonzero((devices == devices[row]) & (np.arange(len(devices)) <= row))
        expected.append(latest_health(devices[own], times[own], values[own], spec)[0])
    assert list(by_row) == expected
    # the data does exercise every reason
    assert {"ok", "pressure:missing", "volt:flat-lined", "volt:out-of-range"} <= set(expected)


def test_the_spec_carries_value_ranges_and_an_older_spec_loads_without_them(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["schema"]["value_ranges"] = {"pressure": [0, 12]}
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = FeatureSpec.from_config(load_config(path))
    assert spec.value_ranges == {"pressure": [0.0, 12.0]}
    assert FeatureSpec.from_json(spec.to_json()) == spec
    older = json.loads(spec.to_json())
    del older["value_ranges"]
    assert FeatureSpec.from_json(json.dumps(older)).value_ranges == {}
