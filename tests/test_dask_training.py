"""Training on a Dask cluster (issue 26): `mlflow run -e main` with engine.kind dask builds the
features on the workers and runs the released LightGBM model's final fit there (lightgbm.dask),
on partitions of whole devices; it comes back as the same ONNX graph, within 0.005 test AUC of
the local engine's on the same features and tuned parameters, passes the default gates and is
released; the released model scores through FailureScorer. training.negative_sample_rate keeps
healthy rows at its rate with weight 1/rate, on either engine, and is logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMOKE, deep_merge, forget_experiment
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from pdmflow.artifacts import (
    MODEL_URI_TAG,
    data_uri_of,
    label_column,
    read_dataset,
    read_features,
    run_of,
)
from pdmflow.config import TenantConfig, load_config
from pdmflow.models.lightgbm_dask import training_partitions
from pdmflow.models.training import negative_sample_weights
from pdmflow.registry import production_version
from pdmflow.serving import FailureScorer
from pdmflow.steps.train import run_train

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=70)]

BIN = Path(sys.executable).parent


# A LocalCluster of 2 workers with 1 thread each.
DASK_ENGINE = {"kind": "dask", "n_workers": 2, "threads_per_worker": 1}


def _with_sampling(config: TenantConfig, rate: float) -> TenantConfig:
    training = config.training.model_copy(update={"negative_sample_rate": rate})
    return config.model_copy(update={"training": training})


def _child(client: MlflowClient, parent, step: str):
    (run,) = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`pdmflow.step` = '{step}'",
    )
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`mlflow run . -e main` of the smoke tenant with engine.kind dask (a LocalCluster) into a
    temp SQLite store: features, the final fit and the release on the cluster. Then, on that
    pipeline's features and tuned parameters, a local train run and a dask one with
    negative_sample_rate 0.5 (run ids by name; "dask" is the pipeline's own train run)."""
    root = tmp_path_factory.mktemp("dask-train")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(leftover, raising=False)  # mlflow run refuses them
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        try:
            smoke = yaml.safe_load(SMOKE.read_text())
            path, dask_path = root / "tenant.yaml", root / "dask.yaml"
            path.write_text(yaml.safe_dump(smoke))
            dask_path.write_text(yaml.safe_dump(deep_merge(smoke, {"engine": DASK_ENGINE})))
            config = load_config(path)
            # As a user runs it: its own process, the project's main entry point.
            done = subprocess.run(
                [str(BIN / "mlflow"), "run", str(REPO), "-e", "main", "--env-manager", "local",
                 "--experiment-name", config.experiment_name, "-P", f"config={dask_path}"],
                env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            client = MlflowClient()
            experiment = client.get_experiment_by_name(config.experiment_name)
            (parent,) = client.search_runs(
                [experiment.experiment_id], "tags.`pdmflow.step` = 'main'"
            )
            features = _child(client, parent, "features")
            dask_train = _child(client, parent, "train")
            features_uri = dask_train.data.tags["pdmflow.features_uri"]
            assert run_of(features_uri).info.run_id == features.info.run_id
            tune = _child(client, parent, "tune")
            assert tune.data.params["trials_on"] == "dask tasks"  # the trials ran there too
            tune_run_id = tune.info.run_id
            sampled = _with_sampling(load_config(dask_path), 0.5)
            runs = {
                "local": run_train(config, features_uri, tune_run_id),
                "dask": dask_train.info.run_id,
                "dask_sampled": run_train(sampled, features_uri, tune_run_id),
            }
            data_uri = data_uri_of(features_uri)
            yield config, data_uri, features_uri, runs, parent, features
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            forget_experiment()


def _test_auc(run_id: str, features_uri: str, config: TenantConfig) -> float:
    """The test table's AUC of the model the train run logged, through FailureScorer (ONNX)."""
    scorer = FailureScorer.load(mlflow.get_run(run_id).data.tags[MODEL_URI_TAG])
    test = read_features(features_uri)[0]["test"]
    return float(roc_auc_score(test[label_column(config)], scorer.score_features(test)))


def test_the_final_fit_on_dask_is_within_0005_test_auc_of_the_local_one(trained):
    config, _, features_uri, runs, _, features = trained
    assert features.data.params["engine_kind"] == "dask"  # the features were built there too
    local, dask = (mlflow.get_run(runs[name]).data for name in ("local", "dask"))
    assert local.params["training_engine"] == "local" and local.params["engine_kind"] == "local"
    assert dask.params["training_engine"] == "dask" and dask.params["engine_kind"] == "dask"
    assert dask.params["engine_workers"] == "2"
    assert dask.params["engine_threads_per_worker"] == "1"
    # The same rounds on the same rows, only the trees' learner differs.
    assert dask.metrics["trees"] == local.metrics["trees"]
    assert dask.metrics["fitted_rows"] == local.metrics["fitted_rows"]
    # The parity gate holds for the model that came back from the workers.
    assert dask.metrics["onnx_max_abs_difference"] <= 1e-5
    aucs = {name: _test_auc(runs[name], features_uri, config) for name in ("local", "dask")}
    print(f"test AUC: local {aucs['local']:.4f}, dask {aucs['dask']:.4f}")
    assert aucs["local"] > 0.8
    assert abs(aucs["dask"] - aucs["local"]) <= 0.005


def test_the_model_trained_on_dask_is_released_and_scores_raw_telemetry(trained):
    config, data_uri, _, runs, parent, _ = trained
    name = config.registered_model_name
    # The pipeline released the model its dask train run logged, through the default gates.
    assert parent.data.tags["pdmflow.decision"] == "released"
    released = production_version(name)
    assert released.run_id == runs["dask"]
    scorer = FailureScorer.load(f"models:/{name}/Production")
    telemetry, events = read_dataset(data_uri)
    scored = scorer.score_telemetry(telemetry, events)
    device = config.schema_.device_column
    assert len(scored) == telemetry[device].nunique()
    assert scored["failure_probability"].between(0, 1).all()


def test_negative_sampling_is_logged_and_fits_fewer_rows_on_dask(trained):
    config, _, features_uri, runs, _, _ = trained
    full, sampled = (mlflow.get_run(runs[name]).data for name in ("dask", "dask_sampled"))
    assert full.params["negative_sample_rate"] == "off"
    assert sampled.params["negative_sample_rate"] == "0.5"
    assert sampled.params["training_engine"] == "dask"
    # About half the healthy rows (most rows are healthy), every failure row.
    train, validation = (read_features(features_uri)[0][n] for n in ("train", "validation"))
    learning = pd.concat([train, validation])
    failures = int((learning[label_column(config)] == 1).sum())
    healthy = len(learning) - failures
    assert full.metrics["fitted_rows"] == len(learning)
    assert abs(sampled.metrics["fitted_rows"] - failures - healthy / 2) < 0.05 * healthy
    # Weighted back to the whole fleet: still a useful model.
    assert _test_auc(runs["dask_sampled"], features_uri, config) > 0.8


# --- the pieces ---------------------------------------------------------------------------------


def test_negative_sample_weights_keep_healthy_rows_at_the_rate_weighted_back():
    healthy = np.r_[np.ones(20_000, bool), np.zeros(500, bool)]
    weights = negative_sample_weights(healthy, 0.25, seed=7)
    assert (weights[~healthy] == 1.0).all()  # every failure row, unweighted
    assert set(np.unique(weights[healthy])) == {0.0, 4.0}
    kept = weights[healthy] > 0
    assert abs(kept.mean() - 0.25) < 0.01
    # The weights add up to the healthy rows they stand for.
    assert abs(weights[healthy].sum() / healthy.sum() - 1) < 0.04
    np.testing.assert_array_equal(negative_sample_weights(healthy, 0.25, seed=7), weights)
    assert not np.array_equal(negative_sample_weights(healthy, 0.25, seed=8), weights)
    assert negative_sample_weights(healthy, None, seed=7) is None
    np.testing.assert_array_equal(negative_sample_weights(healthy, 1.0, seed=7), np.ones(20_500))


def test_training_partitions_hold_whole_devices_on_every_worker_each_with_a_healthy_row():
    # Rows of a device are not together (train rows, then validation rows, as learning has).
    devices = pd.Series(list("aabbccdd" * 2))
    y = np.zeros(16)
    order, ranges = training_partitions(devices, y, 2, 1_000_000, classification=True)
    assert len(ranges) == 2  # one per worker, though partition_rows would allow one in all
    grouped = devices.to_numpy()[order]
    owners = [set(grouped[begin:end]) for begin, end in ranges]
    assert owners == [{"a", "b"}, {"c", "d"}]
    assert sorted(order) == list(range(16))
    # A partition holding only failure rows joins its neighbour.
    y = (devices.isin(["a", "b"])).to_numpy(float)
    _, ranges = training_partitions(devices, y, 2, 1_000_000, classification=True)
    assert ranges == [(0, 16)]
    _, ranges = training_partitions(devices, y, 2, 1_000_000, classification=False)
    assert len(ranges) == 2
