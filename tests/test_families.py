"""Model families: Random Forest through `mlflow run` into Production, and the Isolation Forest
anomaly-score feature fitted on healthy training rows only."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SMOKE
from mlflow import MlflowClient

from pdmflow.artifacts import LABELS, read_dataset
from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.errors import ConfigError
from pdmflow.features.split import label_and_split, learning_folds
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.models.training import fit_candidate
from pdmflow.serving import FailureScorer

pytestmark = pytest.mark.cost(seconds=75)
LABEL = LABELS["classification"]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_random_forest_with_anomaly_score_runs_end_to_end_into_production(tmp_path, write_config):
    path = write_config(
        {
            "training": {"family": "random_forest"},
            "features": {"anomaly_score": True},
            # A dead sensor moves the anomaly score of every reading: on this small fleet the
            # forest's AUC drop passes 0.05. The gate's own tests cover it; here: measured only.
            "gates": {"max_noise_auc_drop": None},
        }
    )
    config = load_config(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leftover, None)
    result = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "-e", "main",
         "--experiment-name", config.experiment_name, "-P", f"config={path}", "-P", "n_trials=2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient()
        (version,) = client.search_model_versions(f"name = '{config.registered_model_name}'")
        assert version.current_stage == "Production"
        train_run = client.get_run(version.run_id)
        assert train_run.data.params["family"] == "random_forest"
        assert train_run.data.params["anomaly_score_feature"] == "True"
        assert "rf_n_estimators" in train_run.data.params
        model_uri = f"models:/{config.registered_model_name}/Production"
        info = mlflow.models.get_model_info(model_uri)
        assert info.metadata["family"] == "random_forest"
        assert info.metadata["anomaly_score_feature"] is True
        assert train_run.data.metrics["onnx_max_abs_difference"] <= 1e-5
        (evaluate,) = client.search_runs(
            [train_run.info.experiment_id], "tags.`pdmflow.step` = 'evaluate'"
        )
        assert "robustness_worst_auc_drop" in evaluate.data.metrics
        assert "shap_importance.json" in {
            a.path for a in client.list_artifacts(evaluate.info.run_id)
        }

        # Serving: raw telemetry in, the same probabilities as the registered graph.
        ingest = client.search_runs(
            [train_run.info.experiment_id], "tags.`pdmflow.step` = 'ingest'"
        )[0]
        telemetry, events = read_dataset(f"runs:/{ingest.info.run_id}/dataset")
        scorer = FailureScorer.load(model_uri)
        assert "anomaly_score" not in scorer.spec.feature_names  # computed inside the graph
        scored = scorer.score_telemetry(telemetry, events)
        assert len(scored) == telemetry["device_id"].nunique()
        assert scored["failure_probability"].between(0, 1).all()
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def smoke_tables():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    telemetry, events, _ = validate(telemetry, events, config, "test")
    tables, spec, _, _ = label_and_split(telemetry, events, config, LABEL)
    return tables, spec


def _anomaly_candidate(write_config, train: pd.DataFrame, validation: pd.DataFrame, spec):
    config = load_config(write_config({"features": {"anomaly_score": True}}))
    learning = pd.concat([train, validation], ignore_index=True)
    folds = learning_folds(learning, len(train), config, "device_id", "timestamp", LABEL)
    names = spec.feature_names[:20]
    return fit_candidate(learning, len(train), folds, names, LABEL, config, "lightgbm", {
        "n_estimators": 30})  # fmt: skip


def test_anomaly_score_is_fitted_on_healthy_training_rows_only(smoke_tables, write_config):
    tables, spec = smoke_tables
    train, validation = tables["train"], tables["validation"]
    reference = _anomaly_candidate(write_config, train, validation, spec)
    assert reference.anomaly is not None
    probe = tables["test"][reference.feature_names]
    scores = onnx_predict(onnx_session(reference.anomaly), probe)

    # Other validation rows, and other failing training rows: the anomaly model is unchanged.
    changed_validation = validation.copy()
    changed_validation[spec.feature_names] = changed_validation[spec.feature_names] * 3.0
    changed_train = train.copy()
    failing = changed_train[LABEL] == 1
    changed_train.loc[failing, spec.feature_names] = (
        changed_train.loc[failing, spec.feature_names] + 100.0
    )
    other = _anomaly_candidate(write_config, changed_train, changed_validation, spec)
    np.testing.assert_array_equal(onnx_predict(onnx_session(other.anomaly), probe), scores)

    # A healthy training row changed: the forest is a different one.
    changed_train.loc[~failing, spec.feature_names[0]] += 50.0
    moved = _anomaly_candidate(write_config, changed_train, validation, spec)
    assert not np.array_equal(onnx_predict(onnx_session(moved.anomaly), probe), scores)

    # The released graph computes the score itself and agrees with the native pipeline.
    graph = onnx_session(reference.to_onnx())
    native = reference.predict(probe)
    assert np.abs(onnx_predict(graph, probe) - native).max() <= 1e-5


def test_the_config_offers_every_registered_family_and_no_other():
    """training.family and tuning.families name the families of models/families (the config
    cannot import the registry: the models read the config)."""
    import typing

    from pdmflow.config import TrainingConfig, TuningConfig
    from pdmflow.models.families import FAMILIES, family

    training = typing.get_args(TrainingConfig.model_fields["family"].annotation)
    (tuning,) = typing.get_args(TuningConfig.model_fields["families"].annotation)
    assert set(training) == set(typing.get_args(tuning)) == set(FAMILIES)
    for name, chosen in FAMILIES.items():
        assert family(name) is chosen and chosen.name == name
    with pytest.raises(ConfigError, match="model family 'xgboost'"):
        family("xgboost")
