"""Robustness table (noise, dead sensors) and the paired device-block bootstrap."""

from __future__ import annotations

import time
from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.config import SyntheticSource
from pdmflow.data.labels import failure_within_horizon
from pdmflow.data.synthetic import generate_fleet
from pdmflow.errors import DataValidationError
from pdmflow.evaluation.champion import (
    BootstrapResult,
    block_resample_indices,
    bootstrap_histogram,
    describe,
    paired_bootstrap,
)
from pdmflow.evaluation.robustness import (
    TABLE_COLUMNS,
    cropped_test_telemetry,
    lookback,
    robustness_summary,
    robustness_table,
)
from pdmflow.features.builder import FeatureSpec, build_features

SENSORS = ["temperature", "vibration", "pressure", "current"]
BOOLEANS = ["pump_on", "maintenance_mode"]
KEYS = ["device_id", "timestamp"]
SIGNAL = "pressure"


def make_spec(**overrides) -> FeatureSpec:
    spec = FeatureSpec(
        device_column="device_id",
        time_column="timestamp",
        event_time_column="event_time",
        continuous_sensors=SENSORS,
        boolean_sensors=BOOLEANS,
        lags=["1h", "3h"],
        windows=["3h", "6h"],
        rolling_statistics=["mean", "std", "min", "max", "median", "skew", "kurt"],
        differences=True,
        interactions=[["temperature", "vibration"]],
        cross_sensor=True,
        cyclical=True,
        spectral_sensors=["vibration"],
        spectral_window=8,
        time_since_failure=True,
        time_since_cap_hours=720.0,
    )
    spec = replace(spec, **overrides)
    return replace(spec, feature_names=spec._names())


@pytest.fixture(scope="module")
def fleet():
    """10 devices x 16 days, hourly; only `SIGNAL` (of the sensors) carries the failure signal.

    The other continuous sensors are replaced by each device's baseline plus noise, and the
    boolean sensors by coin flips, so a model can learn from `SIGNAL` alone.
    """
    settings = SyntheticSource(
        n_devices=10, days=16, sample_minutes=60, mean_days_between_failures=4, seed=5
    )
    telemetry, events = generate_fleet(settings, SENSORS, BOOLEANS)
    rng = np.random.default_rng(0)
    for sensor in SENSORS:
        if sensor != SIGNAL:
            base = telemetry.groupby("device_id")[sensor].transform("median")
            spread = telemetry[sensor].std() * 0.3
            telemetry[sensor] = base + rng.normal(0, spread, len(telemetry))
    telemetry["pump_on"] = rng.random(len(telemetry)) < 0.8
    telemetry["maintenance_mode"] = rng.random(len(telemetry)) < 0.02
    labels = failure_within_horizon(telemetry, events, 24, "device_id", "timestamp", "event_time")
    cut = telemetry["timestamp"].min() + pd.Timedelta(days=11)
    return telemetry, events, labels, cut


def split(fleet, spec):
    telemetry, events, labels, cut = fleet
    features = build_features(telemetry, spec, events)
    features["label"] = labels.loc[features.index].to_numpy()
    features = features.dropna(subset=["label"])
    train = features[features["timestamp"] < cut]
    test = features[features["timestamp"] >= cut].reset_index(drop=True)
    return train, test


# --- robustness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, crops",
    [
        ({}, True),  # lags, windows, differences, spectral, hours_since_failure
        ({"maintenance_sensor": "maintenance_mode", "time_since_cap_hours": 48.0}, True),
        ({"maintenance_sensor": "maintenance_mode"}, False),  # 720 h cap: keep everything
    ],
)
def test_cropped_rebuild_equals_the_original_test_features(fleet, overrides, crops):
    telemetry, events, _, cut = fleet
    spec = make_spec(**overrides)
    _, test = split(fleet, spec)
    cropped = cropped_test_telemetry(telemetry, spec, test[KEYS])
    assert (len(cropped) < len(telemetry)) == crops
    rebuilt = build_features(cropped, spec, events)
    joined = test[KEYS].merge(rebuilt, on=KEYS, how="left")
    assert len(joined) == len(test)
    assert not joined[spec.feature_names].isna().any().any()
    np.testing.assert_allclose(
        joined[spec.feature_names].to_numpy(),
        test[spec.feature_names].to_numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
    if "hours_since_maintenance" in spec.feature_names:
        assert lookback(spec) == max(spec.history, pd.Timedelta(hours=spec.time_since_cap_hours))


def test_cropping_holds_for_devices_tested_from_their_first_full_history_row(fleet):
    """Device split: test devices are scored over their whole history; nothing is cut off."""
    telemetry, events, _, _ = fleet
    spec = make_spec()
    features = build_features(telemetry, spec, events)
    test = features[features["device_id"].isin(["D0002", "D0007"])].reset_index(drop=True)
    cropped = cropped_test_telemetry(telemetry, spec, test[KEYS])
    assert set(cropped["device_id"]) == {"D0002", "D0007"}
    rebuilt = test[KEYS].merge(build_features(cropped, spec, events), on=KEYS, how="left")
    np.testing.assert_allclose(
        rebuilt[spec.feature_names].to_numpy(), test[spec.feature_names].to_numpy(), rtol=1e-6
    )


@pytest.fixture(scope="module")
def signal_model(fleet):
    spec = make_spec()
    train, test = split(fleet, spec)
    model = lgb.LGBMClassifier(n_estimators=80, num_leaves=15, verbose=-1, random_state=0, n_jobs=1)
    model.fit(train[spec.feature_names].to_numpy(), train["label"].astype(int))
    return spec, test, model


def test_freezing_the_only_informative_sensor_hurts_most(fleet, signal_model):
    telemetry, events, _, _ = fleet
    spec, test, model = signal_model

    def predict(frame: pd.DataFrame) -> np.ndarray:
        assert list(frame.columns) == spec.feature_names
        return model.predict_proba(frame.to_numpy())[:, 1]

    y = test["label"].astype(int).to_numpy()
    table = robustness_table(telemetry, events, spec, test[KEYS], y, predict, "auc")
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["perturbation"]) == [
        "none",
        "noise_5pct",
        "noise_10pct",
        *[f"frozen:{s}" for s in SENSORS],
    ]
    assert list(table["sensor"]) == ["all", "all", "all", *SENSORS]
    assert (table["rows"] == len(test)).all()
    # The baseline is the model on the original test features: cropping changed nothing.
    original = roc_auc_score(y, predict(test[spec.feature_names]))
    assert table["value"].iat[0] == pytest.approx(original, abs=1e-9)
    assert original > 0.8
    change = table.set_index("perturbation")["change"]
    assert change["none"] == 0.0
    frozen = change[[f"frozen:{s}" for s in SENSORS]]
    assert frozen.idxmax() == f"frozen:{SIGNAL}"
    assert frozen[f"frozen:{SIGNAL}"] > 0.1
    assert frozen.drop(f"frozen:{SIGNAL}").max() < frozen[f"frozen:{SIGNAL}"] / 3
    summary = robustness_summary(table, "auc")
    assert summary["worst"] == f"frozen:{SIGNAL}"
    assert summary["worst_sensor"] == SIGNAL
    assert summary["robustness_worst_auc_drop"] == pytest.approx(frozen.max())
    assert summary["robustness_noise_10pct_auc_drop"] == pytest.approx(change["noise_10pct"])
    # Seeded: the same table twice.
    again = robustness_table(telemetry, events, spec, test[KEYS], y, predict, "auc")
    pd.testing.assert_frame_equal(table, again)


def test_noise_and_frozen_definitions_and_the_mae_sign(fleet):
    """Read raw sensor columns back through `predict` to check what each perturbation did."""
    telemetry, events, _, _ = fleet
    spec = make_spec().with_features(["temperature", "pressure", "pump_on"])
    _, test = split(fleet, spec)
    seen: list[pd.DataFrame] = []

    def predict(frame: pd.DataFrame) -> np.ndarray:
        seen.append(frame.copy())
        return frame["temperature"].to_numpy()

    y = test["temperature"].to_numpy()
    table = robustness_table(telemetry, events, spec, test[KEYS], y, predict, "mae", seed=3)
    change = table.set_index("perturbation")["change"]
    assert change["none"] == 0.0
    assert table["value"].iat[0] == pytest.approx(0.0, abs=1e-4)  # float32 features
    # MAE: change = value - baseline, positive is worse.
    assert change["noise_10pct"] > change["noise_5pct"] > 0
    # |N(0, s)| has mean s * sqrt(2 / pi), with s = 10 % of the sensor's standard deviation.
    expected = 0.10 * telemetry["temperature"].std() * np.sqrt(2 / np.pi)
    assert change["noise_10pct"] == pytest.approx(expected, rel=0.1)
    noisy = seen[2]
    assert (noisy["pump_on"].to_numpy() == test["pump_on"].to_numpy()).all()  # booleans: left
    assert not np.allclose(noisy["pressure"], test["pressure"])
    assert change["frozen:pressure"] == 0.0  # the model does not read pressure
    # Dead temperature: every test row shows the device's last reading before its first test row.
    frozen = seen[1 + 2 + SENSORS.index("temperature")]
    for device, rows in test.groupby("device_id"):
        readings = telemetry[telemetry["device_id"] == device]
        held = readings.loc[readings["timestamp"] < rows["timestamp"].min(), "temperature"].iat[-1]
        assert np.allclose(frozen.loc[rows.index, "temperature"], held)
    summary = robustness_summary(table, "mae")
    assert set(summary) == {
        "robustness_worst_mae_increase",
        "robustness_noise_10pct_mae_increase",
        "robustness_dead_sensor_mae_increase",
        "worst",
        "worst_sensor",
    }
    assert summary["worst_sensor"] == "temperature"
    # The dead-sensor figure is the worst frozen sensor's increase.
    assert summary["robustness_dead_sensor_mae_increase"] == change["frozen:temperature"]


def test_a_test_row_without_rebuilt_features_is_refused(fleet):
    telemetry, events, _, _ = fleet
    spec = make_spec()
    _, test = split(fleet, spec)
    first_reading = telemetry.loc[[0], KEYS]  # no history behind it: never a feature row
    keys = pd.concat([test[KEYS], first_reading], ignore_index=True)
    y = np.r_[test["label"].to_numpy(), 0]
    with pytest.raises(DataValidationError, match="1 of .* test rows have no rebuilt features"):
        robustness_table(telemetry, events, spec, keys, y, lambda f: np.zeros(len(f)), "auc")


# --- paired bootstrap --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored():
    """8,000 rows of 40 devices: labels, a good champion score, per-device groups."""
    rng = np.random.default_rng(1)
    groups = np.repeat([f"D{i:04d}" for i in range(40)], 200)
    y = (rng.random(len(groups)) < 0.1).astype(int)
    champion = (y + rng.normal(0, 0.7, len(y))).astype(np.float32)
    return y, champion, groups, rng


def test_identical_models_differ_by_exactly_zero(scored):
    y, champion, groups, _ = scored
    for metric in ("auc", "mae"):
        result = paired_bootstrap(y, champion, champion.copy(), groups, metric)
        assert result.difference == 0.0
        assert result.low == result.high == 0.0
        assert result.resamples_used == 1000 and result.groups == 40
        assert (result.samples == 0).all()


def test_a_clearly_worse_candidate_has_its_whole_interval_below_zero(scored):
    y, champion, groups, rng = scored
    noise = rng.random(len(y))
    result = paired_bootstrap(y, noise, champion, groups, "auc", n_resamples=1000, seed=0)
    assert result.difference == pytest.approx(
        roc_auc_score(y, noise) - roc_auc_score(y, champion), abs=1e-12
    )
    assert result.low < result.difference < result.high < 0
    text = describe(result, 3)
    assert text.startswith("AUC ") and " lower than Production version 3 (95 % interval " in text
    assert text.endswith("1,000 device-block resamples over 40 devices)")


def test_mae_sign_convention(scored):
    y, _, groups, rng = scored
    truth = rng.uniform(0, 500, len(y))
    good = truth + rng.normal(0, 10, len(y))
    bad = truth + rng.normal(0, 40, len(y))
    better = paired_bootstrap(truth, good, bad, groups, "mae")
    expected = mean_absolute_error(truth, good) - mean_absolute_error(truth, bad)
    assert better.difference == pytest.approx(expected)
    assert better.high < 0  # candidate errs less: negative
    worse = paired_bootstrap(truth, bad, good, groups, "mae")
    assert worse.difference == pytest.approx(-expected) and worse.low > 0
    assert " higher than Production version 7 " in describe(worse, 7)


def test_resamples_are_whole_devices_and_match_sklearn(scored):
    y, champion, groups, rng = scored
    candidate = (y + rng.normal(0, 0.6, len(y))).astype(np.float32)
    # Devices of uneven sizes, rows not grouped together: blocks must still be whole devices.
    sizes = np.linspace(50, 350, 40).astype(int)
    sizes[-1] += len(y) - sizes.sum()
    shuffled = rng.permutation(np.repeat(np.arange(40), sizes))
    indices = block_resample_indices(shuffled, n_resamples=50, seed=4)
    sizes = pd.Series(sizes)
    for index in indices:
        drawn = pd.Series(shuffled[index])
        counts = drawn.value_counts()
        assert ((counts % sizes[counts.index]) == 0).all()  # each device: all rows, k times
        assert (counts // sizes[counts.index]).sum() == 40  # 40 devices drawn
    result = paired_bootstrap(y, candidate, champion, shuffled, "auc", n_resamples=50, seed=4)
    reference = [
        roc_auc_score(y[i], candidate[i]) - roc_auc_score(y[i], champion[i]) for i in indices
    ]
    np.testing.assert_allclose(result.samples, reference, atol=1e-12)


def test_device_blocks_give_wider_intervals_than_rows_when_devices_differ(scored):
    """Within a device errors move together: only a device-level bootstrap sees that."""
    y, _, groups, rng = scored
    truth = rng.uniform(0, 100, len(y))
    champion = truth + 5
    device_effect = np.repeat(rng.choice([-3.0, 3.0], 40), 200)
    candidate = truth + 5 + device_effect + rng.normal(0, 0.5, len(y))
    by_device = paired_bootstrap(truth, candidate, champion, groups, "mae")
    by_row = paired_bootstrap(truth, candidate, champion, np.arange(len(y)), "mae")
    assert by_device.difference == pytest.approx(by_row.difference)
    assert (by_device.high - by_device.low) > 4 * (by_row.high - by_row.low)


def test_seeded_and_fast(scored):
    y, champion, groups, rng = scored
    candidate = (y + rng.normal(0, 0.6, len(y))).astype(np.float32)
    started = time.perf_counter()
    first = paired_bootstrap(y, candidate, champion, groups, "auc", n_resamples=1000, seed=11)
    elapsed = time.perf_counter() - started
    second = paired_bootstrap(y, candidate, champion, groups, "auc", n_resamples=1000, seed=11)
    other = paired_bootstrap(y, candidate, champion, groups, "auc", n_resamples=1000, seed=12)
    assert np.array_equal(first.samples, second.samples)
    assert (first.low, first.high) == (second.low, second.high)
    assert not np.array_equal(first.samples, other.samples)
    assert elapsed < 2.0, f"1,000 resamples over 8,000 rows took {elapsed:.2f} s"


def test_single_class_resamples_are_skipped_and_counted(scored):
    _, champion, groups, rng = scored
    y = (groups == "D0000").astype(int)  # every positive in one device
    candidate = y + rng.normal(0, 1.0, len(y))
    result = paired_bootstrap(y, candidate, champion, groups, "auc", n_resamples=1000)
    # P(a resample misses D0000) = (39/40)^40, about 0.36.
    assert 250 < result.skipped < 480
    assert result.resamples_used + result.skipped == 1000
    assert len(result.samples) == result.resamples_used and np.isfinite(result.samples).all()
    assert "single-class resample(s) skipped" in describe(result, 1)
    with pytest.raises(ValueError, match="both classes"):
        paired_bootstrap(np.zeros(len(y)), candidate, champion, groups, "auc")


def test_histogram_marks_zero_difference_and_bounds(scored):
    y, champion, groups, rng = scored
    result = paired_bootstrap(y, rng.random(len(y)), champion, groups, "auc", n_resamples=1000)
    assert isinstance(result, BootstrapResult)
    figure = bootstrap_histogram(result)
    assert isinstance(figure, Figure)
    lines = [line.get_xdata()[0] for line in figure.axes[0].get_lines()]
    assert lines == pytest.approx([0.0, result.difference, result.low, result.high])
    import matplotlib.pyplot as plt

    plt.close(figure)
