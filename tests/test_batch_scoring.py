"""Batch scoring (`pdmflow score`): each device's latest reading equals `score_telemetry`,
`--all-rows` equals the training features scored by the model, and bad input fails in one line
with nothing written. On a Dask cluster the output equals the local engine's; a scheduler lost
mid-run or unreachable is one line, exit 4, no output."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SMOKE, cli, deep_merge, forget_experiment, free_port, wait_for_http
from dask_tasks import Held, open_gate, started_by, wait_until
from servers import dask_cluster

from pdmflow.artifacts import MODEL_URI_TAG, read_dataset, read_features
from pdmflow.cli import run as run_cli
from pdmflow.config import DASK_ADDRESS_ENV, EngineConfig, TenantConfig, load_config
from pdmflow.errors import DataValidationError, StepInputError
from pdmflow.registry import register, release
from pdmflow.serving import FailureScorer
from pdmflow.serving.batch import PartitionScoring, ScoreWriter
from pdmflow.steps import score as score_step
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.score import SKIPPED_ARTIFACT, SKIPPED_TAG, run_score
from pdmflow.steps.train import run_train
from pdmflow.tracking import ENGINE_DASHBOARD_TAG, STEP_TAG, downloaded

pytestmark = pytest.mark.cost(seconds=112)
KEYS = ["device_id", "timestamp"]


@dataclass
class Released:
    root: Path
    config_path: Path
    config: TenantConfig
    features_uri: str
    version: str
    telemetry: pd.DataFrame
    events: pd.DataFrame
    telemetry_csv: Path
    events_csv: Path

    @property
    def production_uri(self) -> str:
        return f"models:/{self.config.registered_model_name}/Production"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """ingest, features and train on the smoke config (no tuning), registered and released to
    Production in a temp SQLite store, once for this module; the telemetry as CSV files."""
    root = tmp_path_factory.mktemp("batch")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.chdir(root)  # the default artifact root ./mlruns lands in root
        mlflow.set_tracking_uri(uri)
        try:
            config_path = root / "tenant.yaml"
            config_path.write_text(yaml.safe_dump(yaml.safe_load(SMOKE.read_text())))
            config = load_config(config_path)
            dataset_uri = run_ingest(config)
            features_uri = run_features(config, dataset_uri)
            train_run = mlflow.get_run(run_train(config, features_uri, "none"))
            name = config.registered_model_name
            version = register(name, train_run.data.tags[MODEL_URI_TAG], {}, "batch test")
            release(name, version.version)
            telemetry, events = read_dataset(dataset_uri)
            telemetry_csv, events_csv = root / "telemetry.csv", root / "events.csv"
            telemetry.to_csv(telemetry_csv, index=False)
            events.to_csv(events_csv, index=False)
            yield Released(
                root,
                config_path,
                config,
                features_uri,
                str(version.version),
                telemetry,
                events,
                telemetry_csv,
                events_csv,
            )
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            forget_experiment()


def _score_runs(config: TenantConfig) -> list:
    experiment = mlflow.get_experiment_by_name(config.experiment_name)
    return mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        f"tags.`{STEP_TAG}` = 'score'",
        order_by=["attributes.start_time DESC"],
    )


def _error_line(result) -> str:
    """The CLI's one error line (stderr may hold library warnings before it)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("pdmflow score: error")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_latest_rows_equal_score_telemetry_per_device(released, tmp_path):
    output = tmp_path / "out" / "scores.parquet"
    # The command line in this process (the error cases run it as a subprocess); small chunks:
    # the Parquet file is appended to several times.
    status = run_cli(
        ["score", "--config", str(released.config_path), "--input", str(released.telemetry_csv),
         "--events", str(released.events_csv), "--output", str(output), "--rows-per-chunk", "1500"]
    )  # fmt: skip
    assert status == 0
    scored = pd.read_parquet(output)
    assert sorted(p.name for p in output.parent.iterdir()) == ["scores.parquet"]
    assert len(pq_row_groups(output)) > 1

    scorer = FailureScorer.load(released.production_uri)
    expected = scorer.score_telemetry(
        pd.read_csv(released.telemetry_csv), pd.read_csv(released.events_csv)
    )
    assert list(scored.columns) == [*expected.columns, "model_name", "model_version"]
    assert len(scored) == released.telemetry["device_id"].nunique() == len(expected)
    pd.testing.assert_frame_equal(
        scored[expected.columns].sort_values("device_id").reset_index(drop=True),
        expected.sort_values("device_id").reset_index(drop=True),
    )
    assert (scored["model_name"] == released.config.registered_model_name).all()
    assert (scored["model_version"] == released.version).all()

    run = _score_runs(released.config)[0]
    assert run.data.params["model_version"] == released.version
    assert run.data.params["model_name"] == released.config.registered_model_name
    assert run.data.params["scored_model_uri"] == released.production_uri
    assert run.data.params["scoring_mode"] == "latest"
    assert run.data.params["output_path"] == str(output)
    assert run.data.metrics == {
        "rows_read": len(released.telemetry),
        "devices": 16,
        "devices_scored": 16,
        "devices_skipped": 0,
        "rows_written": 16,
        "devices_with_unhealthy_sensors": 0,
    }
    assert (scored["sensor_health"] == "ok").all()


def pq_row_groups(path: Path) -> list[int]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_all_rows_equal_the_training_features_scored_by_the_model(released, tmp_path):
    output = tmp_path / "backfill.csv"
    result = run_score(released.config, str(output), all_rows=True, rows_per_chunk=2000)
    scored = pd.read_csv(output, parse_dates=["timestamp"])
    assert len(scored) == result.metrics["rows_written"]

    scorer = FailureScorer.load(released.production_uri)
    tables, _ = read_features(released.features_uri)
    training = pd.concat(tables.values(), ignore_index=True)
    expected = training[KEYS].assign(expected=scorer.score_features(training))
    joined = expected.merge(scored, on=KEYS, how="left", validate="one_to_one")
    assert joined["failure_probability"].notna().all()  # every training row was scored
    np.testing.assert_allclose(joined["failure_probability"], joined["expected"], atol=1e-6)
    threshold = float(scorer.metadata["decision_threshold"])
    assert (scored["predicted_failure"] == (scored["failure_probability"] >= threshold)).all()
    # Rows without a label (the last horizon of each device) are scored too: never fewer.
    assert len(scored) >= len(training)
    assert _score_runs(released.config)[0].data.params["scoring_mode"] == "all_rows"


def test_a_device_with_too_little_history_is_listed_and_the_others_scored(
    released, tmp_path, capsys
):
    newcomer = released.telemetry.tail(2).assign(device_id="newcomer")
    telemetry = pd.concat([released.telemetry, newcomer], ignore_index=True)
    telemetry.to_parquet(tmp_path / "fleet.parquet", index=False)
    output = tmp_path / "scores.csv"
    result = run_score(
        released.config,
        str(output),
        input_path=str(tmp_path / "fleet.parquet"),
        events_path=str(released.events_csv),
    )
    warning = capsys.readouterr().err
    assert "1 device(s) skipped, too little history" in warning and "newcomer" in warning
    assert list(result.skipped["device"]) == ["newcomer"]
    assert result.metrics["devices"] == 17
    assert result.metrics["devices_skipped"] == 1
    scored = pd.read_csv(output)
    assert set(scored["device_id"]) == set(released.telemetry["device_id"])
    run = mlflow.get_run(result.run_id)
    assert run.data.tags[SKIPPED_TAG] == "newcomer"
    artifact = f"runs:/{run.info.run_id}/{SKIPPED_ARTIFACT}"
    listed = pd.read_csv(mlflow.artifacts.download_artifacts(artifact, dst_path=str(tmp_path)))
    assert list(listed["device"]) == ["newcomer"] and list(listed["readings"]) == [2]

    # Every device too short: an error, nothing written.
    newcomer.to_parquet(tmp_path / "newcomer.parquet", index=False)
    with pytest.raises(DataValidationError, match="all 1 devices have too little history"):
        run_score(
            released.config,
            str(tmp_path / "none.csv"),
            input_path=str(tmp_path / "newcomer.parquet"),
            events_path=str(released.events_csv),
        )
    assert not (tmp_path / "none.csv").exists()


def _break_sensors(telemetry: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """The fleet with one device's vibration frozen and another's pressure silent (NaN) over
    their last eight readings (the health window is 6 h of hourly readings); the two devices."""
    telemetry = telemetry.sort_values(KEYS).reset_index(drop=True)
    frozen, silent = sorted(telemetry["device_id"].unique())[:2]
    last = telemetry.groupby("device_id").cumcount(ascending=False) < 8
    at_frozen = last & (telemetry["device_id"] == frozen)
    telemetry.loc[at_frozen, "vibration"] = telemetry.loc[at_frozen, "vibration"].iloc[0]
    telemetry.loc[last & (telemetry["device_id"] == silent), "pressure"] = np.nan
    return telemetry, frozen, silent


def test_a_frozen_and_a_silent_sensor_are_flagged_and_the_other_devices_ok(released, tmp_path):
    telemetry, frozen, silent = _break_sensors(released.telemetry)
    telemetry.to_parquet(tmp_path / "fleet.parquet", index=False)
    output = tmp_path / "scores.csv"
    result = run_score(
        released.config,
        str(output),
        input_path=str(tmp_path / "fleet.parquet"),
        events_path=str(released.events_csv),
    )
    scored = pd.read_csv(output)
    health = dict(zip(scored["device_id"], scored["sensor_health"], strict=True))
    assert health.pop(frozen) == "vibration:flat-lined"
    assert health.pop(silent) == "pressure:missing"
    assert set(health.values()) == {"ok"} and len(health) == 14
    assert scored["failure_probability"].notna().all()
    assert result.metrics["devices_with_unhealthy_sensors"] == 2
    assert mlflow.get_run(result.run_id).data.metrics["devices_with_unhealthy_sensors"] == 2

    # --all-rows: each row's own window; the devices are healthy until their sensors break.
    backfill = tmp_path / "backfill.parquet"
    result = run_score(
        released.config,
        str(backfill),
        input_path=str(tmp_path / "fleet.parquet"),
        events_path=str(released.events_csv),
        all_rows=True,
    )
    rows = pd.read_parquet(backfill).sort_values(KEYS)
    by_device = rows.groupby("device_id")["sensor_health"]
    # By hand, reading by reading over (t - 6 h, t]: frozen when 3+ readings all equal, missing
    # when no reading; the readings are about hourly, so about the last three rows are flagged.
    for device, sensor, reason in (
        (frozen, "vibration", "flat-lined"),
        (silent, "pressure", "missing"),
    ):
        own = telemetry[telemetry["device_id"] == device]
        times = pd.to_datetime(own["timestamp"])
        expected = []
        for t in pd.to_datetime(rows.loc[rows["device_id"] == device, "timestamp"]):
            window = own.loc[(times > t - pd.Timedelta("6h")) & (times <= t), sensor].dropna()
            broken = (
                window.empty
                if reason == "missing"
                else (len(window) >= 3 and window.nunique() == 1)
            )
            expected.append(f"{sensor}:{reason}" if broken else "ok")
        assert list(by_device.get_group(device)) == expected
        assert expected[-1] != "ok" and 2 <= expected.count("ok") < len(expected) - 1
    others = rows[~rows["device_id"].isin([frozen, silent])]
    assert (others["sensor_health"] == "ok").all()
    assert result.metrics["devices_with_unhealthy_sensors"] == 2

    # The scorer on the same frame: the same flags, and a range breached at the latest reading.
    scorer = FailureScorer.load(released.production_uri)
    assert dict(
        scorer.score_telemetry(telemetry, released.events)[["device_id", "sensor_health"]]
        .set_index("device_id")["sensor_health"]
        .loc[[frozen, silent]]
    ) == {frozen: "vibration:flat-lined", silent: "pressure:missing"}
    low, high = telemetry["temperature"].min(), telemetry["temperature"].max()
    scorer.spec = replace(scorer.spec, value_ranges={"temperature": [low, high]})
    hot = telemetry.copy()
    third = sorted(hot["device_id"].unique())[2]
    hot.loc[hot[hot["device_id"] == third].index[-1], "temperature"] = high + 10
    flags = scorer.score_telemetry(hot, released.events).set_index("device_id")["sensor_health"]
    assert flags[third] == "temperature:out-of-range"
    assert (flags.drop([frozen, silent, third]) == "ok").all()


def test_a_missing_sensor_column_is_one_line_naming_it_and_nothing_is_written(released, tmp_path):
    broken = tmp_path / "no_pressure.csv"
    released.telemetry.drop(columns="pressure").to_csv(broken, index=False)
    output = tmp_path / "out" / "scores.parquet"
    result = cli(
        "score", "--config", str(released.config_path), "--input", str(broken),
        "--events", str(released.events_csv), "--output", str(output), cwd=released.root,
    )  # fmt: skip
    assert result.returncode == 2
    line = _error_line(result)
    expected = f"pdmflow score: error: telemetry file {broken}: missing required column 'pressure'"
    assert line.startswith(expected)
    assert not output.parent.exists()


def test_an_unknown_model_uri_is_one_line_naming_it_and_nothing_is_written(released, tmp_path):
    output = tmp_path / "scores.csv"
    result = cli(
        "score", "--config", str(released.config_path), "--source-config",
        "--model-uri", "models:/no-such-model/Production", "--output", str(output),
        cwd=released.root,
    )  # fmt: skip
    assert result.returncode == 2
    assert _error_line(result) == (
        "pdmflow score: error: model URI models:/no-such-model/Production: "
        "no registered model 'no-such-model'"
    )
    assert not output.exists() and list(tmp_path.iterdir()) == []
    # A registered model without a version in the stage asked for.
    staging = f"models:/{released.config.registered_model_name}/Staging"
    with pytest.raises(StepInputError, match=f"^model URI {staging}: .* no version in stage"):
        run_score(released.config, str(output), model_uri=staging)
    assert not output.exists()


def test_a_failure_while_writing_leaves_no_output(tmp_path):
    output = tmp_path / "scores.parquet"
    frame = pd.DataFrame({"device_id": ["a"], "failure_probability": [0.5]})
    with pytest.raises(RuntimeError), ScoreWriter(output) as writer:
        writer.write(frame)
        raise RuntimeError("the model server went away")
    assert list(tmp_path.iterdir()) == []


def test_a_version_logged_with_named_column_signature_still_scores(released):
    """Versions released before the float64 tensor signature (one named float64 column per
    feature, or a float32 tensor) keep scoring, with the same probabilities."""
    import mlflow.onnx
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec

    from pdmflow.serving.scorer import SPEC_PATH

    current = FailureScorer.load(f"models:/{released.config.registered_model_name}/Production")
    with downloaded(current.model_uri) as local:
        graph = mlflow.onnx.load_model(str(local))
        spec_file = local / SPEC_PATH
        example = pd.DataFrame(
            np.zeros((2, len(current.spec.feature_names))), columns=current.spec.feature_names
        )
        with mlflow.start_run():
            logged = mlflow.onnx.log_model(
                graph,
                name="model",
                signature=infer_signature(example),
                extra_files=[str(spec_file)],
                metadata=current.metadata,
            )
            # ... and one with the float32 tensor signature versions had before float64.
            float32_tensor = mlflow.onnx.log_model(
                graph,
                name="model32",
                signature=ModelSignature(
                    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, example.shape[1]))])
                ),
                extra_files=[str(spec_file)],
                metadata=current.metadata,
            )
    older = FailureScorer.load(logged.model_uri)
    assert older.model.metadata.get_input_schema().input_names() == current.spec.feature_names
    expected = current.score_telemetry(released.telemetry, released.events)
    for uri in (logged.model_uri, float32_tensor.model_uri):
        scored = FailureScorer.load(uri).score_telemetry(released.telemetry, released.events)
        np.testing.assert_allclose(
            scored["failure_probability"], expected["failure_probability"], atol=1e-7
        )
    assert FailureScorer.load(float32_tensor.model_uri).input_dtype == np.float32
    assert current.input_dtype == np.float64


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _split(frame: pd.DataFrame) -> dict:
    """A frame as the JSON a client sends: {"columns", "data"}, times as ISO text."""
    text = frame.assign(**{c: frame[c].astype(str) for c in frame.select_dtypes("datetime")})
    return {"columns": list(text.columns), "data": text.to_numpy().tolist()}


@pytest.mark.slow
def test_the_rest_endpoint_scores_raw_telemetry_with_sensor_health(released, tmp_path):
    """`pdmflow serve` in its own process: the scorer's rows and flags for raw readings, one
    line and 400 for a missing column, and a new release served without a restart."""
    telemetry, frozen, silent = _break_sensors(released.telemetry)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "pdmflow.cli", "serve", "--config", str(released.config_path),
            "--port", str(port), "--refresh-seconds", "0.5",
        ],
        cwd=released.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ping", server)
        status, answer = _post(
            f"{base}/score",
            {"telemetry": _split(telemetry), "events": _split(released.events)},
        )
        assert status == 200, answer
        assert answer["model_version"] == released.version
        rows = pd.DataFrame(answer["rows"]).set_index("device_id")
        expected = (
            FailureScorer.load(released.production_uri)
            .score_telemetry(telemetry, released.events)
            .set_index("device_id")
        )
        assert sorted(rows.index) == sorted(expected.index)
        np.testing.assert_allclose(
            rows.loc[expected.index, "failure_probability"],
            expected["failure_probability"],
            atol=1e-6,
        )
        assert (
            rows.loc[expected.index, "predicted_failure"] == expected["predicted_failure"]
        ).all()
        assert rows.loc[frozen, "sensor_health"] == "vibration:flat-lined"
        assert rows.loc[silent, "sensor_health"] == "pressure:missing"
        assert (rows.drop([frozen, silent])["sensor_health"] == "ok").all()

        status, answer = _post(
            f"{base}/score", {"telemetry": _split(telemetry.drop(columns="pressure"))}
        )
        assert status == 400
        assert "pressure" in answer["error"] and "\n" not in answer["error"]
        status, answer = _post(f"{base}/score", {"telemetry": _split(telemetry)})
        assert status == 400 and "failure events" in answer["error"], answer  # the model needs them
        status, answer = _post(f"{base}/score", {"readings": []})
        assert status == 400 and "readings" in answer["error"]

        # A release moves Production: the next answers come from the new version.
        name = released.config.registered_model_name
        source = mlflow.MlflowClient().get_model_version(name, released.version).source
        newer = register(name, source, {}, "rest test").version
        release(name, newer)
        try:
            deadline = time.monotonic() + 30
            while json.loads(urllib.request.urlopen(f"{base}/health").read())[
                "model_version"
            ] != str(newer):
                assert time.monotonic() < deadline, "the new release was not picked up"
                time.sleep(0.5)
            status, answer = _post(
                f"{base}/score",
                {"telemetry": _split(telemetry), "events": _split(released.events)},
            )
            assert status == 200 and answer["model_version"] == str(newer), answer
        finally:
            release(name, released.version)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_logged_model_uri_is_scored_as_it_is(released, tmp_path):
    """`models:/m-<id>` (what train logs, MLflow 3's LoggedModel) is no registered name."""
    from pdmflow.registry.versions import resolve_model

    name = released.config.registered_model_name
    source = mlflow.MlflowClient().get_model_version(name, released.version).source
    assert source.startswith("models:/m-")
    assert resolve_model(source) == (source, "", source)
    result = run_score(
        released.config,
        str(tmp_path / "scores.csv"),
        input_path=str(released.telemetry_csv),
        events_path=str(released.events_csv),
        model_uri=source,
    )
    assert result.model_version == "" and result.metrics["devices_scored"] == 16
    with pytest.raises(StepInputError, match="no registered model 'm-nonexistent'"):
        resolve_model("models:/m-nonexistent")


def test_pyfunc_scores_a_float64_frame_as_pandas_gives_it(released):
    """A pandas user's frame of the features (float64) is scored by pyfunc as the scorer
    scores it; pdmflow's own float32 tables are refused until cast, naming the dtypes."""
    scorer = FailureScorer.load(released.production_uri)
    tables, _ = read_features(released.features_uri)
    frame = tables["test"][scorer.spec.feature_names].head(50)
    model = mlflow.pyfunc.load_model(released.production_uri)
    as_pandas = frame.astype("float64")
    assert (as_pandas.dtypes == "float64").all()
    scored = model.predict(as_pandas)["failure_probability"]
    np.testing.assert_allclose(scored, scorer.score_features(frame), atol=1e-7)
    np.testing.assert_allclose(model.predict(as_pandas.to_numpy())["failure_probability"], scored)
    with pytest.raises(mlflow.exceptions.MlflowException, match="float32 does not match.*float64"):
        model.predict(frame.to_numpy())


# --- engine: dask (issue 26) --------------------------------------------------------------------


def _on_dask(config: TenantConfig, address: str | None = None) -> TenantConfig:
    """The tenant on a Dask engine (address None: PDMFLOW_DASK_ADDRESS), tasks of few devices."""
    return config.model_copy(
        update={"engine": EngineConfig(kind="dask", address=address, partition_rows=1500)}
    )


@pytest.mark.slow
def test_scores_on_a_dask_cluster_equal_the_local_engines(released, tmp_path):
    """On a real `dask scheduler` + two `dask worker`s: the same rows, in the same order, with
    the same probabilities and sensor health, latest and all rows, as the local engine."""
    telemetry, frozen, silent = _break_sensors(released.telemetry)
    # A device with too little history, scored by neither engine.
    newcomer = telemetry.tail(2).assign(device_id="newcomer")
    fleet = tmp_path / "fleet.parquet"
    pd.concat([telemetry, newcomer], ignore_index=True).to_parquet(fleet, index=False)
    with dask_cluster(tmp_path / "cluster", workers=2) as cluster:
        on_dask = _on_dask(released.config, cluster.address)
        for all_rows in (False, True):
            outputs, results = {}, {}
            for engine, config in (("local", released.config), ("dask", on_dask)):
                outputs[engine] = tmp_path / f"{engine}-{all_rows}.parquet"
                results[engine] = run_score(
                    config, str(outputs[engine]), input_path=str(fleet),
                    events_path=str(released.events_csv), all_rows=all_rows, rows_per_chunk=700,
                )  # fmt: skip
            local, dask = (pd.read_parquet(outputs[engine]) for engine in ("local", "dask"))
            pd.testing.assert_frame_equal(dask, local, check_exact=True)
            assert len(local) >= 16 and local["failure_probability"].nunique() > 1
            assert {"newcomer"} == set(results["dask"].skipped["device"])
            flagged = local.loc[local["sensor_health"] != "ok", "device_id"]
            assert {frozen, silent} <= set(flagged)
            assert results["dask"].metrics == results["local"].metrics
    run = mlflow.get_run(results["dask"].run_id)
    assert run.data.params["engine_kind"] == "dask"
    assert run.data.params["engine_scheduler"] == cluster.address
    assert run.data.params["engine_workers"] == "2"
    assert run.data.tags[ENGINE_DASHBOARD_TAG].startswith("http://127.0.0.1:")
    assert mlflow.get_run(results["local"].run_id).data.params["engine_kind"] == "local"


def _dask_tenant(released: Released, tmp_path: Path) -> Path:
    path = tmp_path / "tenant.yaml"
    path.write_text(
        yaml.safe_dump(
            deep_merge(
                yaml.safe_load(released.config_path.read_text()),
                {"engine": {"kind": "dask", "partition_rows": 1500}},
            )
        )
    )
    return path


@pytest.mark.slow
def test_a_scheduler_stopped_mid_score_is_one_line_exit_4_and_no_output(
    released, tmp_path, monkeypatch, capsys, caplog
):
    gate = tmp_path / "gate"
    gate.mkdir()
    # The partitions wait on their workers until the scheduler is gone.
    monkeypatch.setattr(
        score_step, "PartitionScoring", lambda *args: Held(PartitionScoring(*args), str(gate))
    )
    output = tmp_path / "out" / "scores.parquet"
    with dask_cluster(tmp_path / "cluster") as cluster:
        monkeypatch.setenv(DASK_ADDRESS_ENV, cluster.address)

        def stop_the_scheduler_once_a_task_runs() -> None:
            try:
                wait_until(lambda: started_by(gate), "a scoring task begun")
                cluster.stop_scheduler()
            finally:
                open_gate(gate)

        stopper = threading.Thread(target=stop_the_scheduler_once_a_task_runs)
        stopper.start()
        try:
            status = run_cli(
                ["score", "--config", str(_dask_tenant(released, tmp_path)),
                 "--input", str(released.telemetry_csv), "--events", str(released.events_csv),
                 "--output", str(output)]
            )  # fmt: skip
        finally:
            stopper.join()
    errors = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("pdmflow score")
    ]
    assert status == 4
    assert errors == [
        f"pdmflow score: error: Dask scheduler {cluster.address} was lost mid-run: is it "
        "running? (engine.address, or PDMFLOW_DASK_ADDRESS when set)"
    ]
    assert list(output.parent.iterdir()) == []  # no output, no partial file
    # Nor Dask's own traceback of the lost connection beside the line.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.slow
def test_a_worker_killed_mid_score_has_its_tasks_rerun_and_the_output_is_the_local_one(
    released, tmp_path, monkeypatch
):
    local_output, dask_output = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    arguments = {"input_path": str(released.telemetry_csv), "all_rows": True}
    arguments["events_path"] = str(released.events_csv)
    run_score(released.config, str(local_output), **arguments)
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setattr(
        score_step, "PartitionScoring", lambda *args: Held(PartitionScoring(*args), str(gate))
    )
    with dask_cluster(tmp_path / "cluster", workers=2) as cluster:
        killed: list[int] = []

        def kill_one_worker_while_both_hold_a_task() -> None:
            try:
                wait_until(lambda: len(started_by(gate)) == 2, "a scoring task on each worker")
                pid = next(iter(started_by(gate)))
                cluster.kill_worker(cluster.worker_of(pid))
                killed.append(pid)
            finally:
                open_gate(gate)  # never leave the tasks (and the test) waiting

        killer = threading.Thread(target=kill_one_worker_while_both_hold_a_task)
        killer.start()
        try:
            run_score(_on_dask(released.config, cluster.address), str(dask_output), **arguments)
        finally:
            killer.join()
    pd.testing.assert_frame_equal(
        pd.read_parquet(dask_output), pd.read_parquet(local_output), check_exact=True
    )
    # The killed worker began one task and finished none; the other scored the rest.
    (pid,) = killed
    runs = started_by(gate)
    assert runs.pop(pid) == 1 and len(runs) == 1


def test_an_unreachable_scheduler_fails_score_before_any_run_or_output(
    released, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("pdmflow.engine.open.CONNECT_TIMEOUT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(DASK_ADDRESS_ENV, address)
    runs = len(_score_runs(released.config))
    output = tmp_path / "scores.parquet"
    status = run_cli(
        ["score", "--config", str(_dask_tenant(released, tmp_path)),
         "--input", str(released.telemetry_csv), "--output", str(output)]
    )  # fmt: skip
    assert status == 4
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"pdmflow score: error: Dask scheduler {address} did not answer")
    assert not output.exists() and len(_score_runs(released.config)) == runs
