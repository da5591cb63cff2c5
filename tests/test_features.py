import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.artifacts import LABELS
from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import FeatureSpec, build_features, latest_features
from pdmflow.features.split import assign_split, holdout_devices, label_and_split, time_split

LABEL = LABELS["classification"]


@pytest.fixture(scope="module")
def data():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    clean, clean_events, _ = validate(telemetry, events, config, "test")
    return config, clean, clean_events


# A small hand-made fleet: two devices, irregular sampling, one failure each.
T0 = pd.Timestamp("2026-03-02 22:00")
MINUTES = [0, 10, 25, 30, 45, 60, 62, 80, 95, 100, 120, 130, 150, 155, 170, 190]


@pytest.fixture(scope="module")
def hand_made():
    rng = np.random.default_rng(5)
    frames = []
    for device in ("A", "B"):
        n = len(MINUTES)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": device,
                    "timestamp": [T0 + pd.Timedelta(minutes=m) for m in MINUTES],
                    "temp": rng.normal(50, 3, n).round(2),
                    "vib": rng.normal(1, 0.2, n).round(3),
                    "valve": rng.integers(0, 2, n).astype(float),
                }
            )
        )
    telemetry = pd.concat(frames, ignore_index=True)
    telemetry.loc[5, "vib"] = 0.0  # a zero denominator for the ratio rule
    events = pd.DataFrame(
        {
            "device_id": ["A", "B"],
            "event_time": [T0 + pd.Timedelta(minutes=70), T0 - pd.Timedelta(days=40)],
        }
    )
    spec = FeatureSpec(
        device_column="device_id",
        time_column="timestamp",
        event_time_column="event_time",
        continuous_sensors=["temp", "vib"],
        boolean_sensors=["valve"],
        lags=["15min", "30min"],
        windows=["20min", "60min"],
        rolling_statistics=["mean", "std", "min", "max", "median", "skew", "kurt"],
        differences=True,
        interactions=[["temp", "vib"]],
        cross_sensor=True,
        cyclical=True,
        spectral_sensors=["vib"],
        spectral_window=4,
        time_since_failure=True,
        time_since_cap_hours=720.0,
    )
    spec = FeatureSpec(**{**spec.__dict__, "feature_names": spec._names()})
    return telemetry, events, spec, build_features(telemetry, spec, events)


def row_of(telemetry, device, i):
    rows = telemetry[telemetry["device_id"] == device].reset_index(drop=True)
    return rows, rows.loc[i, "timestamp"]


def feature(features, device, time, name):
    match = features[(features["device_id"] == device) & (features["timestamp"] == time)]
    return float(match[name].iloc[0])


@pytest.mark.parametrize("device,i", [("A", 9), ("A", 15), ("B", 12)])
def test_lags_are_as_of_time_offsets(hand_made, device, i):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, device, i)
    for lag in ("15min", "30min"):
        expected = rows[rows["timestamp"] <= t - pd.Timedelta(lag)]["temp"].iloc[-1]
        assert feature(features, device, t, f"temp_lag_{lag}") == np.float32(expected)


@pytest.mark.parametrize("device,i", [("A", 9), ("A", 15), ("B", 12)])
def test_rolling_statistics_over_time_windows(hand_made, device, i):
    telemetry, _, spec, features = hand_made
    rows, t = row_of(telemetry, device, i)
    for window in spec.windows:
        values = rows[(rows["timestamp"] > t - pd.Timedelta(window)) & (rows["timestamp"] <= t)][
            "vib"
        ]
        expected = {
            "mean": values.mean(),
            "std": values.std(),
            "min": values.min(),
            "max": values.max(),
            "median": values.median(),
            "skew": values.skew() if len(values) > 2 else 0.0,
            "kurt": values.kurt() if len(values) > 3 else 0.0,
        }
        for stat, value in expected.items():
            got = feature(features, device, t, f"vib_roll_{window}_{stat}")
            expected_value = 0.0 if np.isnan(value) else value
            assert got == pytest.approx(expected_value, rel=1e-6, abs=1e-6), (window, stat)


def test_differences_and_percent_change(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "A", 10)
    x = rows["temp"]
    assert feature(features, "A", t, "temp_diff_1") == pytest.approx(x[10] - x[9])
    assert feature(features, "A", t, "temp_diff_2") == pytest.approx(x[10] - 2 * x[9] + x[8])
    assert feature(features, "A", t, "temp_pct_change") == pytest.approx((x[10] - x[9]) / abs(x[9]))


def test_interactions_with_the_zero_denominator_rule(hand_made):
    telemetry, _, _, features = hand_made
    for i in (5, 7):
        rows, t = row_of(telemetry, "A", i)
        temp, vib = rows.loc[i, "temp"], rows.loc[i, "vib"]
        assert feature(features, "A", t, "temp_times_vib") == pytest.approx(temp * vib)
        assert feature(features, "A", t, "temp_minus_vib") == pytest.approx(temp - vib)
        expected_ratio = 0.0 if vib == 0 else temp / vib
        assert feature(features, "A", t, "temp_per_vib") == pytest.approx(expected_ratio)


def test_zscores_and_cross_sensor_statistics(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "B", 11)
    window = rows[(rows["timestamp"] > t - pd.Timedelta("60min")) & (rows["timestamp"] <= t)]
    z = {s: (rows.loc[11, s] - window[s].mean()) / window[s].std() for s in ("temp", "vib")}
    assert feature(features, "B", t, "temp_zscore_60min") == pytest.approx(z["temp"])
    both = np.array([z["temp"], z["vib"]])
    assert feature(features, "B", t, "cross_sensor_abs_zscore_mean") == pytest.approx(
        np.abs(both).mean()
    )
    assert feature(features, "B", t, "cross_sensor_abs_zscore_max") == pytest.approx(
        np.abs(both).max()
    )
    assert feature(features, "B", t, "cross_sensor_zscore_std") == pytest.approx(both.std())


def test_spectral_features_of_the_last_readings(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "A", 13)
    last = rows["vib"].to_numpy()[10:14]
    power = np.abs(np.fft.rfft(last - last.mean())) ** 2
    seconds = (rows.loc[13, "timestamp"] - rows.loc[10, "timestamp"]).total_seconds() / 3
    peak = int(np.argmax(power[1:])) + 1
    assert feature(features, "A", t, "vib_dominant_frequency_hz") == pytest.approx(
        peak / 4 / seconds
    )
    assert feature(features, "A", t, "vib_spectral_energy") == pytest.approx(power[1:].sum() / 4)


def test_boolean_activity(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "A", 14)
    inside = (rows["timestamp"] > t - pd.Timedelta("60min")) & (rows["timestamp"] <= t)
    switches = rows["valve"].diff().abs().fillna(0)
    assert feature(features, "A", t, "valve_share_on_60min") == pytest.approx(
        rows["valve"][inside].mean()
    )
    assert feature(features, "A", t, "valve_switches_60min") == switches[inside].sum()


def test_cyclical_time_and_time_since_failure(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "A", 9)  # 23:40 on a Monday in March, 30 min after a failure
    hour = 23 + 40 / 60
    assert feature(features, "A", t, "hour_sin") == pytest.approx(np.sin(2 * np.pi * hour / 24))
    assert feature(features, "A", t, "day_of_week_cos") == pytest.approx(np.cos(0.0))
    assert feature(features, "A", t, "month_sin") == pytest.approx(np.sin(2 * np.pi * 2 / 12))
    assert feature(features, "A", t, "hours_since_failure") == pytest.approx(0.5)
    early, t_early = row_of(telemetry, "A", 5)
    assert feature(features, "A", t_early, "hours_since_failure") == 720.0  # none yet: the cap
    assert feature(features, "B", row_of(telemetry, "B", 9)[1], "hours_since_failure") == 720.0


def test_a_gap_leaves_only_the_readings_inside_the_window(hand_made):
    telemetry, _, _, features = hand_made
    rows, t = row_of(telemetry, "A", 12)  # 150 min, 20 min after the previous reading
    assert feature(features, "A", t, "temp_roll_20min_mean") == np.float32(rows.loc[12, "temp"])
    assert feature(features, "A", t, "temp_roll_20min_std") == 0.0  # one reading: rule says 0


def test_hours_since_maintenance_from_a_boolean_sensor(hand_made):
    telemetry, events, spec, _ = hand_made
    with_maintenance = FeatureSpec(**{**spec.__dict__, "maintenance_sensor": "valve"})
    with_maintenance = FeatureSpec(
        **{**with_maintenance.__dict__, "feature_names": with_maintenance._names()}
    )
    features = build_features(telemetry, with_maintenance, events)
    assert with_maintenance.feature_names[-1] == "hours_since_maintenance"
    for device in ("A", "B"):
        rows = telemetry[telemetry["device_id"] == device].reset_index(drop=True)
        for i in (5, 9, 15):
            t = rows.loc[i, "timestamp"]
            on = rows[(rows["timestamp"] <= t) & (rows["valve"] > 0)]
            expected = (t - on["timestamp"].max()).total_seconds() / 3600 if len(on) else 720.0
            assert feature(features, device, t, "hours_since_maintenance") == pytest.approx(
                min(expected, 720.0)
            )


def test_rows_without_full_history_are_dropped(hand_made):
    telemetry, _, spec, features = hand_made
    first = features.groupby("device_id")["timestamp"].min()
    assert (first == T0 + pd.Timedelta(minutes=60)).all()  # 60 min window, 60 min in
    assert not features[spec.feature_names].isna().any().any()


def test_chunks_of_whole_devices_change_nothing(data):
    config, telemetry, events = data
    spec = FeatureSpec.from_config(config)
    whole = build_features(telemetry, spec, events)
    chunked = build_features(telemetry, spec, events, rows_per_chunk=700)
    assert whole.dtypes[spec.feature_names].eq(np.float32).all()
    pd.testing.assert_frame_equal(whole, chunked, check_exact=True)


def test_default_config_has_at_least_40_features():
    config = load_config(SMOKE.parent / "default.yaml")
    assert len(FeatureSpec.from_config(config).feature_names) >= 40


def test_features_never_read_the_future(data):
    config, telemetry, events = data
    spec = FeatureSpec.from_config(config)
    cut = telemetry["timestamp"].quantile(0.5)
    before = build_features(telemetry, spec, events)
    changed = telemetry.copy()
    later = changed["timestamp"] > cut
    changed.loc[later, spec.continuous_sensors] *= -7.0
    changed.loc[later, spec.boolean_sensors] = 1 - changed.loc[later, spec.boolean_sensors]
    later_events = events.assign(
        event_time=events["event_time"].where(
            events["event_time"] <= cut, events["event_time"] + pd.Timedelta(hours=5)
        )
    )
    after = build_features(changed, spec, later_events)
    past = before["timestamp"] <= cut
    pd.testing.assert_frame_equal(before[past], after[past], check_exact=False, rtol=0, atol=1e-9)
    assert not before[~past].equals(after[~past])  # the change itself is visible


def test_serving_computes_the_training_features(data):
    config, telemetry, events = data
    spec = FeatureSpec.from_config(config)
    full = build_features(telemetry, spec, events).groupby("device_id").tail(1)
    latest = latest_features(telemetry, spec, events)
    pd.testing.assert_frame_equal(
        full.reset_index(drop=True), latest, check_exact=False, rtol=0, atol=1e-9
    )


def test_serving_refuses_a_device_with_too_little_history(data):
    config, telemetry, events = data
    spec = FeatureSpec.from_config(config)
    short = telemetry[telemetry["device_id"] == "D0001"].head(4)
    with pytest.raises(DataValidationError, match="device 'D0001' has 4 readings"):
        latest_features(short, spec, events)
    with pytest.raises(DataValidationError, match="pass the failure events"):
        latest_features(telemetry, spec, None)


def test_splits_are_ordered_in_time_and_purged(data):
    config, telemetry, events = data
    tables, spec, boundaries, _ = label_and_split(telemetry, events, config, LABEL)
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
    horizon = pd.Timedelta(hours=5)
    crossing = (times < split.validation_start) & (times + horizon >= split.validation_start)
    assert (assigned[crossing] == "purged").all() and crossing.sum() >= 5
    assert np.all(np.diff(times[assigned == "train"].to_numpy()) > np.timedelta64(0))


def test_time_folds_train_on_the_past_and_validate_on_the_next_period():
    from pdmflow.features.split import time_folds

    times = pd.Series(pd.date_range("2026-01-01", periods=400, freq="h"))
    folds = time_folds(times, 3, pd.Timedelta(hours=6))
    assert len(folds) == 3
    previous_end = None
    for train_rows, valid_rows in folds:
        assert times[train_rows].max() + pd.Timedelta(hours=6) < times[valid_rows].min()
        if previous_end is not None:
            assert times[valid_rows].min() > previous_end
        previous_end = times[valid_rows].max()
    assert len(folds[2][0]) > len(folds[0][0])  # the window expands
    assert previous_end == times.max()


def test_held_out_devices_are_seen_only_in_test(data, write_config):
    _, telemetry, events = data
    config = load_config(write_config({"split": {"holdout_device_fraction": 0.25}}))
    tables, _, params, _ = label_and_split(telemetry, events, config, LABEL)
    held_out = holdout_devices(telemetry["device_id"], config)
    assert len(held_out) == 4 and params["split_holdout_devices"] == ",".join(held_out)
    assert not tables["train"]["device_id"].isin(held_out).any()
    assert not tables["validation"]["device_id"].isin(held_out).any()
    assert set(held_out) <= set(tables["test"]["device_id"])
