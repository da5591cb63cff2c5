"""Training on a Dask cluster (issue 26): with engine.kind dask the released LightGBM model's
final fit runs on the workers (lightgbm.dask), on partitions of whole devices, and comes back as
the same ONNX graph, within 0.005 test AUC of the local engine's on the same data; the released
model scores through FailureScorer. training.negative_sample_rate keeps healthy rows at its rate
with weight 1/rate, on either engine, and is logged."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SMOKE, cli, deep_merge, forget_experiment
from sklearn.metrics import roc_auc_score

from pdmflow.artifacts import MODEL_URI_TAG, label_column, read_dataset, read_features
from pdmflow.config import TenantConfig, load_config
from pdmflow.models.lightgbm_dask import training_partitions
from pdmflow.models.training import negative_sample_weights
from pdmflow.registry import register, release
from pdmflow.serving import FailureScorer
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=42)]


# A LocalCluster of 2 workers with 1 thread each.
DASK_ENGINE = {"kind": "dask", "n_workers": 2, "threads_per_worker": 1}


def _with_sampling(config: TenantConfig, rate: float) -> TenantConfig:
    training = config.training.model_copy(update={"negative_sample_rate": rate})
    return config.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ingest and features of the smoke tenant in a temp SQLite store, then three train runs on
    those features: local, dask, and dask with negative_sample_rate 0.5 (run ids by name)."""
    root = tmp_path_factory.mktemp("dask-train")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        try:
            smoke = yaml.safe_load(SMOKE.read_text())
            path, dask_path = root / "tenant.yaml", root / "dask.yaml"
            path.write_text(yaml.safe_dump(smoke))
            dask_path.write_text(yaml.safe_dump(deep_merge(smoke, {"engine": DASK_ENGINE})))
            config = load_config(path)
            data_uri = run_ingest(config)
            features_uri = run_features(config, data_uri)
            # Through the command line: its stdout is the run id alone, though the local
            # cluster's workers inherit it and LightGBM's network prints from their C code.
            trained = cli(
                "train", "--config", str(dask_path), "--features-uri", features_uri,
                "--tune-run-id", "none", cwd=root,
            )  # fmt: skip
            assert trained.returncode == 0, trained.stderr[-3000:]
            (dask_run,) = trained.stdout.splitlines()
            sampled = _with_sampling(load_config(dask_path), 0.5)
            runs = {
                "local": run_train(config, features_uri, "none"),
                "dask": dask_run,
                "dask_sampled": run_train(sampled, features_uri, "none"),
            }
            yield config, data_uri, features_uri, runs
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
    config, _, features_uri, runs = trained
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
    config, data_uri, _, runs = trained
    name = config.registered_model_name
    model_uri = mlflow.get_run(runs["dask"]).data.tags[MODEL_URI_TAG]
    version = register(name, model_uri, {}, "trained on dask")
    release(name, version.version)
    scorer = FailureScorer.load(f"models:/{name}/Production")
    telemetry, events = read_dataset(data_uri)
    scored = scorer.score_telemetry(telemetry, events)
    device = config.schema_.device_column
    assert len(scored) == telemetry[device].nunique()
    assert scored["failure_probability"].between(0, 1).all()


def test_negative_sampling_is_logged_and_fits_fewer_rows_on_dask(trained):
    config, _, features_uri, runs = trained
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
