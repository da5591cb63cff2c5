import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.config import SyntheticSource, load_config
from pdmflow.data.labels import failure_within_horizon
from pdmflow.data.sources import read_source, redact_url
from pdmflow.data.synthetic import generate_fleet
from pdmflow.data.validation import validate
from pdmflow.errors import DataValidationError


@pytest.fixture
def config():
    return load_config(SMOKE)


def test_synthetic_fleet_is_seeded_and_drifts_before_failures(config):
    settings = SyntheticSource(n_devices=4, days=20, sample_minutes=60, seed=3)
    sensors = ["temperature", "vibration"]
    first, events = generate_fleet(settings, sensors, ["alarm_active"])
    second, _ = generate_fleet(settings, sensors, ["alarm_active"])
    pd.testing.assert_frame_equal(first, second)
    assert len(events) > 0
    # Readings in the last 6 h before a failure sit further from the device's median than others.
    labels = failure_within_horizon(first, events, 6, "device_id", "timestamp", "event_time")
    deviation = (
        first["temperature"] - first.groupby("device_id")["temperature"].transform("median")
    ).abs()
    assert deviation[labels == 1].mean() > 2 * deviation[labels == 0].mean()


def test_validation_report_counts_and_cleans(config):
    telemetry, events = read_source(config)
    shuffled = pd.concat([telemetry, telemetry.head(7)]).sample(frac=1, random_state=0)
    clean, clean_events, report = validate(shuffled, events, config, "test")
    assert report["rows"] == len(telemetry)
    assert report["duplicates_dropped"] == 7
    assert report["devices"] == telemetry["device_id"].nunique()
    assert report["failures"] == len(events) > 0
    assert any("sorted" in w for w in report["warnings"])
    assert clean.groupby("device_id")["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()


def test_missing_sensor_values_are_carried_forward(config):
    telemetry, events = read_source(config)
    telemetry.loc[5, "temperature"] = np.nan
    clean, _, _ = validate(telemetry, events, config, "test")
    assert clean.loc[5, "temperature"] == clean.loc[4, "temperature"]


def test_missing_column_names_the_column(config):
    telemetry, events = read_source(config)
    with pytest.raises(DataValidationError, match="missing required column 'vibration'"):
        validate(telemetry.drop(columns="vibration"), events, config, "plant.csv")


def test_empty_dataset(config):
    telemetry, events = read_source(config)
    with pytest.raises(DataValidationError, match="empty"):
        validate(telemetry.head(0), events, config, "plant.csv")


def test_too_little_data(config):
    telemetry, events = read_source(config)
    with pytest.raises(DataValidationError, match=r"too little data: 999 rows, need at least 1000"):
        validate(telemetry.head(999), events, config, "plant.csv")


def test_non_numeric_sensor(config):
    telemetry, events = read_source(config)
    telemetry["pressure"] = telemetry["pressure"].astype(object)
    telemetry.loc[3, "pressure"] = "n/a"
    with pytest.raises(
        DataValidationError, match=r"column 'pressure': expected numbers, found 'n/a'"
    ):
        validate(telemetry, events, config, "plant.csv")


def test_timezone_aware_timestamps_become_utc(config):
    telemetry, events = read_source(config)
    aware = telemetry.assign(timestamp=telemetry["timestamp"].dt.tz_localize("Europe/Berlin"))
    clean, _, _ = validate(aware, events, config, "test")
    expected = telemetry["timestamp"] - pd.Timedelta(hours=1)  # January: Berlin is UTC+1
    assert clean["timestamp"].min() == expected.min()


def test_labels_hand_computed():
    t0 = pd.Timestamp("2026-01-01")
    telemetry = pd.DataFrame(
        {
            "device_id": ["A"] * 6,
            "timestamp": [t0 + pd.Timedelta(hours=h) for h in range(6)],
        }
    )
    events = pd.DataFrame({"device_id": ["A"], "event_time": [t0 + pd.Timedelta(hours=2.5)]})
    labels = failure_within_horizon(telemetry, events, 2, "device_id", "timestamp", "event_time")
    # hour 0: failure at 2.5 is beyond 0+2 -> 0; hours 1, 2: within -> 1;
    # hours 3: 3+2=5 <= last reading 5 -> healthy 0; hours 4, 5: horizon runs past the data -> NaN.
    assert labels.tolist()[:4] == [0.0, 1.0, 1.0, 0.0]
    assert labels.iloc[4:].isna().all()


def test_redact_url_hides_password():
    assert "s3cret" not in redact_url("postgresql://user:s3cret@db:5432/plant")
    assert redact_url("postgresql://user:s3cret@db:5432/plant").startswith("postgresql://user:")


def test_target_column_mode_keeps_the_plant_label(write_config):
    config = load_config(write_config({"labels": {"target_column": "failure_indicator"}}))
    telemetry, events = read_source(config)
    assert set(telemetry["failure_indicator"].unique()) == {0, 1}
    clean, _, report = validate(telemetry, events, config, "test")
    assert report["label_positive_rate"] == pytest.approx(telemetry["failure_indicator"].mean())
    telemetry.loc[3, "failure_indicator"] = 7
    with pytest.raises(DataValidationError, match="column 'failure_indicator'.*expected 0/1"):
        validate(telemetry, events, config, "plant.csv")


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet"])
def test_file_sources_read_the_same_data(kind, config, write_config, tmp_path):
    telemetry, events = read_source(config)
    paths = {}
    for name, frame in (("telemetry", telemetry), ("events", events)):
        path = tmp_path / f"{name}.{kind}"
        if kind in ("json", "jsonl"):
            frame.to_json(
                path, orient="records", lines=kind == "jsonl", date_format="iso", date_unit="ns"
            )
        elif kind == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
        paths[name] = str(path)
    from_file = load_config(
        write_config(
            {
                "source": {
                    "kind": kind,
                    "telemetry_path": paths["telemetry"],
                    "events_path": paths["events"],
                }
            }
        )
    )
    expected, expected_events, _ = validate(telemetry, events, config, "memory")
    got, got_events, _ = validate(*read_source(from_file), from_file, paths["telemetry"])
    pd.testing.assert_frame_equal(got, expected, check_exact=False)
    pd.testing.assert_frame_equal(got_events[expected_events.columns], expected_events)


def test_epoch_numbers_are_not_taken_for_timestamps(config):
    telemetry, events = read_source(config)
    telemetry["timestamp"] = telemetry["timestamp"].astype("int64") // 10**6
    with pytest.raises(DataValidationError, match="column 'timestamp': expected date-times"):
        validate(telemetry, events, config, "plant.json")


def test_in_memory_frames_through_the_python_api(tracking_store, write_config):
    import mlflow

    from pdmflow.steps.ingest import run_ingest

    telemetry, events = read_source(load_config(SMOKE))
    config = load_config(write_config({"source": {"kind": "dataframe"}}))
    uri = run_ingest(config, frames=(telemetry, events))
    run = mlflow.get_run(uri.split("/")[1])
    assert run.data.metrics["rows"] == len(telemetry)
    assert run.data.params["source"] == "dataframe://in-memory"
    with pytest.raises(DataValidationError, match="pass \\(telemetry, events\\) frames"):
        read_source(config)


def test_out_of_range_readings_are_missing_until_too_many(config, write_config):
    ranged = load_config(write_config({"schema": {"value_ranges": {"temperature": [0, 120]}}}))
    telemetry, events = read_source(ranged)
    telemetry.loc[10, "temperature"] = 999.0  # a stuck sensor, once
    clean, _, report = validate(telemetry, events, ranged, "plant.csv")
    assert report["out_of_range"] == {"temperature": 1}
    assert clean.loc[10, "temperature"] == clean.loc[9, "temperature"]  # carried forward
    assert any("outside [0.0, 120.0]" in w for w in report["warnings"])
    device = telemetry["device_id"] == "D0002"
    telemetry.loc[device, "temperature"] = -5.0
    with pytest.raises(
        DataValidationError, match=r"device 'D0002' column 'temperature': 100% of readings outside"
    ):
        validate(telemetry, events, ranged, "plant.csv")


def test_constant_sensor_is_a_warning_and_the_summary_reads_well(config):
    from pdmflow.data.validation import summarise

    telemetry, events = read_source(config)
    telemetry["pressure"] = 101.3
    _, _, report = validate(telemetry, events, config, "plant.csv")
    assert "constant sensors carry no signal: pressure" in report["warnings"]
    summary = summarise(report)
    assert summary.startswith("source:      plant.csv\nrows:")
    assert "warning:     constant sensors carry no signal: pressure" in summary


def test_naive_timestamps_are_taken_as_utc(config):
    telemetry, events = read_source(config)
    clean, _, _ = validate(telemetry, events, config, "test")
    assert clean["timestamp"].dt.tz is None
    assert clean["timestamp"].min() == telemetry["timestamp"].min()


def test_report_carries_the_label_balance(config):
    telemetry, events = read_source(config)
    _, _, report = validate(telemetry, events, config, "test")
    labels = failure_within_horizon(telemetry, events, 24, "device_id", "timestamp", "event_time")
    assert report["label_positive_rate"] == pytest.approx(labels.mean())
    assert 0.02 < report["label_positive_rate"] < 0.5
