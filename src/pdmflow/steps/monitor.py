"""monitor: drift of the newest data against the Production model's training rows, and the
model's accuracy on rows labelled since its data ended; exit status 5 advises a retrain."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from pdmflow.artifacts import data_uri_of, label_column, read_dataset, read_features
from pdmflow.config import TenantConfig
from pdmflow.data.sources import describe_source, read_source
from pdmflow.data.validation import validate
from pdmflow.errors import StepInputError
from pdmflow.evaluation.explain import shap_importance
from pdmflow.monitoring import (
    decide,
    describe,
    drift_metrics,
    recent_performance,
    recent_rows,
    recent_sensor_health,
    sensor_and_feature_drift,
    top_features,
    training_period,
    unhealthy_count,
)
from pdmflow.registry import production_version
from pdmflow.serving import FailureScorer
from pdmflow.serving.scorer import validate_for_spec
from pdmflow.tracking import step_input, step_run

DRIFT_TABLE = "drift/drift_table.json"
SENSOR_HEALTH = "sensor_health.json"
# Training rows SHAP explains when the evaluate run left no shap_importance.json.
IMPORTANCE_ROWS = 500


@dataclass
class MonitorResult:
    retrain: bool
    reason: str
    run_id: str
    model_version: str
    metrics: dict[str, float]
    drift: pd.DataFrame


def _training_data(version: ModelVersion) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(features URI, train split table, ingest dataset telemetry) the version learned from:
    its train run's features_uri, and that features run's data_uri."""
    features_uri = step_input(mlflow.get_run(version.run_id), "features_uri")
    if not features_uri:
        raise StepInputError(
            f"monitor: version {version.version} of {version.name} comes from run "
            f"{version.run_id}, which has no features_uri param (not a pdmflow train run)"
        )
    tables, _ = read_features(features_uri)
    return features_uri, tables["train"], read_dataset(data_uri_of(features_uri))[0]


def _importance(version: ModelVersion, scorer: FailureScorer, train: pd.DataFrame) -> dict:
    """Mean |SHAP| per feature: the evaluate run's, else SHAP on training rows, else none."""
    evaluate_run_id = version.tags.get("evaluate_run_id")
    if evaluate_run_id:
        try:
            uri = f"runs:/{evaluate_run_id}/shap_importance.json"
            return mlflow.artifacts.load_dict(uri)["mean_abs_shap"]
        except Exception:  # an evaluation from before SHAP: fall back to the explainer
            pass
    if scorer.explainer is not None:
        return shap_importance(scorer.explainer.explain(train, IMPORTANCE_ROWS))["mean_abs_shap"]
    return {}


def run_monitor(
    config: TenantConfig, frames: tuple[pd.DataFrame, pd.DataFrame | None] | None = None
) -> MonitorResult:
    """Run the step; `frames` = (telemetry, events) in memory, for `source.kind: dataframe`."""
    name = config.registered_model_name
    version = production_version(name, config.registry.mode)
    if version is None:
        raise StepInputError(
            f"monitor: model {name} has no Production version: run the pipeline first"
        )
    scorer = FailureScorer.load(f"models:/{name}/{version.version}")
    spec, label = scorer.spec, label_column(config)
    features_uri, train, dataset = _training_data(version)
    trained_readings = training_period(dataset, train, spec.device_column, spec.time_column)
    data_end = dataset[spec.time_column].max()

    source = describe_source(config)
    raw_telemetry, raw_events = read_source(config, frames)
    telemetry, events, _ = validate(raw_telemetry, raw_events, config, source)
    recent = recent_rows(telemetry, events, config, spec, label, data_end)
    # Health reads the readings as serving does: gaps and out-of-range values not yet filled.
    as_served, _ = validate_for_spec(raw_telemetry, None, spec, f"telemetry {source}")
    health = recent_sensor_health(as_served, spec, recent.window_start)
    importance = _importance(version, scorer, train)
    features = top_features(importance, spec, config.monitoring.top_features)
    drift = sensor_and_feature_drift(
        trained_readings,
        recent.window_readings,
        train,
        recent.window_features,
        [*spec.continuous_sensors, *spec.boolean_sensors],
        features,
        config.monitoring.psi_bins,
    )
    labelled = recent.labelled
    prediction = scorer.score_features(labelled) if len(labelled) else labelled[label].to_numpy()
    threshold = scorer.metadata.get("decision_threshold")
    performance, notes = recent_performance(
        config.task, labelled[label].to_numpy(), prediction, threshold
    )
    metrics = {
        **performance,
        **drift_metrics(drift),
        "devices_with_unhealthy_sensors": unhealthy_count(health),
    }
    verdict = decide(drift, performance, config.monitoring, notes)

    with step_run(config, "monitor") as run:
        mlflow.log_params(
            {
                "model_name": name,
                "model_version": str(version.version),
                "train_run_id": version.run_id,
                "features_uri": features_uri,
                "source": source,
                "window_days": config.monitoring.window_days,
                "window_start": str(recent.window_start),
                "window_end": str(recent.window_end),
                "model_data_end": str(data_end),
                "top_features": ",".join(features)[:5000],
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_table(drift, DRIFT_TABLE)
        mlflow.log_dict(health, SENSOR_HEALTH)
        mlflow.log_text(drift.to_csv(index=False), "drift/drift_table.csv")
        mlflow.log_dict(
            {"retrain": verdict.retrain, "reason": verdict.reason, "notes": notes, **metrics},
            "monitor_report.json",
        )
        mlflow.set_tags(
            {
                "pdmflow.monitor_verdict": "retrain" if verdict.retrain else "ok",
                "pdmflow.monitor_reason": verdict.reason[:5000],
                "pdmflow.model_version": str(version.version),
            }
        )
    header = (
        f"monitor {name} version {version.version}: newest window {recent.window_start} .. "
        f"{recent.window_end}"
    )
    print(describe(header, drift, metrics, notes, verdict), end="")
    return MonitorResult(
        verdict.retrain, verdict.reason, run.info.run_id, str(version.version), metrics, drift
    )
