"""storage.uri: step outputs as partitioned Parquet datasets in a directory (or bucket),
referenced from the runs instead of copied into the artifact store (issue 26)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import LENIENT_GATES, SMOKE, deep_merge
from mlflow import MlflowClient

from pdmflow.artifacts import LOCATION_FILE, read_dataset, read_features
from pdmflow.config import STORAGE_URI_ENV, TenantConfig, load_config, storage_uri
from pdmflow.data import sources
from pdmflow.data.sources import read_source, read_source_groups
from pdmflow.engine.storage import output_location, read_partitioned, write_partitioned
from pdmflow.errors import ConfigError, DataValidationError
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.pipeline import run_pipeline


def fleet_frame() -> pd.DataFrame:
    """Three devices' rows grouped by device, with the types telemetry and features carry: a
    column missing in one device's rows only, and one missing everywhere."""
    frame = pd.DataFrame(
        {
            "device_id": ["a"] * 3 + ["b"] * 4 + ["c"] * 2,
            "timestamp": pd.date_range("2026-01-01", periods=9, freq="h"),
            "volt": np.arange(9, dtype=float),
            "label": [0, 0, 1, 0, 0, 0, 1, 0, 1],
            "note": [None, None, None, "x", "y", "z", "w", None, None],
            "empty": [np.nan] * 9,
        }
    )
    frame.loc[frame["device_id"] == "c", "volt"] = np.nan
    return frame


@pytest.mark.parametrize("root", ["{tmp}/store", "memory://pdmflow-test"])
def test_a_table_reads_back_row_for_row_from_parts_of_whole_devices(tmp_path, root):
    frame = fleet_frame()
    location = root.format(tmp=tmp_path) + "/telemetry"
    parts = write_partitioned(frame, location, "device_id", partition_rows=3)
    assert parts == 3  # a, then b (4 rows: a device is never split), then c
    pd.testing.assert_frame_equal(read_partitioned(location), frame)
    # Without a device column: partition_rows rows a part.
    assert write_partitioned(frame, location + "-rows", None, partition_rows=4) == 3
    pd.testing.assert_frame_equal(read_partitioned(location + "-rows"), frame)


def test_an_empty_table_keeps_its_columns_and_types(tmp_path):
    empty = fleet_frame().iloc[:0]
    assert write_partitioned(empty, str(tmp_path / "events"), "device_id", 10) == 1
    back = read_partitioned(str(tmp_path / "events"))
    assert len(back) == 0
    pd.testing.assert_series_equal(back.dtypes, empty.dtypes)


def test_a_rewrite_leaves_no_part_of_the_earlier_table(tmp_path):
    frame = fleet_frame()
    location = str(tmp_path / "telemetry")
    assert write_partitioned(frame, location, "device_id", partition_rows=1) == 3
    assert write_partitioned(frame.head(3), location, "device_id", partition_rows=1) == 1
    pd.testing.assert_frame_equal(read_partitioned(location), frame.head(3))


def test_a_relative_storage_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    where = output_location("store", "plant", "ingest", "abc")
    assert where == f"{tmp_path.resolve()}/store/plant/ingest/abc"
    assert output_location("s3://bucket/pdmflow/", "plant", "ingest", "abc") == (
        "s3://bucket/pdmflow/plant/ingest/abc"
    )


def test_a_location_without_parts_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .parquet parts"):
        read_partitioned(str(tmp_path))


def smoke_config(**overrides) -> TenantConfig:
    raw = deep_merge(yaml.safe_load(SMOKE.read_text()), overrides)
    return TenantConfig.model_validate(raw)


def test_the_environment_names_the_storage_and_credentials_never_sit_in_the_url(monkeypatch):
    monkeypatch.delenv(STORAGE_URI_ENV, raising=False)
    config = smoke_config(storage={"uri": "/data/pdmflow"})
    assert storage_uri(config.storage) == "/data/pdmflow"
    monkeypatch.setenv(STORAGE_URI_ENV, "s3://fleet-bucket/pdmflow")
    assert storage_uri(config.storage) == "s3://fleet-bucket/pdmflow"
    monkeypatch.setenv(STORAGE_URI_ENV, "s3://key:secret@fleet-bucket/pdmflow")
    with pytest.raises(ConfigError, match=STORAGE_URI_ENV) as refused:
        storage_uri(config.storage)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"storage": {"uri": "s3://u:hunter2@bucket/x"}}, "storage.uri"),
        (
            {"source": {"kind": "csv", "telemetry_path": "s3://u:hunter2@bucket/t.csv"}},
            "source.telemetry_path",
        ),
        ({"storage": {"uri": "simplecache::s3://u:hunter2@bucket/x"}}, "storage.uri"),
        (
            {"source": {"kind": "csv", "telemetry_path": "https://h/t.csv?sig=hunter2"}},
            "source.telemetry_path",
        ),
    ],
)
def test_a_url_with_a_password_is_refused_in_the_config(tmp_path, overrides, key):
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(SMOKE.read_text()), overrides)))
    with pytest.raises(ConfigError, match=rf"{key}: a file or storage URL carries no") as bad:
        load_config(path)
    assert "hunter2" not in str(bad.value)


def test_azure_names_its_container_before_the_at_sign_and_is_accepted():
    config = smoke_config(storage={"uri": "abfs://fleet@account.dfs.core.windows.net/pdmflow"})
    assert config.storage.uri.startswith("abfs://fleet@")


@pytest.mark.slow
@pytest.mark.cost(seconds=40)
def test_the_pipeline_keeps_its_data_in_storage_and_releases(tracking_store, tmp_path):
    store = tmp_path / "store"
    overrides = {
        "evaluation": {"robustness": False, "shap_rows": 100},
        "gates": LENIENT_GATES,
    }
    config = smoke_config(**overrides, storage={"uri": str(store)})
    version = run_pipeline(config, n_trials=1)
    assert version == "1"

    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment_name)

    def step_run(step: str):
        (run,) = client.search_runs([experiment.experiment_id], f"tags.`pdmflow.step` = '{step}'")
        return run

    ingest, features = step_run("ingest"), step_run("features")
    # The artifact store holds pointers; the data sit in storage, in parts of whole devices.
    logged = {f.path for f in client.list_artifacts(ingest.info.run_id, "dataset")}
    assert logged == {f"dataset/{LOCATION_FILE}"}
    logged = {f.path for f in client.list_artifacts(features.info.run_id, "features")}
    assert not any(path.endswith(".parquet") for path in logged), logged
    ingest_dir = store / config.tenant_id / "ingest" / ingest.info.run_id
    assert sorted(p.name for p in (ingest_dir / "telemetry").iterdir())[0] == "part-00000.parquet"
    for split in ("train", "validation", "test"):
        assert any((store / config.tenant_id / "features" / features.info.run_id / split).iterdir())

    # Each run references what it wrote: the location and the digest.
    (telemetry_input,) = ingest.inputs.dataset_inputs
    assert telemetry_input.dataset.source_type == "local"
    assert str(ingest_dir / "telemetry") in telemetry_input.dataset.source
    assert telemetry_input.dataset.digest == ingest.data.tags["pdmflow.dataset_digest"]
    contexts = {
        tag.value
        for logged_input in features.inputs.dataset_inputs
        for tag in logged_input.tags
        if tag.key == "mlflow.data.context"
    }
    assert contexts == {"output:train", "output:validation", "output:test"}

    # The same data as when the runs hold them: ingest and features again, without storage.
    plain = smoke_config(**overrides)
    data_uri = run_ingest(plain)
    features_uri = run_features(plain, data_uri)
    stored_telemetry, stored_events = read_dataset(f"runs:/{ingest.info.run_id}/dataset")
    telemetry, events = read_dataset(data_uri)
    pd.testing.assert_frame_equal(stored_telemetry, telemetry)
    pd.testing.assert_frame_equal(stored_events, events)
    stored_tables, _ = read_features(f"runs:/{features.info.run_id}/features")
    tables, _ = read_features(features_uri)
    for split, table in tables.items():
        pd.testing.assert_frame_equal(stored_tables[split], table)

    # What evaluate reads, in either form: the test split alone, the test devices' readings.
    devices = tables["test"]["device_id"].unique()[:2]
    expected = telemetry[telemetry["device_id"].isin(devices)].reset_index(drop=True)
    assert 0 < len(expected) < len(telemetry)
    for uri, features_at in (
        (data_uri, features_uri),
        (f"runs:/{ingest.info.run_id}/dataset", f"runs:/{features.info.run_id}/features"),
    ):
        some, _ = read_dataset(uri, devices, "device_id")
        pd.testing.assert_frame_equal(some, expected)
        only_test, _ = read_features(features_at, splits=("test",))
        assert list(only_test) == ["test"]
        pd.testing.assert_frame_equal(only_test["test"], tables["test"])


def split_facts(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    """A features run's params and metrics, less the engine's."""
    run = client.get_run(run_id)
    params = {k: v for k, v in run.data.params.items() if not k.startswith("engine_")}
    return params, run.data.metrics


@pytest.mark.slow
@pytest.mark.cost(seconds=40)
@pytest.mark.parametrize(
    "split",
    [{"by": "time", "holdout_device_fraction": 0.2}, {"by": "device"}],
    ids=["time", "device"],
)
def test_features_built_part_by_part_on_workers_equal_the_in_memory_ones(
    tracking_store, tmp_path, split
):
    """With the dataset in storage, features are built per telemetry part on the workers and
    written to storage from there: the same tables, split, params and metrics as in memory."""
    store = tmp_path / "store"
    # Parts of a few devices each (the fleet has 16), over two workers.
    engine = {"kind": "dask", "n_workers": 2, "threads_per_worker": 1, "partition_rows": 1500}
    stored = smoke_config(split=split, storage={"uri": str(store)}, engine=engine)
    features_uri = run_features(stored, run_ingest(stored))
    plain = smoke_config(split=split)
    plain_uri = run_features(plain, run_ingest(plain))

    run_id = features_uri.split("/")[1]
    base = store / stored.tenant_id / "features" / run_id
    assert sorted(p.name for p in base.iterdir()) == ["test", "train", "validation"]  # no staging
    telemetry_parts = list((store / stored.tenant_id / "ingest").glob("*/telemetry/*.parquet"))
    assert len(telemetry_parts) > 2
    for name in ("train", "validation", "test"):
        assert len(list((base / name).iterdir())) == len(telemetry_parts)  # part k of part k
    tables, _ = read_features(features_uri)
    expected, _ = read_features(plain_uri)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(tables[name], table, check_exact=False, rtol=1e-9)
    client = MlflowClient()
    params, metrics = split_facts(client, run_id)
    plain_params, plain_metrics = split_facts(client, plain_uri.split("/")[1])
    assert {k: v for k, v in params.items() if k != "data_uri"} == {
        k: v for k, v in plain_params.items() if k != "data_uri"
    }
    assert metrics == pytest.approx(plain_metrics, rel=1e-12)
    assert params["split_by"] == split["by"]

    # Each split is referenced with its location, the digest of its parts and its schema.
    inputs = {
        tag.value: logged.dataset
        for logged in client.get_run(run_id).inputs.dataset_inputs
        for tag in logged.tags
        if tag.key == "mlflow.data.context"
    }
    assert set(inputs) == {"output:train", "output:validation", "output:test"}
    train = inputs["output:train"]
    assert str(base / "train") in train.source and len(train.digest) == 8
    columns = {column["name"] for column in json.loads(train.schema)["mlflow_colspec"]}
    assert columns == set(expected["train"].columns)


@pytest.mark.slow
@pytest.mark.cost(seconds=15)
def test_a_split_refused_after_the_parts_are_built_leaves_nothing_in_storage(
    tracking_store, tmp_path
):
    store = tmp_path / "store"
    two = {"synthetic": {"n_devices": 2}}
    config = smoke_config(source=two, split={"by": "device"}, storage={"uri": str(store)})
    data_uri = run_ingest(config)
    with pytest.raises(DataValidationError) as stored_error:
        run_features(config, data_uri)
    plain = smoke_config(source=two, split={"by": "device"})
    with pytest.raises(DataValidationError) as plain_error:
        run_features(plain, run_ingest(plain))
    assert str(stored_error.value) == str(plain_error.value)
    assert "split.by device needs at least 3 devices" in str(stored_error.value)
    assert not (store / config.tenant_id / "features").exists() or not any(
        (store / config.tenant_id / "features").iterdir()
    )


def validation_report(run_uri: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_uri.split('/')[1]}/validation_report.json")


@pytest.mark.slow
@pytest.mark.cost(seconds=20)
@pytest.mark.parametrize(
    "overrides",
    [
        # Readings out of range (treated as missing, then carried forward) in several groups.
        {
            "schema": {"value_ranges": {"temperature": [0, 77]}},
            "data": {"max_out_of_range_fraction": 0.5},
        },
        {"labels": {"target_column": "failure_indicator"}},
    ],
    ids=["value-ranges", "target-column"],
)
def test_ingest_a_group_of_devices_at_a_time_reports_and_stores_the_whole_fleets_data(
    tracking_store, tmp_path, overrides
):
    """With storage, the synthetic fleet is made, validated and written a group of devices at
    a time: the same telemetry and events, and the same validation report, as read whole."""
    engine = {"partition_rows": 1500}  # groups of three devices
    stored = smoke_config(**overrides, storage={"uri": str(tmp_path / "store")}, engine=engine)
    stored_uri = run_ingest(stored)
    plain_uri = run_ingest(smoke_config(**overrides))
    parts = list((tmp_path / "store").glob("*/ingest/*/telemetry/*.parquet"))
    assert len(parts) == 6
    report = validation_report(stored_uri)
    assert report == validation_report(plain_uri)
    assert report["rows"] == 16 * 504
    if "schema" in overrides:  # counted over the groups, each in its own
        assert report["out_of_range"]["temperature"] > 0 and report["null_fraction"]["temperature"]
    else:
        assert 0 < report["label_positive_rate"] < 1
    for mine, theirs in zip(read_dataset(stored_uri), read_dataset(plain_uri), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.slow
@pytest.mark.cost(seconds=10)
def test_a_bad_device_in_a_later_group_is_one_line_and_nothing_stays_in_storage(
    tracking_store, tmp_path
):
    store = tmp_path / "store"
    config = smoke_config(
        schema={"value_ranges": {"temperature": [0, 72]}},
        storage={"uri": str(store)},
        engine={"partition_rows": 1500},
    )
    with pytest.raises(DataValidationError) as bad:
        run_ingest(config)
    message = str(bad.value)
    assert "\n" not in message and "device 'D00" in message and "column 'temperature'" in message
    assert not any((store / config.tenant_id / "ingest").iterdir())
    (run,) = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(config.experiment_name).experiment_id]
    )
    assert run.info.status == "FAILED"


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """`frame` as the file its suffix names (.parquet, .csv or .jsonl)."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")


def exported_fleet(folder: Path, hive: bool, kind: str = "parquet") -> dict:
    """The smoke fleet as files a plant might export (`kind`: parquet, csv or jsonl), and the
    source block reading them: hive folders of one device each, or three files of every device
    (a day range each, rows shuffled, the device column named `machine`, one reading sent twice
    with a correction in a later file)."""
    telemetry, events = read_source(smoke_config())
    telemetry = telemetry.sample(frac=1.0, random_state=3).reset_index(drop=True)
    folder.mkdir()
    suffix = f".{kind}"
    if hive:
        for device, rows in telemetry.groupby("device_id"):
            (folder / f"device_id={device}").mkdir()
            write_table(rows.drop(columns="device_id"), folder / f"device_id={device}/0{suffix}")
        write_table(events, folder.parent / f"events{suffix}")
        return {
            "kind": kind,
            "telemetry_path": str(folder),
            "events_path": str(folder.parent / f"events{suffix}"),
        }
    renamed = telemetry.rename(columns={"device_id": "machine"})
    days = renamed["timestamp"].dt.day
    corrected = renamed.iloc[[5]].assign(temperature=99.0)
    for index, (low, high) in enumerate([(0, 8), (8, 15), (15, 32)]):
        rows = renamed[(days >= low) & (days < high)]
        if index == 2:
            rows = pd.concat([rows, corrected])
        write_table(rows, folder / f"day-{index}{suffix}")
    write_table(events.rename(columns={"device_id": "machine"}), folder.parent / f"events{suffix}")
    return {
        "kind": kind,
        "telemetry_path": str(folder / f"day-*{suffix}"),
        "events_path": str(folder.parent / f"events{suffix}"),
    }


@pytest.mark.slow
@pytest.mark.cost(seconds=40)
@pytest.mark.parametrize(
    "kind, hive",
    [("parquet", False), ("parquet", True), ("csv", False), ("jsonl", True)],
    ids=[
        "parquet-files-of-every-device",
        "parquet-hive",
        "csv-files-of-every-device",
        "jsonl-hive",
    ],
)
def test_files_are_ingested_a_group_of_devices_at_a_time(
    tracking_store, tmp_path, kind, hive, monkeypatch
):
    """Parquet with a filter on the device column; CSV and JSON lines read in chunks (here of
    700 rows: a file in several), each group's devices kept: the same report and tables as
    reading the files whole."""
    monkeypatch.setattr(sources, "TEXT_CHUNK_ROWS", 700)
    source = exported_fleet(tmp_path / "export", hive, kind)
    schema = {} if hive else {"schema": {"rename": {"machine": "device_id"}}}
    stored = smoke_config(
        source=source,
        **schema,
        storage={"uri": str(tmp_path / "store")},
        engine={"partition_rows": 1500},
    )
    assert read_source_groups(stored, lambda rows: 1500) is not None
    stored_uri = run_ingest(stored)
    plain_uri = run_ingest(smoke_config(source=source, **schema))
    assert len(list((tmp_path / "store").glob("*/ingest/*/telemetry/*.parquet"))) == 6
    report = validation_report(stored_uri)
    assert report == validation_report(plain_uri)
    if not hive:
        assert "1 duplicate (device, timestamp) rows; kept the last" in report["warnings"]
    for mine, theirs in zip(read_dataset(stored_uri), read_dataset(plain_uri), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.slow
@pytest.mark.cost(seconds=15)
def test_a_sql_table_is_ingested_a_group_of_devices_at_a_time(tracking_store, tmp_path):
    """A query per group of devices, with the tenant's own filters (here: 12 of the 16
    devices): the same report and tables as the whole query's."""
    import sqlalchemy as sa

    telemetry, events = read_source(smoke_config())
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plant.db'}")
    telemetry.rename(columns={"device_id": "asset"}).to_sql("readings", engine, index=False)
    events.rename(columns={"device_id": "asset"}).to_sql("failures", engine, index=False)
    engine.dispose()
    devices = sorted(telemetry["device_id"].unique())[:12]
    source = {
        "kind": "sql",
        "url": f"sqlite:///{tmp_path / 'plant.db'}",
        "telemetry_table": "readings",
        "events_table": "failures",
        "devices": devices,
        "chunk_rows": 1000,
    }
    schema = {"rename": {"asset": "device_id"}}
    stored = smoke_config(
        source=source,
        schema=schema,
        storage={"uri": str(tmp_path / "store")},
        engine={"partition_rows": 1500},
    )
    assert read_source_groups(stored, lambda rows: 1500) is not None
    stored_uri = run_ingest(stored)
    plain_uri = run_ingest(smoke_config(source=source, schema=schema))
    assert len(list((tmp_path / "store").glob("*/ingest/*/telemetry/*.parquet"))) == 4
    report = validation_report(stored_uri)
    assert report == validation_report(plain_uri) and report["devices"] == 12
    for mine, theirs in zip(read_dataset(stored_uri), read_dataset(plain_uri), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
