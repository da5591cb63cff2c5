"""train: fit LightGBM, export ONNX, check parity with the native model, log the ONNX model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from pdmflow.config import TenantConfig
from pdmflow.errors import StepInputError
from pdmflow.evaluation.metrics import (
    best_f1_threshold,
    classification_metrics,
    regression_metrics,
)
from pdmflow.models.lightgbm_onnx import (
    OUTPUT_NAMES,
    fit_model,
    onnx_max_difference,
    onnx_predict,
    onnx_session,
    to_onnx,
)
from pdmflow.steps.features import label_column, read_features
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
    label = label_column(config)
    y = {name: table[label].to_numpy() for name, table in tables.items()}

    with step_run(config, "train") as run:
        mlflow.log_params({"features_uri": features_uri, "params_source": params_source})
        mlflow.log_params({f"lgbm_{k}": v for k, v in params.items()})
        model = fit_model(config.task, X["train"], y["train"], params, config.training.seed)
        onnx_model = to_onnx(model, len(spec.feature_names))
        session = onnx_session(onnx_model)

        validation_prediction = onnx_predict(session, X["validation"])
        metadata: dict[str, object] = {
            "task": config.task,
            "tenant_id": config.tenant_id,
            "feature_count": len(spec.feature_names),
        }
        if config.task == "classification":
            threshold = config.training.decision_threshold or best_f1_threshold(
                y["validation"], validation_prediction
            )
            metadata["decision_threshold"] = threshold
            validation_metrics = classification_metrics(
                y["validation"], validation_prediction, threshold
            )
        else:
            labels = config.labels
            metadata.update(
                critical_hours=labels.critical_hours, warning_hours=labels.warning_hours
            )
            validation_metrics = regression_metrics(
                y["validation"],
                validation_prediction,
                labels.rul_tolerance_hours,
                labels.critical_hours,
            )
        mlflow.log_metrics({f"validation_{k}": v for k, v in validation_metrics.items()})
        mlflow.log_metric("onnx_max_abs_difference", onnx_max_difference(model, session, X["test"]))

        example = X["train"].head(5).astype("float64")
        signature = infer_signature(
            example, pd.DataFrame({OUTPUT_NAMES[config.task]: onnx_predict(session, example)})
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
                metadata=metadata,
            )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        mlflow.set_tag("pdmflow.features_uri", features_uri)
        return run.info.run_id
