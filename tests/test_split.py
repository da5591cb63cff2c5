"""Splits by device and by time, grouped and purged folds, and the split report's warnings."""

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.artifacts import LABELS
from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.features.split import (
    device_folds,
    device_split,
    label_and_split,
    learning_folds,
    split_report,
)

LABEL = LABELS["classification"]


def _fleet(n: int) -> list[str]:
    return [f"unit-{i:03d}" for i in range(n)]


def test_device_split_puts_each_device_in_one_split_with_failing_devices_everywhere():
    devices = _fleet(60)
    failing = set(devices[::3])  # 20 failing devices
    assignment = device_split(pd.Series(devices), failing, 0.15, 0.2, seed=3)
    assert set(assignment) == set(devices)  # each device has exactly one split
    for split in ("train", "validation", "test"):
        members = {d for d, s in assignment.items() if s == split}
        assert members & failing, f"no failing device in {split}"
        assert members - failing, f"no healthy device in {split}"
    counts = pd.Series(assignment).value_counts()
    assert counts["train"] > counts["test"] > 0 and counts["validation"] > 0


def test_device_split_is_stable_when_devices_are_added():
    before = device_split(pd.Series(_fleet(50)), set(_fleet(50)), 0.15, 0.2, seed=0)
    after = device_split(pd.Series(_fleet(80)), set(_fleet(80)), 0.15, 0.2, seed=0)
    moved = [d for d in before if before[d] != after[d]]
    assert moved == []
    reseeded = device_split(pd.Series(_fleet(50)), set(_fleet(50)), 0.15, 0.2, seed=1)
    assert reseeded != before  # the seed matters


def test_tiny_stratum_is_repaired_so_each_split_sees_a_failing_device():
    devices = _fleet(30)
    failing = {"unit-000", "unit-001", "unit-002"}
    assignment = device_split(pd.Series(devices), failing, 0.15, 0.2, seed=0)
    assert {assignment[d] for d in failing} == {"train", "validation", "test"}


def test_grouped_folds_never_share_a_device():
    rng = np.random.default_rng(0)
    devices = pd.Series(np.repeat(_fleet(20), 30))
    labels = pd.Series(rng.integers(0, 2, len(devices)))
    folds = device_folds(devices, labels, 4, seed=0)
    assert len(folds) == 4
    seen: set[str] = set()
    for fit_rows, valid_rows in folds:
        fit_devices, valid_devices = set(devices[fit_rows]), set(devices[valid_rows])
        assert not fit_devices & valid_devices
        assert not valid_devices & seen  # each device validated once
        seen |= valid_devices
    assert seen == set(devices)


@pytest.fixture(scope="module")
def smoke_data():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    clean, clean_events, _ = validate(telemetry, events, config, "test")
    return clean, clean_events


def test_split_by_device_sends_whole_histories_and_cv_groups_them(smoke_data, write_config):
    telemetry, events = smoke_data
    config = load_config(
        write_config({"split": {"by": "device", "cv_folds": 3, "test_fraction": 0.25}})
    )
    tables, _, params, membership = label_and_split(telemetry, events, config, LABEL)
    device_sets = {name: set(table["device_id"]) for name, table in tables.items()}
    assert not device_sets["train"] & device_sets["validation"]
    assert not device_sets["train"] & device_sets["test"]
    assert not device_sets["validation"] & device_sets["test"]
    assert params["split_by"] == "device"
    assert membership["devices"]["test"] == sorted(device_sets["test"])
    # whole histories: a test device keeps all its labelled rows
    for device in device_sets["test"]:
        built = telemetry[telemetry["device_id"] == device]
        assert len(tables["test"][tables["test"]["device_id"] == device]) > 0.5 * len(built)
    learning = pd.concat([tables["train"], tables["validation"]], ignore_index=True)
    folds = learning_folds(learning, len(tables["train"]), config, "device_id", "timestamp", LABEL)
    for fit_rows, valid_rows in folds:
        fit_devices = set(learning["device_id"].iloc[fit_rows])
        assert not fit_devices & set(learning["device_id"].iloc[valid_rows])


def test_split_report_warns_with_numbers_and_names_the_setting(smoke_data, write_config):
    telemetry, events = smoke_data
    config = load_config(write_config({"split": {"by": "device"}}))
    tables, _, _, _ = label_and_split(telemetry, events, config, LABEL)
    report = split_report(tables, config, LABEL)
    validation_devices = report["splits"]["validation"]["devices"]
    assert validation_devices < 10  # 16 devices: the split cannot leave 10 for validation
    expected = f"validation split has {validation_devices} devices (fewer than 10)"
    assert any(expected in w and "split.validation_fraction" in w for w in report["warnings"])

    # A test period far richer in positives than training: the time split of a run-to-failure
    # shape. Hand-made tables give exact numbers.
    def table(device: str, rows: int, positives: int) -> pd.DataFrame:
        return pd.DataFrame(
            {"device_id": device, LABEL: [1.0] * positives + [0.0] * (rows - positives)}
        )

    time_config = load_config(write_config({"split": {"by": "time"}}))
    tables = {
        "train": table("a", 1000, 50),
        "validation": table("a", 200, 30),
        "test": table("a", 100, 40),
    }
    warnings = split_report(tables, time_config, LABEL)["warnings"]
    assert any(
        "test positive rate 40.0% is 8.0x the training rate 5.0%" in w and "split.by: device" in w
        for w in warnings
    )
    assert not any("validation split has" in w and "positive rows" in w for w in warnings)
    tables["validation"] = table("a", 200, 12)
    warnings = split_report(tables, time_config, LABEL)["warnings"]
    assert any("validation split has 12 positive rows (fewer than 20)" in w for w in warnings)


def test_a_fold_without_failures_is_an_error_naming_the_setting(write_config):
    from pdmflow.errors import DataValidationError

    config = load_config(write_config({"split": {"cv_folds": 3}}))
    times = pd.Series(pd.date_range("2026-01-01", periods=400, freq="h"))
    # Failures only in the last tenth: the early folds have nothing to learn from.
    labels = (np.arange(400) >= 360).astype(float)
    learning = pd.DataFrame({"device_id": "a", "timestamp": times, LABEL: labels})
    with pytest.raises(DataValidationError, match=r"split.cv_folds 3: fold 1 has only one label"):
        learning_folds(learning, 340, config, "device_id", "timestamp", LABEL)
    config = load_config(write_config({"split": {"cv_folds": 0}}))
    ((fit_rows, valid_rows),) = learning_folds(
        learning, 340, config, "device_id", "timestamp", LABEL
    )
    assert list(fit_rows) == list(range(340)) and list(valid_rows) == list(range(340, 400))


def test_run_to_failure_fleet_wants_a_device_split(write_config):
    """A time split of a run-to-failure fleet leaves only the last readings of long-lived units
    in test (the report says so and names split.by); a device split holds out whole units."""
    fleet = {
        "source": {
            "synthetic": {
                "run_to_failure": True, "n_devices": 40, "days": 5, "sample_minutes": 60,
                "degradation_hours": 24, "seed": 3,
            }
        },
        "features": {"lags": ["1h", "3h"], "windows": ["3h", "6h"], "time_since_failure": False},
        "labels": {"horizon_hours": 12},
    }  # fmt: skip
    reports = {}
    for by in ("time", "device"):
        config = load_config(write_config({**fleet, "split": {"by": by}}, name=f"{by}.yaml"))
        telemetry, events = read_source(config)
        telemetry, events, _ = validate(telemetry, events, config, "test")
        tables, _, _, _ = label_and_split(telemetry, events, config, LABEL)
        reports[by] = split_report(tables, config, LABEL)
    rate_warning = "training rate"
    assert any(rate_warning in w and "split.by: device" in w for w in reports["time"]["warnings"])
    assert not any(rate_warning in w for w in reports["device"]["warnings"])
    device_splits = reports["device"]["splits"]
    assert all(device_splits[name]["positive_rows"] > 0 for name in device_splits)
