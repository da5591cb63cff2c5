"""Bad input through the command line: one clear line, non-zero exit, registry untouched."""

import sqlite3

import pytest
from conftest import SMOKE, cli

from pdmflow.config import load_config
from pdmflow.data.sources import read_source

pytestmark = pytest.mark.cost(seconds=90)


def registered_versions(tmp_path):
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        tables = {r[0] for r in connection.execute("select name from sqlite_master")}
        if "model_versions" not in tables:
            return []
        return connection.execute("select name, version from model_versions").fetchall()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pdmflow ")]


@pytest.fixture
def store_env(tmp_path):
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


@pytest.fixture
def smoke_frames():
    return read_source(load_config(SMOKE))


def assert_clean_failure(result, tmp_path, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    for text in expected:
        assert text in line
    assert registered_versions(tmp_path) == []


def test_unknown_config_key(tmp_path, write_config, store_env):
    path = write_config({"gates": {"min_aucc": 0.8}})
    result = cli("main", "--config", str(path), env=store_env, cwd=tmp_path)
    assert_clean_failure(result, tmp_path, "unknown key 'gates.min_aucc'", str(path))


def test_missing_required_column(tmp_path, write_config, store_env, smoke_frames):
    telemetry, events = smoke_frames
    telemetry.drop(columns="vibration").to_csv(tmp_path / "plant.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    path = write_config(
        {
            "source": {
                "kind": "csv",
                "telemetry_path": str(tmp_path / "plant.csv"),
                "events_path": str(tmp_path / "events.csv"),
            }
        }
    )
    result = cli("main", "--config", str(path), env=store_env, cwd=tmp_path)
    assert_clean_failure(result, tmp_path, "plant.csv", "missing required column 'vibration'")


def test_empty_dataset(tmp_path, write_config, store_env, smoke_frames):
    telemetry, events = smoke_frames
    telemetry.head(0).to_parquet(tmp_path / "plant.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    path = write_config(
        {
            "source": {
                "kind": "parquet",
                "telemetry_path": str(tmp_path / "plant.parquet"),
                "events_path": str(tmp_path / "events.parquet"),
            }
        }
    )
    result = cli("ingest", "--config", str(path), env=store_env, cwd=tmp_path)
    assert_clean_failure(result, tmp_path, "plant.parquet", "empty")


@pytest.mark.parametrize("threads", ["two", "0"])
def test_bad_thread_count(tmp_path, write_config, store_env, threads):
    env = {**store_env, "PDMFLOW_THREADS": threads}
    result = cli("main", "--config", str(write_config()), env=env, cwd=tmp_path)
    assert_clean_failure(result, tmp_path, "PDMFLOW_THREADS", f"got '{threads}'")
    # Checked before the tracking store is touched: no run, not even a failed one.
    assert not (tmp_path / "mlflow.db").exists()


def test_a_step_without_its_input(tmp_path, write_config, store_env):
    result = cli("train", "--config", str(write_config()), env=store_env, cwd=tmp_path)
    assert_clean_failure(result, tmp_path, "no finished 'features' run", "pdmflow-smoke")


def test_csv_source_runs_the_pipeline(tmp_path, write_config, store_env, smoke_frames):
    telemetry, events = smoke_frames
    telemetry.sample(frac=1, random_state=1).to_csv(tmp_path / "plant.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    path = write_config(
        {
            "source": {
                "kind": "csv",
                "telemetry_path": str(tmp_path / "plant.csv"),
                "events_path": str(tmp_path / "events.csv"),
            },
            "tuning": {"n_trials": 2},
        }
    )
    result = cli("main", "--config", str(path), env=store_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "released pdmflow-smoke-failure version 1" in result.stdout
    assert registered_versions(tmp_path) == [("pdmflow-smoke-failure", 1)]


def test_threshold_rule_without_its_number(tmp_path, write_config, store_env):
    path = write_config({"training": {"threshold": {"rule": "precision_at_least"}}})
    result = cli("main", "--config", str(path), env=store_env, cwd=tmp_path)
    assert_clean_failure(
        result, tmp_path, "training.threshold.precision is required for rule precision_at_least"
    )


def test_device_split_of_a_single_machine(tmp_path, write_config, store_env, smoke_frames):
    telemetry, events = smoke_frames
    one = telemetry[telemetry["device_id"] == telemetry["device_id"].iloc[0]]
    one.to_csv(tmp_path / "machine.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    path = write_config(
        {
            "source": {
                "kind": "csv",
                "telemetry_path": str(tmp_path / "machine.csv"),
                "events_path": str(tmp_path / "events.csv"),
            },
            "data": {"min_rows": 100},
            "split": {"by": "device"},
        }
    )
    result = cli("main", "--config", str(path), env=store_env, cwd=tmp_path)
    assert_clean_failure(
        result, tmp_path, "split.by device needs at least 3 devices", "use split.by time"
    )
