import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import FeatureSpec, build_features, latest_features
from pdmflow.features.split import assign_split, time_split
from pdmflow.steps.features import LABEL, label_and_split


@pytest.fixture(scope="module")
def data():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    clean, clean_events, _ = validate(telemetry, events, config, "test")
    return config, clean, clean_events


def test_feature_names_follow_the_spec(data):
    config, telemetry, _ = data
    spec = FeatureSpec.from_config(config)
    features = build_features(telemetry, spec)
    assert list(features.columns[2:]) == spec.feature_names
    assert not features[spec.feature_names].isna().any().any()
    assert FeatureSpec.from_json(spec.to_json()) == spec


def test_values_match_a_direct_computation(data):
    config, telemetry, _ = data
    spec = FeatureSpec.from_config(config)
    features = build_features(telemetry, spec).set_index(["device_id", "timestamp"])
    device = telemetry[telemetry["device_id"] == "D0003"].reset_index(drop=True)
    i = 40
    row = features.loc[("D0003", device.loc[i, "timestamp"])]
    temps = device["temperature"]
    assert row["temperature_lag_3"] == temps[i - 3]
    assert row["temperature_diff_1"] == pytest.approx(temps[i] - temps[i - 1])
    window = temps[i - 5 : i + 1]
    assert row["temperature_roll6_mean"] == pytest.approx(window.mean())
    assert row["temperature_roll6_std"] == pytest.approx(window.std())
    assert row["temperature_roll6_max"] == window.max()
    assert row["alarm_active_share_on_3"] == pytest.approx(
        device["alarm_active"][i - 2 : i + 1].mean()
    )


def test_features_never_read_the_future(data):
    config, telemetry, _ = data
    spec = FeatureSpec.from_config(config)
    cut = telemetry["timestamp"].quantile(0.5)
    before = build_features(telemetry, spec)
    changed = telemetry.copy()
    later = changed["timestamp"] > cut
    changed.loc[later, spec.continuous_sensors] *= -7.0
    changed.loc[later, spec.boolean_sensors] = 1 - changed.loc[later, spec.boolean_sensors]
    after = build_features(changed, spec)
    past = before["timestamp"] <= cut
    pd.testing.assert_frame_equal(before[past], after[past])
    assert not before[~past].equals(after[~past])  # the change itself is visible


def test_latest_features_match_the_full_build(data):
    config, telemetry, _ = data
    spec = FeatureSpec.from_config(config)
    full = build_features(telemetry, spec).groupby("device_id").tail(1).reset_index(drop=True)
    latest = latest_features(telemetry, spec)
    pd.testing.assert_frame_equal(full, latest)


def test_device_with_too_little_history_is_refused(data):
    config, telemetry, _ = data
    spec = FeatureSpec.from_config(config)
    short = telemetry[telemetry["device_id"] == "D0001"].head(spec.warmup_samples)
    with pytest.raises(DataValidationError, match="device 'D0001' has"):
        latest_features(short, spec)


def test_splits_are_ordered_in_time_and_purged(data):
    config, telemetry, events = data
    tables, spec, boundaries = label_and_split(telemetry, events, config)
    horizon = pd.Timedelta(hours=config.labels.horizon_hours)
    validation_start = pd.Timestamp(boundaries["split_validation_start"])
    test_start = pd.Timestamp(boundaries["split_test_start"])
    assert tables["train"]["timestamp"].max() + horizon < validation_start
    assert tables["validation"]["timestamp"].min() >= validation_start
    assert tables["validation"]["timestamp"].max() + horizon < test_start
    assert tables["test"]["timestamp"].min() >= test_start
    for table in tables.values():
        assert set(table[LABEL].unique()) == {0.0, 1.0}


def test_assign_split_purges_rows_whose_label_crosses_a_boundary():
    times = pd.Series(pd.date_range("2026-01-01", periods=100, freq="h"))
    split = time_split(times, 0.2, 0.2, horizon_hours=5)
    assigned = assign_split(times, split)
    crossing = (times < split.validation_start) & (
        times + pd.Timedelta(hours=5) >= split.validation_start
    )
    assert (assigned[crossing] == "purged").all() and crossing.sum() >= 5
    assert np.all(np.diff(times[assigned == "train"].to_numpy()) > np.timedelta64(0))
