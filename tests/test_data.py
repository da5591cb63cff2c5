import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.config import SyntheticSource, load_config
from pdmflow.data.labels import failure_within_horizon, remaining_useful_life
from pdmflow.data.sources import describe_source, read_source, redact_url
from pdmflow.data.synthetic import generate_fleet, generate_process_log, generate_run_to_failure
from pdmflow.data.validation import validate
from pdmflow.errors import ConfigError, DataValidationError


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


def test_redact_url_hides_a_password_in_the_query_string_too():
    shown = redact_url("postgresql://user@db:5432/plant?sslmode=require&password=s3cret")
    assert "s3cret" not in shown and "sslmode=require" in shown


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


def test_a_glob_of_daily_csv_files_reads_as_one_file(config, write_config, tmp_path):
    telemetry, events = read_source(config)
    days = telemetry["timestamp"].dt.strftime("%Y-%m-%d")
    for day, rows in telemetry.groupby(days):
        rows.to_csv(tmp_path / f"telemetry-{day}.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    source = {
        "kind": "csv",
        "telemetry_path": str(tmp_path / "telemetry-*.csv"),
        "events_path": str(tmp_path / "events.csv"),
    }
    from_files = load_config(write_config({"source": source}))
    expected, _, _ = validate(telemetry, events, config, "memory")
    got, _, report = validate(*read_source(from_files), from_files, source["telemetry_path"])
    assert days.nunique() > 1
    pd.testing.assert_frame_equal(got, expected, check_exact=False)


def test_a_hive_partitioned_parquet_dataset_reads_its_device_folders(
    config, write_config, tmp_path
):
    telemetry, events = read_source(config)
    dataset = tmp_path / "telemetry"
    telemetry["device_id"] = "pump " + telemetry["device_id"]  # the folder name holds %20
    for device, rows in telemetry.groupby("device_id"):
        folder = dataset / f"device_id={device.replace(' ', '%20')}"
        folder.mkdir(parents=True)
        rows.drop(columns="device_id").to_parquet(folder / "part-0.parquet")
    (dataset / "_SUCCESS").write_text("")  # a writer's marker file is not data
    events["device_id"] = "pump " + events["device_id"]
    events.to_parquet(tmp_path / "events.parquet")
    source = {
        "kind": "parquet",
        "telemetry_path": str(dataset),
        "events_path": str(tmp_path / "events.parquet"),
    }
    from_dataset = load_config(write_config({"source": source}))
    expected, _, _ = validate(telemetry, events, config, "memory")
    got, got_events, report = validate(*read_source(from_dataset), from_dataset, str(dataset))
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False)
    assert " " in got["device_id"].iloc[0] and report["failures"] == len(events) > 0


def test_a_file_whose_name_looks_like_a_glob_is_read_as_that_file(config, write_config, tmp_path):
    telemetry, events = read_source(config)
    path = tmp_path / "telemetry[2026].csv"
    telemetry.to_csv(path, index=False)
    source = {"kind": "csv", "telemetry_path": str(path), "events_path": None}
    assert len(read_source(load_config(write_config({"source": source})))[0]) == len(telemetry)


def test_file_sources_name_what_they_could_not_read(write_config, tmp_path):
    def read(path: str, kind: str = "csv"):
        source = {"kind": kind, "telemetry_path": path, "events_path": None}
        return read_source(load_config(write_config({"source": source})))

    with pytest.raises(
        DataValidationError,
        match=r"telemetry files .*day-\*\.csv \(source.telemetry_path\): no file matches",
    ):
        read(str(tmp_path / "day-*.csv"))
    with pytest.raises(
        DataValidationError,
        match=r"telemetry directory .* \(source.telemetry_path\): no .csv file in it",
    ):
        read(str(tmp_path))
    (tmp_path / "a.csv").write_text("device_id,timestamp\npump,2026-01-01\n")
    (tmp_path / "b.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(
        DataValidationError, match=r"telemetry file .*b\.csv: cannot be read as csv"
    ):
        read(str(tmp_path / "*.csv"))


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


# --- synthetic shapes: run-to-failure fleet and single-machine process log -------------------

RUN_TO_FAILURE_SENSORS = ["temperature", "vibration", "pressure", "current", "rpm"]


def run_to_failure_fleet(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    settings = SyntheticSource(
        n_devices=12, days=6, sample_minutes=60, degradation_hours=24, seed=seed,
        run_to_failure=True,
    )  # fmt: skip
    return generate_run_to_failure(settings, RUN_TO_FAILURE_SENSORS, ["alarm_active"])


def test_default_fleet_is_unchanged_bit_for_bit():
    # Seeds in configs and tests depend on the calendar fleet staying exactly as it was.
    sensors = ["temperature", "vibration", "pressure", "current", "rpm"]
    telemetry, events = generate_fleet(SyntheticSource(), sensors, ["pump_on", "alarm_active"])
    assert (len(telemetry), len(events)) == (57_600, 129)
    assert telemetry["temperature"].sum() == pytest.approx(4050246.252106, abs=1e-5)
    assert int(telemetry["alarm_active"].sum()) == 3944
    assert events["event_time"].iloc[0] == pd.Timestamp("2026-01-08 19:50:08.825763710")
    assert telemetry["timestamp"].iloc[-1] == pd.Timestamp("2026-01-30 23:31:11.698350452")


def test_run_to_failure_devices_start_together_and_fail_once_after_their_last_reading():
    telemetry, events = run_to_failure_fleet()
    per_device = telemetry.groupby("device_id")["timestamp"].agg(["min", "max", "count"])
    assert len(per_device) == 12
    assert per_device["min"].nunique() == 1  # every device starts at the same time
    assert events["device_id"].value_counts().eq(1).all()  # exactly one failure each
    assert sorted(events["device_id"]) == sorted(per_device.index)
    failure = events.set_index("device_id")["event_time"].loc[per_device.index]
    after_last = (failure - per_device["max"]) / pd.Timedelta(minutes=60)
    np.testing.assert_allclose(after_last, 1.0, atol=1e-6)  # one sample after the last reading
    # Lifetimes vary around `days` (0.5x to 2x).
    assert per_device["count"].nunique() > 6
    assert per_device["count"].max() > 1.5 * per_device["count"].min()
    assert 0.5 * 6 * 24 <= per_device["count"].min() and per_device["count"].max() <= 2 * 6 * 24


def test_run_to_failure_is_seeded():
    first, first_events = run_to_failure_fleet(seed=5)
    second, second_events = run_to_failure_fleet(seed=5)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first_events, second_events)
    other, _ = run_to_failure_fleet(seed=6)
    assert not first["temperature"].head(100).equals(other["temperature"].head(100))


def test_run_to_failure_sensors_drift_with_wear_and_never_recover():
    telemetry, events = run_to_failure_fleet()
    telemetry["position"] = telemetry.groupby("device_id").cumcount()
    telemetry["share_of_life"] = telemetry["position"] / telemetry.groupby("device_id")[
        "position"
    ].transform("max")
    phase = pd.cut(telemetry["share_of_life"], [-0.01, 0.2, 0.6, 0.9, 1.0], labels=False)
    spread = telemetry.groupby("device_id")[RUN_TO_FAILURE_SENSORS].transform(
        lambda s: s[telemetry.loc[s.index, "share_of_life"] <= 0.2].std()
    )
    standardised = telemetry[RUN_TO_FAILURE_SENSORS] / spread
    by_phase = standardised.groupby([telemetry["device_id"], phase]).mean()
    shift = by_phase.xs(3, level=1) - by_phase.xs(0, level=1)  # end of life against the start
    informative = [s for s in RUN_TO_FAILURE_SENSORS if (shift[s].abs() > 1.0).all()]
    # Some sensors drift (the same way on every device); at least one carries nothing.
    assert informative
    assert any((shift[s].abs() < 1.0).mean() > 0.8 for s in RUN_TO_FAILURE_SENSORS)
    for sensor in informative:
        direction = np.sign(shift[sensor])
        assert direction.nunique() == 1
        # Wear accumulates: the phases move monotonically away from the start, never back.
        path = by_phase[sensor].unstack() * direction.iloc[0]
        assert (path.diff(axis=1).iloc[:, 1:] > -0.5).all().all()
        assert (path[3] - path[2] > 0).mean() > 0.9  # the late phase is the fastest


def test_run_to_failure_through_the_config(write_config):
    config = load_config(
        write_config(
            {
                "source": {
                    "synthetic": {
                        "run_to_failure": True, "n_devices": 10, "days": 6,
                        "sample_minutes": 60, "seed": 3,
                    }
                },
                "split": {"by": "device"},
            }
        )
    )  # fmt: skip
    telemetry, events = read_source(config)
    assert telemetry["device_id"].nunique() == len(events) == 10
    clean, clean_events, report = validate(telemetry, events, config, "test")
    assert report["failures"] == 10
    # Every reading has a known label: each device's failure follows its last reading.
    labels = failure_within_horizon(clean, clean_events, 24, "device_id", "timestamp", "event_time")
    assert labels.notna().all()
    assert "synthetic://run_to_failure?" in describe_source(config)


def test_two_synthetic_shapes_at_once_is_a_config_error(write_config):
    config = load_config(
        write_config({"source": {"synthetic": {"run_to_failure": True, "process_log": True}}})
    )
    with pytest.raises(ConfigError, match="run_to_failure and process_log"):
        read_source(config)


def test_a_failure_long_after_the_last_reading_labels_the_final_rows():
    # C-MAPSS test trajectories end before the failure: the event comes after the telemetry.
    t0 = pd.Timestamp("2026-01-01")
    telemetry = pd.DataFrame(
        {"device_id": "A", "timestamp": [t0 + pd.Timedelta(hours=h) for h in range(10)]}
    )
    events = pd.DataFrame({"device_id": ["A"], "event_time": [t0 + pd.Timedelta(hours=12)]})
    columns = ("device_id", "timestamp", "event_time")
    labels = failure_within_horizon(telemetry, events, 5, *columns)
    # hours 0..6 are known healthy (the failure is known, beyond 5 h); 7, 8, 9 fail within 5 h.
    assert labels.tolist() == [0.0] * 7 + [1.0] * 3
    rul = remaining_useful_life(telemetry, events, 10, *columns)
    assert rul.tolist() == [10.0, 10.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0]


COMPONENT_SENSORS = ["volt", "rotate", "pressure", "vibration"]


def test_component_failures_show_in_their_one_sensor_only():
    settings = SyntheticSource(
        n_devices=6, days=40, sample_minutes=60, mean_days_between_failures=6, seed=11,
        component_failures=True,
    )  # fmt: skip
    telemetry, events = generate_fleet(settings, COMPONENT_SENSORS, ["alarm_active"])
    again, _ = generate_fleet(settings, COMPONENT_SENSORS, ["alarm_active"])
    pd.testing.assert_frame_equal(telemetry, again)
    assert set(events["failure_type"]) == {f"{s}_component" for s in COMPONENT_SENSORS}
    # Each sensor in standard deviations from its device's median.
    grouped = telemetry.groupby("device_id")[COMPONENT_SENSORS]
    deviation = ((telemetry[COMPONENT_SENSORS] - grouped.transform("median")).abs()) / (
        grouped.transform("std")
    )
    # Mean deviation of each sensor in the last 6 h before the failures of each component.
    rows = []
    for failure in events.itertuples():
        before = (
            (telemetry["device_id"] == failure.device_id)
            & (telemetry["timestamp"] > failure.event_time - pd.Timedelta(hours=6))
            & (telemetry["timestamp"] <= failure.event_time)
        )
        rows.append(deviation[before].assign(component=failure.failure_type))
    by_component = pd.concat(rows).groupby("component")[COMPONENT_SENSORS].mean()
    for sensor in COMPONENT_SENSORS:
        shown = by_component.loc[f"{sensor}_component"]
        assert shown[sensor] > 2.0, by_component
        assert (shown.drop(sensor) < 1.2).all(), by_component
    # The alarm fires at its healthy rate whatever fails.
    labels = failure_within_horizon(telemetry, events, 6, "device_id", "timestamp", "event_time")
    assert telemetry.loc[labels == 1, "alarm_active"].mean() < 0.1


def test_component_failures_through_the_config(write_config):
    config = load_config(
        write_config(
            {
                "source": {"synthetic": {"component_failures": True, "n_devices": 4, "days": 10}},
                "schema": {"continuous_sensors": COMPONENT_SENSORS, "boolean_sensors": []},
                "features": {"interactions": [["volt", "vibration"]]},
            }
        )
    )
    telemetry, events = read_source(config)
    assert len(events) > 0 and events["failure_type"].str.endswith("_component").all()
    assert "synthetic://component_fleet?" in describe_source(config)
    both = {"component_failures": True, "run_to_failure": True}
    config = load_config(write_config({"source": {"synthetic": both}}))
    with pytest.raises(ConfigError, match="run_to_failure and component_failures"):
        read_source(config)


def test_process_log_hits_its_positive_rate_and_is_seeded():
    log = generate_process_log(20_000, seed=1)
    assert log["machine_failure"].mean() == pytest.approx(0.034, abs=0.003)
    assert log["device_id"].nunique() == 1
    assert log["timestamp"].diff().dropna().eq(pd.Timedelta(minutes=1)).all()
    pd.testing.assert_frame_equal(log, generate_process_log(20_000, seed=1))
    assert not log["torque"].equals(generate_process_log(20_000, seed=2)["torque"])
    assert generate_process_log(20_000, seed=1, positive_rate=0.08)[
        "machine_failure"
    ].mean() == pytest.approx(0.08, abs=0.006)


def test_process_log_failures_follow_the_physics():
    log = generate_process_log(20_000, seed=4)
    failing = log["machine_failure"] == 1
    power = log["torque"] * log["rotational_speed"] * 2 * np.pi / 60  # W
    # AI4I's own power band: failing rows leave it far more often than healthy ones.
    outside_band = (power < 3500) | (power > 9000)
    assert outside_band[failing].mean() > 5 * outside_band[~failing].mean()
    # Heat dissipation: at low speed a small process-air temperature difference fails.
    difference = log["process_temperature"] - log["air_temperature"]
    slow = log["rotational_speed"] < 1380
    assert difference[slow & failing].mean() < difference[slow & ~failing].mean() - 0.5
    # Overstrain: worn tools under high torque.
    strain = log["tool_wear"] * log["torque"]
    assert strain[failing].quantile(0.75) > strain[~failing].quantile(0.9)
    modes = set("+".join(log.loc[failing, "failure_mode"]).split("+"))
    assert modes == {"tool_wear", "heat_dissipation", "power", "overstrain", "random"}
    assert (log.loc[~failing, "failure_mode"] == "").all()


def test_process_log_tool_wear_rises_and_resets_at_tool_changes():
    wear = generate_process_log(5_000, seed=3)["tool_wear"]
    steps = wear.diff().dropna()
    assert set(steps[steps > 0].unique()) <= {2.0, 3.0, 5.0}
    resets = steps < 0
    assert resets.sum() > 30  # about one tool change per 70 runs
    assert (wear[resets[resets].index] == 0).all()
    assert wear.min() == 0 and 200 <= wear.max() <= 245


def test_process_log_through_the_config(write_config):
    process_sensors = ["air_temperature", "process_temperature", "rotational_speed", "torque",
                       "tool_wear"]  # fmt: skip
    overrides = {
        "source": {"synthetic": {"process_log": True, "days": 2, "sample_minutes": 1}},
        "schema": {"continuous_sensors": process_sensors, "boolean_sensors": []},
        "labels": {"target_column": "machine_failure"},
        "features": {"interactions": [["torque", "rotational_speed"]], "spectral_sensors": []},
    }
    config = load_config(write_config(overrides))
    telemetry, events = read_source(config)
    assert len(telemetry) == 2 * 24 * 60 and events.empty
    _, _, report = validate(telemetry, events, config, "test")
    assert report["label_positive_rate"] == pytest.approx(0.034, abs=0.01)
    # The label is the column: no events is no reason to warn that every label will be 0.
    assert not any("no failure events" in w for w in report["warnings"])
    assert describe_source(config).startswith("synthetic://process_log?")

    no_target = load_config(write_config({**overrides, "labels": {"target_column": None}}))
    with pytest.raises(ConfigError, match="set labels.target_column"):
        read_source(no_target)
    other_schema = {**overrides, "schema": {"continuous_sensors": [*process_sensors, "pressure"]}}
    with pytest.raises(ConfigError, match="schema names sensor 'pressure'"):
        read_source(load_config(write_config(other_schema)))


def test_logged_dataset_schema_is_the_one_mlflow_would_infer():
    """frame_dataset gives MLflow's pandas dataset the schema MLflow's own (value by value)
    inference gives, required flags included, with the same digest and profile."""
    import mlflow

    from pdmflow.data.dataset_source import RunArtifactDatasetSource, frame_dataset

    frame = pd.DataFrame(
        {
            "device_id": ["a", "b", "c"] * 700,
            "timestamp": pd.date_range("2026-01-01", periods=2100, freq="30min", tz="UTC"),
            "temperature": np.linspace(20.0, 80.0, 2100),
            "pump_on": [True, False, True] * 700,
            "cycles": np.arange(2100),
        }
    )
    # A missing value beyond the rows the types are read from: that column is not required.
    frame.loc[2050, "temperature"] = np.nan
    # Text that starts after the first thousand rows.
    frame["note"] = [None] * 1500 + ["valve serviced"] * 600
    source = RunArtifactDatasetSource("runs:/0/dataset/telemetry.parquet", origin="test")

    def assert_as_mlflow_infers(frame: pd.DataFrame) -> None:
        ours = frame_dataset(frame, source, name="t")
        theirs = mlflow.data.from_pandas(frame, source=source, name="t")
        assert ours.schema == theirs.schema
        assert ours.digest == theirs.digest and ours.profile == theirs.profile
        assert ours.to_dict() == theirs.to_dict()

    assert_as_mlflow_infers(frame)
    schema = frame_dataset(frame, source, name="t").schema.input_dict()
    assert not schema["temperature"].required and schema["pump_on"].required
    assert schema["note"].type.name == "string" and not schema["note"].required
    # Columns only their values can type (mixed objects, none present) go through MLflow's.
    assert_as_mlflow_infers(frame.assign(note=[None] * 2099 + [3]))
    assert_as_mlflow_infers(frame.assign(note=None))
