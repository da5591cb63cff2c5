"""engine: dask. Features on a LocalCluster and on a real `dask scheduler` + `dask worker` equal
the local engine's (also built part by part from storage, on the shipped tenants); an unreachable
scheduler, a bad engine block and bad data in a partition are one line, as on the local path; a
worker killed mid-features has its tasks run again on the other, with the same features."""

from __future__ import annotations

import os
import threading
import urllib.request
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMOKE, cli, deep_merge, free_port
from dask_tasks import Held, open_gate, started_by, wait_until
from servers import dask_cluster

from pdmflow.artifacts import (
    FEATURES_DIR,
    label_column,
    read_dataset,
    read_features,
    stored_locations,
)
from pdmflow.config import (
    DASK_ADDRESS_ENV,
    EngineConfig,
    StorageConfig,
    dask_address,
    load_config,
)
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.engine import LocalEngine, device_partitions, open_engine
from pdmflow.engine.storage import read_partitioned
from pdmflow.errors import ConfigError, DataValidationError
from pdmflow.features.builder import FeatureSpec, latest_features
from pdmflow.features.split import SPLIT_NAMES, device_feature_builder, label_and_split
from pdmflow.features.stored import build_stored_features
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.tracking import ENGINE_DASHBOARD_TAG, STEP_TAG

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=150)]


def assert_same_features(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    """Same rows in the same order, same columns; numbers equal to 1e-9."""
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected) > 0
    numeric = expected.select_dtypes("number").columns
    others = [c for c in expected.columns if c not in numeric]
    pd.testing.assert_frame_equal(actual[others], expected[others])
    np.testing.assert_allclose(
        actual[numeric].to_numpy(dtype="float64"),
        expected[numeric].to_numpy(dtype="float64"),
        rtol=0,
        atol=1e-9,
    )


def dask_engine_config(config, **engine):
    return config.model_copy(update={"engine": EngineConfig(kind="dask", **engine)})


@pytest.fixture(scope="module")
def smoke():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    clean, clean_events, _ = validate(telemetry, events, config, "test")
    return config, clean, clean_events


# --- the engine block ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "engine,key",
    [
        ({"kind": "spark"}, "engine.kind"),
        ({"memory_limit": "lots"}, "engine.memory_limit"),
        ({"memory_limit": "0GiB"}, "engine.memory_limit"),
        ({"address": "scheduler:8786"}, "engine.address"),
        ({"n_workers": 0}, "engine.n_workers"),
        ({"address": "tcp://ops:s3cret@scheduler:8786"}, "engine.address"),
    ],
)
def test_a_bad_engine_value_is_one_line_naming_the_key(write_config, engine, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        load_config(write_config({"engine": engine}))
    assert "\n" not in str(error.value)
    assert "s3cret" not in str(error.value)  # an address's password is never echoed


def test_engine_defaults_to_local_and_the_environment_names_the_scheduler(
    write_config, monkeypatch
):
    assert load_config(SMOKE).engine == EngineConfig(kind="local", address=None)
    engine = load_config(
        write_config({"engine": {"kind": "dask", "address": "tcp://10.0.0.5:8786"}})
    ).engine
    assert engine.memory_limit_bytes == 4 * 2**30 and engine.partition_rows == 1_000_000
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    assert dask_address(engine) == "tcp://10.0.0.5:8786"
    monkeypatch.setenv(DASK_ADDRESS_ENV, "tcp://10.0.0.6:8786")
    assert dask_address(engine) == "tcp://10.0.0.6:8786"
    monkeypatch.setenv(DASK_ADDRESS_ENV, "10.0.0.6")
    with pytest.raises(ConfigError, match=DASK_ADDRESS_ENV):
        dask_address(engine)


def test_partitions_hold_whole_devices_in_row_order(smoke):
    config, telemetry, _ = smoke
    device = config.schema_.device_column
    ranges = device_partitions(telemetry, device, 1500)
    assert ranges == device_partitions(telemetry, device, 1500)  # deterministic
    assert ranges[0][0] == 0 and ranges[-1][1] == len(telemetry) and len(ranges) > 2
    assert all(
        end == next_begin for (_, end), (next_begin, _) in zip(ranges, ranges[1:], strict=False)
    )
    assert all(end - begin >= 1500 for begin, end in ranges[:-1])
    owners = [set(telemetry[device].iloc[begin:end]) for begin, end in ranges]
    assert sum(len(devices) for devices in owners) == telemetry[device].nunique()
    shuffled = pd.concat([telemetry.iloc[:10], telemetry.iloc[-10:], telemetry.iloc[10:20]])
    with pytest.raises(DataValidationError, match=f"column '{device}'"):
        device_partitions(shuffled, device, 1500)


# --- a LocalCluster -----------------------------------------------------------------------------


class TestLocalCluster:
    @pytest.fixture(scope="class")
    def engine(self, smoke):
        config = smoke[0]
        with open_engine(dask_engine_config(config, n_workers=2, threads_per_worker=1)) as engine:
            yield engine

    def test_features_equal_the_local_engines(self, smoke, engine):
        config, telemetry, events = smoke
        device, build = config.schema_.device_column, device_feature_builder(config, events)
        local = LocalEngine().map_device_partitions(telemetry, device, build, 1_000_000)
        # Several partitions of a few devices each, over both workers.
        assert len(device_partitions(telemetry, device, 1500)) > 2
        assert_same_features(local, engine.map_device_partitions(telemetry, device, build, 1500))
        assert engine.describe() == {
            "engine_kind": "dask",
            "engine_scheduler": "local cluster",
            "engine_workers": "2",
            "engine_threads_per_worker": "1",
            "engine_memory_per_worker": "4.00 GiB",
        }
        assert engine.dashboard_link.startswith("http://")
        # A page, not Dask's "needs bokeh" notice: dask[diagnostics] is a dependency.
        with urllib.request.urlopen(engine.dashboard_link, timeout=30) as page:
            text = page.read().decode()
        assert page.status == 200 and "bokeh" in text.lower() and "needs bokeh" not in text

    def test_bad_data_in_a_partition_is_the_local_engines_one_line_error(self, smoke, engine):
        config, telemetry, events = smoke
        device = config.schema_.device_column
        # The last device keeps three readings: too little history to score, in the last
        # partition only.
        last = telemetry[device].iloc[-1]
        short = telemetry[(telemetry[device] != last) | (telemetry.groupby(device).cumcount() < 3)]
        score = partial(latest_features, spec=FeatureSpec.from_config(config), events=events)
        with pytest.raises(DataValidationError) as local:
            LocalEngine().map_device_partitions(short, device, score, 1500)
        with pytest.raises(DataValidationError) as remote:
            engine.map_device_partitions(short, device, score, 1500)
        assert str(remote.value) == str(local.value) and f"device '{last}'" in str(local.value)
        assert "\n" not in str(remote.value) and remote.value.exit_code == 2


def test_a_local_cluster_leaves_the_process_environment_as_it_found_it(smoke, monkeypatch):
    # Dask's nannies (in this process) set OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_ ... for
    # their workers; the step's later subprocesses must not inherit them.
    for key in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # a user's own value wins and stays
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.delenv("PDMFLOW_SET_MEANWHILE", raising=False)
    before = dict(os.environ)
    with open_engine(dask_engine_config(smoke[0], n_workers=1, threads_per_worker=1)):
        assert os.environ.get("OMP_NUM_THREADS") == "1"  # while the workers live
        assert os.environ.get("PYTHONHASHSEED") is not None
        assert os.environ.get("MKL_NUM_THREADS") == "3"
        # Only Dask's keys are put back: what the step itself sets meanwhile stays.
        os.environ["PDMFLOW_SET_MEANWHILE"] = "kept"
    assert os.environ.pop("PDMFLOW_SET_MEANWHILE") == "kept"
    assert dict(os.environ) == before


def _studies_on(dask_scheduler) -> list[str]:
    extension = dask_scheduler.extensions.get("optuna")
    return sorted(extension.storages) if extension is not None else []


def test_tune_tasks_fail_as_themselves_and_the_study_leaves_the_scheduler(smoke):
    import optuna

    with open_engine(dask_engine_config(smoke[0], n_workers=2, threads_per_worker=1)) as engine:
        # A task's own error comes back as itself (the others are cancelled).
        with pytest.raises(ValueError, match="invalid literal"):
            engine.run_tasks(partial(int, "not a number"), 3)
        assert engine.run_tasks(partial(int, "7"), 2) == [7, 7]
        with engine.study_storage(None) as storage:
            optuna.create_study(storage=storage, study_name="kept-while-tuning")
            assert engine.client.run_on_scheduler(_studies_on) == [storage.name]
        # A long-lived scheduler does not keep every tune run's study.
        assert engine.client.run_on_scheduler(_studies_on) == []


# --- a running scheduler, through the command line ----------------------------------------------


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and one `dask worker` (1 thread), separate processes; yields the address."""
    with dask_cluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster.address


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A tracking store holding one ingest of the smoke tenant, whose config says engine: dask
    (address null: the environment gives it) in tasks of a few devices each."""
    root = tmp_path_factory.mktemp("store")
    path = root / "tenant.yaml"
    path.write_text(
        yaml.safe_dump(
            deep_merge(
                yaml.safe_load(SMOKE.read_text()),
                {"engine": {"kind": "dask", "partition_rows": 1500}},
            )
        )
    )
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    result = cli("ingest", "--config", str(path), env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    return path, env, root


def test_features_on_a_running_scheduler_equal_the_local_engines(ingested, scheduler):
    path, env, root = ingested
    result = cli(
        "features", "--config", str(path), env={**env, DASK_ADDRESS_ENV: scheduler}, cwd=root
    )
    assert result.returncode == 0, result.stderr
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        config = load_config(path)
        (run,) = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.`{STEP_TAG}` = 'features'",
            output_format="list",
        )
        params = run.data.params
        assert params["engine_kind"] == "dask" and params["engine_scheduler"] == scheduler
        assert params["engine_workers"] == "1" and params["engine_memory_per_worker"] == "2.00 GiB"
        assert run.data.tags[ENGINE_DASHBOARD_TAG].startswith("http://127.0.0.1:")
        telemetry, events = read_dataset(params["data_uri"])
        local, *_ = label_and_split(telemetry, events, config, label_column(config))
        logged = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=FEATURES_DIR, dst_path=str(root / "got")
            )
        )
        for name in SPLIT_NAMES:
            assert_same_features(local[name], pd.read_parquet(logged / f"{name}.parquet"))
    finally:
        mlflow.set_tracking_uri(None)


def test_an_unreachable_scheduler_is_one_line_and_exit_4(ingested):
    path, env, root = ingested
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli(
        "features", "--config", str(path), env={**env, DASK_ADDRESS_ENV: address}, cwd=root
    )
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pdmflow features: error: Dask scheduler") and address in line


# --- faults -------------------------------------------------------------------------------------


def test_a_worker_killed_mid_features_has_its_tasks_rerun_on_the_other(smoke, tmp_path):
    config, telemetry, events = smoke
    device, build = config.schema_.device_column, device_feature_builder(config, events)
    local = LocalEngine().map_device_partitions(telemetry, device, build, 1_000_000)
    partitions = len(device_partitions(telemetry, device, 1500))
    gate = tmp_path / "gate"
    gate.mkdir()
    with dask_cluster(tmp_path / "cluster", workers=2) as cluster:
        killed: list[int] = []

        def kill_one_worker_while_both_hold_a_task() -> None:
            try:
                wait_until(lambda: len(started_by(gate)) == 2, "a task begun on each worker")
                pid = next(iter(started_by(gate)))
                cluster.kill_worker(cluster.worker_of(pid))
                killed.append(pid)
            finally:
                open_gate(gate)  # never leave the tasks (and the test) waiting

        killer = threading.Thread(target=kill_one_worker_while_both_hold_a_task)
        killer.start()
        try:
            with open_engine(dask_engine_config(config, address=cluster.address)) as engine:
                features = engine.map_device_partitions(
                    telemetry, device, Held(build, str(gate)), 1500
                )
        finally:
            killer.join()
    assert_same_features(local, features)
    # The killed worker began one task and finished none; the other ran every partition,
    # that one again included.
    (pid,) = killed
    runs = started_by(gate)
    assert runs.pop(pid) == 1
    assert list(runs.values()) == [partitions]


def test_a_worker_killed_mid_features_from_storage_leaves_the_same_tables(tracking_store, tmp_path):
    """Features built part by part from storage (features/stored.py): a worker killed while
    both hold a part, its task runs again on the other, and the tables are the in-memory ones."""
    config = load_config(SMOKE).model_copy(
        update={
            "storage": StorageConfig(uri=str(tmp_path / "store")),
            "engine": EngineConfig(partition_rows=1500),
        }
    )
    data_uri = run_ingest(config)
    telemetry, events = read_dataset(data_uri)
    label = label_column(config)
    expected, *_ = label_and_split(telemetry, events, config, label)
    parts = stored_locations(data_uri)["telemetry"]
    gate = tmp_path / "gate"
    gate.mkdir()
    with dask_cluster(tmp_path / "cluster", workers=2) as cluster:
        killed: list[int] = []

        def kill_one_worker_while_both_hold_a_part() -> None:
            try:
                wait_until(lambda: len(started_by(gate)) == 2, "a part begun on each worker")
                pid = next(iter(started_by(gate)))
                cluster.kill_worker(cluster.worker_of(pid))
                killed.append(pid)
            finally:
                open_gate(gate)

        killer = threading.Thread(target=kill_one_worker_while_both_hold_a_part)
        killer.start()
        try:
            with open_engine(dask_engine_config(config, address=cluster.address)) as engine:
                built = build_stored_features(
                    lambda fn, items: engine.map_tasks(Held(fn, str(gate)), items),
                    parts,
                    events,
                    config,
                    label,
                    str(tmp_path / "features"),
                )
        finally:
            killer.join()
    for name in SPLIT_NAMES:
        assert_same_features(expected[name], read_partitioned(built.locations[name]))
    # The killed worker began one part and finished none; the other ran every part of both
    # rounds, that one again included.
    (pid,) = killed
    runs = started_by(gate)
    assert runs.pop(pid) == 1
    telemetry_parts = len(list((tmp_path / "store").glob("*/ingest/*/telemetry/*.parquet")))
    assert telemetry_parts > 2 and list(runs.values()) == [2 * telemetry_parts]


@pytest.mark.parametrize("tenant", ["manufacturing_org_1", "power_gen_org_1"])
def test_shipped_tenants_features_on_a_local_cluster_from_storage_equal_the_local_ones(
    tracking_store, tmp_path, tenant
):
    shipped = load_config(REPO / "configs" / f"{tenant}.yaml")
    config = shipped.model_copy(
        update={
            "storage": StorageConfig(uri=str(tmp_path / "store")),
            "engine": EngineConfig(
                kind="dask", n_workers=2, threads_per_worker=1, partition_rows=20_000
            ),
        }
    )
    data_uri = run_ingest(config)
    telemetry, events = read_dataset(data_uri)
    parts = list(tmp_path.glob("store/*/ingest/*/telemetry/*.parquet"))
    assert len(parts) > 2  # tasks of a few devices each, over both workers
    expected, *_ = label_and_split(telemetry, events, shipped, label_column(shipped))
    tables, _ = read_features(run_features(config, data_uri))
    for name in SPLIT_NAMES:
        assert_same_features(expected[name], tables[name])
