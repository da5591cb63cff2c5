"""Serving's latest-row features (features/latest.py) equal the training build's, row for row."""

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import FeatureSpec, build_features
from pdmflow.features.latest import LatestFeatures

T0 = pd.Timestamp("2026-05-30 21:40")
# Irregular sampling, a gap, two readings 1 s apart.
MINUTES = [0, 4, 10, 25, 30, 30.0166, 45, 60, 62, 80, 95, 100, 120, 130, 150, 155, 170, 190, 260]


def degenerate_fleet() -> tuple[pd.DataFrame, pd.DataFrame, FeatureSpec]:
    """Three devices: noisy; constant sensors and a valve always open; zeros, tiny variance
    (1e-19) and a maintenance sensor switching."""
    rng = np.random.default_rng(11)
    n = len(MINUTES)
    times = [T0 + pd.Timedelta(minutes=m) for m in MINUTES]
    noisy = {
        "temp": rng.normal(50, 3, n).round(2),
        "vib": rng.normal(1, 0.2, n).round(3),
        "valve": rng.integers(0, 2, n).astype(float),
        "service": (np.arange(n) % 7 == 3).astype(float),
    }
    flat = {"temp": np.full(n, 0.1), "vib": np.full(n, 7.3), "valve": np.ones(n), "service": 0.0}
    tiny = {
        "temp": np.r_[np.zeros(n - 3), 1e-9, 0.0, 2e-9],
        "vib": np.r_[np.zeros(n - 4), 0.5, 0.0, 0.0, 0.0],
        "valve": (np.arange(n) % 2).astype(float),
        "service": (np.arange(n) == n - 2).astype(float),
    }
    frames = [
        pd.DataFrame({"device_id": name, "timestamp": times, **values})
        for name, values in (("noisy", noisy), ("flat", flat), ("tiny", tiny))
    ]
    telemetry = pd.concat(frames, ignore_index=True)
    events = pd.DataFrame(
        {
            "device_id": ["noisy", "noisy", "tiny"],
            "event_time": [T0 + pd.Timedelta(minutes=70), T0 - pd.Timedelta(days=3), T0],
        }
    )
    spec = FeatureSpec(
        device_column="device_id",
        time_column="timestamp",
        event_time_column="event_time",
        continuous_sensors=["temp", "vib"],
        boolean_sensors=["valve", "service"],
        lags=["15min", "30min"],
        windows=["5min", "20min", "60min"],
        rolling_statistics=["mean", "std", "min", "max", "median", "skew", "kurt"],
        differences=True,
        interactions=[["temp", "vib"], ["vib", "temp"]],
        cross_sensor=True,
        cyclical=True,
        spectral_sensors=["vib"],
        spectral_window=4,
        time_since_failure=True,
        time_since_cap_hours=48.0,
        maintenance_sensor="service",
    )
    return telemetry, events, FeatureSpec(**{**spec.__dict__, "feature_names": spec._names()})


def assert_same_features(served: pd.DataFrame, built: pd.DataFrame, spec: FeatureSpec) -> None:
    keys = [spec.device_column, spec.time_column]
    assert served[keys].astype(str).equals(built[keys].astype(str).reset_index(drop=True))
    np.testing.assert_allclose(
        served[spec.feature_names].to_numpy(np.float64),
        built[spec.feature_names].to_numpy(np.float64),
        rtol=0,
        atol=1e-9,
    )


def test_every_reading_served_as_training_builds_it():
    """Served at each reading in turn (the readings up to it), every feature of every device
    equals the training build's row at that reading."""
    telemetry, events, spec = degenerate_fleet()
    built = build_features(telemetry, spec, events)
    latest = LatestFeatures(spec)
    checked = 0
    for _, row in built.iterrows():
        device, time = row["device_id"], row["timestamp"]
        mine = telemetry[(telemetry["device_id"] == device) & (telemetry["timestamp"] <= time)]
        served = latest.frame(mine.reset_index(drop=True), events)
        assert_same_features(served, built.loc[[row.name]], spec)
        checked += 1
    assert checked >= 3 * 10  # every device has rows past its history


@pytest.mark.parametrize(
    "config_name", ["smoke", "default", "manufacturing_org_1", "power_gen_org_1"]
)
def test_shipped_tenants_served_as_trained(config_name):
    """Each tenant's feature families on its synthetic fleet: the last 60 readings of every
    device, as serving receives them."""
    config = load_config(REPO / "configs" / f"{config_name}.yaml")
    telemetry, events = read_source(config)
    telemetry, events, _ = validate(telemetry, events, config, "test")
    spec = FeatureSpec.from_config(config)
    recent = telemetry.groupby(spec.device_column, sort=False).tail(60).reset_index(drop=True)
    built = build_features(recent, spec, events).groupby(spec.device_column).tail(1)
    assert_same_features(LatestFeatures(spec).frame(recent, events), built, spec)


def test_a_device_without_full_history_is_named():
    telemetry, events, spec = degenerate_fleet()
    short = telemetry[telemetry["device_id"] == "flat"].head(5)
    with pytest.raises(DataValidationError, match="device 'flat' has 5 readings over"):
        LatestFeatures(spec).matrix(short, events)
    with pytest.raises(DataValidationError, match="pass the failure events"):
        LatestFeatures(spec).matrix(telemetry, None)


def test_clean_input_skips_normalising_and_any_mess_takes_the_full_rules():
    """Serving reads clean telemetry straight into arrays, equal to what normalising gives;
    unsorted, duplicated, missing, untyped or zoned input goes through normalise_telemetry."""
    from pdmflow.data.validation import clean_arrays, normalise_telemetry

    telemetry, _, spec = degenerate_fleet()
    columns = (spec.device_column, spec.time_column, spec.continuous_sensors, spec.boolean_sensors)
    normalised = normalise_telemetry(telemetry, *columns, "test")[0]
    ready = clean_arrays(normalised, *columns)
    assert ready is not None
    assert list(ready.devices) == list(normalised["device_id"])
    np.testing.assert_array_equal(ready.times, normalised["timestamp"].to_numpy())
    np.testing.assert_array_equal(ready.continuous, normalised[["temp", "vib"]].to_numpy())
    np.testing.assert_array_equal(ready.booleans, normalised[["valve", "service"]].to_numpy())
    missing = normalised.copy()
    missing.loc[3, "temp"] = np.nan
    messes = {
        "shuffled": normalised.sample(frac=1, random_state=1),
        "duplicated": pd.concat([normalised, normalised.tail(1)], ignore_index=True),
        "missing value": missing,
        "numbers as text": normalised.astype({"temp": str}),
        "zoned times": normalised.assign(timestamp=normalised["timestamp"].dt.tz_localize("UTC")),
        "boolean not 0/1": normalised.assign(valve=normalised["valve"] * 2),
    }
    for mess, frame in messes.items():
        assert clean_arrays(frame, *columns) is None, mess


def test_serving_history_reaches_back_to_the_last_maintenance():
    """hours_since_maintenance looks back up to its cap: `serving_history` of readings gives
    training's value; enough for every window and lag (2 h here) but not the cap would not."""
    telemetry, events, spec = degenerate_fleet()
    noisy = telemetry[telemetry["device_id"] == "noisy"].reset_index(drop=True)
    noisy["service"] = 0.0
    noisy.loc[1, "service"] = 1.0  # one maintenance, early on
    built = build_features(noisy, spec, events).tail(1)
    last = noisy["timestamp"].iloc[-1]
    assert spec.serving_history == pd.Timedelta(hours=spec.time_since_cap_hours) > spec.history
    for back, equal in ((spec.serving_history, True), (pd.Timedelta(hours=2), False)):
        given = noisy[noisy["timestamp"] >= last - back].reset_index(drop=True)
        served = LatestFeatures(spec).frame(given, events)
        same = np.isclose(
            served["hours_since_maintenance"].iloc[0], built["hours_since_maintenance"].iloc[0]
        )
        assert same == equal
