"""evaluate: score the candidate on the test period, and the current champion on the same rows."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import get_model_info
from onnxruntime import InferenceSession

from pdmflow.artifacts import label_column, read_dataset, read_features, read_split_membership
from pdmflow.config import TenantConfig
from pdmflow.errors import PdmflowError, StepInputError
from pdmflow.evaluation.metrics import (
    classification_metrics,
    regression_metrics,
    single_row_latency_ms,
)
from pdmflow.evaluation.plots import evaluation_figures, regression_figures
from pdmflow.features.builder import FeatureSpec, build_features
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.registry import production_version
from pdmflow.serving import SPEC_PATH
from pdmflow.steps.train import MODEL_URI_TAG
from pdmflow.tracking import downloaded, latest_step_run, step_run

CHAMPION_VERSION_TAG = "pdmflow.champion_version"
# The metric the candidate must not be worse at than the champion, per task.
CHAMPION_METRIC = {"classification": "auc", "regression": "mae"}


def _load(model_uri: str) -> tuple[InferenceSession, FeatureSpec]:
    """The model's ONNX session and the feature spec logged with it, from one download."""
    with downloaded(model_uri) as local:
        spec = FeatureSpec.from_json((local / SPEC_PATH).read_text())
        return onnx_session(mlflow.onnx.load_model(str(local))), spec


def _same_definitions(a: FeatureSpec, b: FeatureSpec) -> bool:
    """Whether two specs build every feature the same way (whatever subset each reads)."""
    return replace(a, feature_names=[]) == replace(b, feature_names=[])


def _champion_prediction(
    champion_uri: str, test: pd.DataFrame, spec: FeatureSpec, features_uri: str
) -> np.ndarray:
    """The champion's predictions on exactly the candidate's test rows.

    The test table holds every feature the tenant's spec builds; a champion reading a subset of
    them is scored from it. A champion built with another feature spec gets its own features
    rebuilt from the same raw dataset, joined back on (device, time).
    """
    session, champion_spec = _load(champion_uri)
    if _same_definitions(champion_spec, spec) and set(champion_spec.feature_names) <= set(
        test.columns
    ):
        return onnx_predict(session, test[champion_spec.feature_names])
    features_run = mlflow.get_run(features_uri.split("/")[1])
    telemetry, events = read_dataset(features_run.data.params["data_uri"])
    rebuilt = build_features(telemetry, champion_spec, events)
    keys = [spec.device_column, spec.time_column]
    joined = test[keys].merge(rebuilt, on=keys, how="left")
    if joined[champion_spec.feature_names].isna().any().any():
        raise StepInputError(
            f"champion {champion_uri}: its features cannot be rebuilt for every test row"
        )
    return onnx_predict(session, joined[champion_spec.feature_names])


def unseen_by_champion(
    champion_run_id: str, test: pd.DataFrame, spec: FeatureSpec
) -> tuple[np.ndarray, str]:
    """Test rows the champion never learned from, and a sentence saying how that was decided.

    Judged in-sample, a champion would look better than it is and block every fair candidate,
    so the champion comparison uses only these rows.
    """
    features_uri = mlflow.get_run(champion_run_id).data.tags.get("pdmflow.features_uri")
    membership = read_split_membership(features_uri) if features_uri else None
    device = test[spec.device_column].astype(str)
    if membership is None:
        return np.ones(len(test), bool), "the champion's split is not on record: every test row"
    if membership["by"] == "device":
        learned = {*membership["devices"]["train"], *membership["devices"]["validation"]}
        unseen = ~device.isin(learned).to_numpy()
        return unseen, (
            f"{len(learned & set(device))} test device(s) the champion trained or validated "
            f"on are left out; {int(unseen.sum())} of {len(test)} test rows compared"
        )
    learned_until = pd.Timestamp(membership["learned_until"])
    held_out = set(membership["held_out_devices"])
    unseen = ((test[spec.time_column] >= learned_until) | device.isin(held_out)).to_numpy()
    return unseen, (
        f"rows before {learned_until} (the champion's training period) are left out; "
        f"{int(unseen.sum())} of {len(test)} test rows compared"
    )


def run_evaluate(config: TenantConfig, train_run_id: str = "latest") -> str:
    """Run the step; return the evaluate run id (promote reads its metrics and tags)."""
    if train_run_id == "latest":
        train_run_id = latest_step_run(config, "train").info.run_id
    train_run = mlflow.get_run(train_run_id)
    model_uri = train_run.data.tags.get(MODEL_URI_TAG)
    features_uri = train_run.data.tags.get("pdmflow.features_uri")
    if not model_uri or not features_uri:
        raise StepInputError(f"train run {train_run_id}: no model logged (tag {MODEL_URI_TAG})")
    tables, spec = read_features(features_uri)
    session, model_spec = _load(model_uri)
    test = tables["test"]
    y_test = test[label_column(config)].to_numpy()
    metadata = get_model_info(model_uri).metadata or {}

    def task_metrics(prediction: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
        truth = y_test if rows is None else y_test[rows]
        if config.task == "classification":
            threshold = float(metadata["decision_threshold"])
            return classification_metrics(truth.astype(int), prediction, threshold)
        labels = config.labels
        return regression_metrics(
            truth, prediction, labels.rul_tolerance_hours, labels.critical_hours
        )

    with step_run(config, "evaluate") as run:
        mlflow.log_params(
            {
                "train_run_id": train_run_id,
                "model_uri": model_uri,
                "features_uri": features_uri,
                "test_rows": len(test),
                "family": metadata.get("family", "lightgbm"),
            }
        )
        X_test = test[model_spec.feature_names]
        prediction = onnx_predict(session, X_test)
        metrics = task_metrics(prediction)
        metrics.update(
            single_row_latency_ms(lambda row: onnx_predict(session, row), X_test.to_numpy())
        )
        # Parity was measured where both models exist (train); carried here for the gates.
        metrics["onnx_max_abs_difference"] = train_run.data.metrics["onnx_max_abs_difference"]
        champion_report = _compare_with_champion(
            config, test, spec, features_uri, prediction, task_metrics, metrics
        )
        mlflow.log_metrics(metrics)
        figures = (
            evaluation_figures(y_test.astype(int), prediction, metrics["decision_threshold"])
            if config.task == "classification"
            else regression_figures(y_test, prediction)
        )
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)
        mlflow.log_dict(
            {
                "model_uri": model_uri,
                "features_uri": features_uri,
                "test_rows": len(test),
                "metrics": metrics,
                "champion": champion_report,
            },
            "evaluation_report.json",
        )
        mlflow.set_tag(MODEL_URI_TAG, model_uri)
        return run.info.run_id


def _compare_with_champion(
    config: TenantConfig,
    test: pd.DataFrame,
    spec: FeatureSpec,
    features_uri: str,
    prediction: np.ndarray,
    task_metrics,
    metrics: dict[str, float],
) -> dict[str, object] | None:
    """Score the Production version on the test rows it never learned from; add its metric.

    Adds `champion_<metric>` and `candidate_<metric>_on_champion_rows` (the same rows) to
    `metrics`, or `champion_comparison_rows` = 0 when no fair row is left. Tags say how.
    """
    champion = production_version(config.registered_model_name)
    if champion is None:
        return None
    champion_uri = f"models:/{config.registered_model_name}/{champion.version}"
    mlflow.set_tag(CHAMPION_VERSION_TAG, str(champion.version))
    key = CHAMPION_METRIC[config.task]
    unseen, how = unseen_by_champion(champion.run_id, test, spec)
    mlflow.set_tag("pdmflow.champion_rows", how)
    label = label_column(config)
    comparable = unseen.any() and (
        config.task == "regression" or test[label][unseen].nunique() == 2
    )
    metrics["champion_comparison_rows"] = int(unseen.sum()) if comparable else 0
    if not comparable:
        return {"version": str(champion.version), "rows": how, "compared": False}
    try:
        champion_prediction = _champion_prediction(
            champion_uri, test[unseen].reset_index(drop=True), spec, features_uri
        )
    except PdmflowError as error:
        # No champion metric: promote's champion gate fails closed, with this reason.
        mlflow.set_tag("pdmflow.champion_not_comparable", str(error))
        return {"version": str(champion.version), "error": str(error)}
    champion_metrics = task_metrics(champion_prediction, unseen)
    metrics[f"champion_{key}"] = champion_metrics[key]
    metrics[f"candidate_{key}_on_champion_rows"] = task_metrics(prediction[unseen], unseen)[key]
    return {"version": str(champion.version), "rows": how, **champion_metrics}
