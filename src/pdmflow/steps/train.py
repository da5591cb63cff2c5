"""train: fit LightGBM, export ONNX, check parity with the native model, log the ONNX model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from pdmflow.config import TenantConfig
from pdmflow.errors import StepInputError
from pdmflow.evaluation.metrics import best_f1_threshold, classification_metrics
from pdmflow.models.classifier import (
    OUTPUT_NAME,
    fit_classifier,
    onnx_max_difference,
    onnx_predict,
    onnx_session,
    to_onnx,
)
from pdmflow.steps.features import LABEL, read_features
from pdmflow.steps.tune import read_best_params
from pdmflow.tracking import latest_step_run, step_run

MODEL_NAME = "model"
MODEL_URI_TAG = "pdmflow.model_uri"


def _resolve_params(config: TenantConfig, tune_run_id: str) -> tuple[dict, str]:
    """(LightGBM params, where they came from): a tune run, the latest one, or the config."""
    if tune_run_id == "none":
        return dict(config.training.params), "config"
    if tune_run_id == "latest":
        try:
            tune_run_id = latest_step_run(config, "tune").info.run_id
        except StepInputError:
            return dict(config.training.params), "config"
    try:
        return read_best_params(tune_run_id), f"tune run {tune_run_id}"
    except Exception as exc:
        raise StepInputError(f"tune run {tune_run_id}: no best_params.json ({exc})") from None


def run_train(
    config: TenantConfig, features_uri: str = "latest", tune_run_id: str = "latest"
) -> str:
    """Run the step; return the train run id (its tag pdmflow.model_uri names the model)."""
    if features_uri == "latest":
        features_uri = f"runs:/{latest_step_run(config, 'features').info.run_id}/features"
    params, params_source = _resolve_params(config, tune_run_id)
    tables, spec = read_features(features_uri)
    X = {name: table[spec.feature_names] for name, table in tables.items()}
    y = {name: table[LABEL].astype(int) for name, table in tables.items()}

    with step_run(config, "train") as run:
        mlflow.log_params({"features_uri": features_uri, "params_source": params_source})
        mlflow.log_params({f"lgbm_{k}": v for k, v in params.items()})
        model = fit_classifier(X["train"], y["train"], params, config.training.seed)
        onnx_model = to_onnx(model, len(spec.feature_names))
        session = onnx_session(onnx_model)

        validation_probability = onnx_predict(session, X["validation"])
        threshold = config.training.decision_threshold or best_f1_threshold(
            y["validation"].to_numpy(), validation_probability
        )
        validation_metrics = classification_metrics(
            y["validation"].to_numpy(), validation_probability, threshold
        )
        mlflow.log_metrics({f"validation_{k}": v for k, v in validation_metrics.items()})
        mlflow.log_metric("onnx_max_abs_difference", onnx_max_difference(model, session, X["test"]))

        example = X["train"].head(5).astype("float64")
        signature = infer_signature(
            example, pd.DataFrame({OUTPUT_NAME: onnx_predict(session, example)})
        )
        with tempfile.TemporaryDirectory() as tmp:
            spec_path = Path(tmp) / "feature_spec.json"
            spec_path.write_text(spec.to_json())
            info = mlflow.onnx.log_model(
                onnx_model,
                name=MODEL_NAME,
                signature=signature,
                input_example=example,
                extra_files=[str(spec_path)],
                onnx_execution_providers=["CPUExecutionProvider"],
                metadata={
                    "decision_threshold": threshold,
                    "tenant_id": config.tenant_id,
                    "feature_count": len(spec.feature_names),
                },
            )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        mlflow.set_tag("pdmflow.features_uri", features_uri)
        return run.info.run_id
