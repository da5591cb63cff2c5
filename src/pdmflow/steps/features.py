"""features: label every row, build past-only features, split by time, log the tables and spec."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.data.labels import failure_within_horizon, health_status, remaining_useful_life
from pdmflow.errors import DataValidationError, StepInputError
from pdmflow.features.builder import FeatureSpec, build_features
from pdmflow.features.split import assign_split, time_split
from pdmflow.tracking import downloaded, latest_step_run, step_run

log = logging.getLogger(__name__)
FEATURES_DIR = "features"
LABELS = {
    "classification": "failure_within_horizon",
    "regression": "remaining_useful_life_hours",
}
SPLITS = ("train", "validation", "test")


def read_dataset(data_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        with downloaded(data_uri) as local:
            return pd.read_parquet(local / "telemetry.parquet"), pd.read_parquet(
                local / "events.parquet"
            )
    except Exception as exc:
        raise StepInputError(f"dataset {data_uri}: cannot be read ({exc})") from None


def label_column(config: TenantConfig) -> str:
    """The column the task learns: fails within the horizon, or remaining useful life."""
    return LABELS[config.task]


def _labels(telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig) -> pd.DataFrame:
    schema, labels = config.schema_, config.labels
    columns = (schema.device_column, schema.time_column, schema.event_time_column)
    if config.task == "regression":
        rul = remaining_useful_life(telemetry, events, labels.rul_cap_hours, *columns)
        return pd.DataFrame(
            {
                rul.name: rul,
                "health_status": health_status(rul, labels.critical_hours, labels.warning_hours),
            }
        )
    if labels.target_column:
        target = telemetry[labels.target_column].astype("float64")
        return pd.DataFrame({LABELS["classification"]: target})
    return failure_within_horizon(telemetry, events, labels.horizon_hours, *columns).to_frame()


def label_and_split(
    telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig
) -> tuple[dict[str, pd.DataFrame], FeatureSpec, dict[str, str]]:
    """Pure part of the step: feature tables per split, the spec, and the split boundaries."""
    schema = config.schema_
    label = label_column(config)
    spec = FeatureSpec.from_config(config)
    labels = _labels(telemetry, events, config)
    features = build_features(telemetry, spec, events)
    for column in labels.columns:  # build_features keeps the telemetry's index
        features[column] = labels[column].loc[features.index].to_numpy()
    features = features.dropna(subset=[label])
    short = sorted(set(telemetry[schema.device_column]) - set(features[schema.device_column]))
    if short:
        # Not an error: the device simply has no reading with a full history (and a label) yet.
        log.warning(
            "%d device(s) give no training rows (less than %s of history or no known label): %s",
            len(short),
            spec.history,
            ", ".join(short[:5]),
        )
    # A label looks this far ahead; that much before each boundary is purged.
    lookahead = (
        config.labels.horizon_hours
        if config.task == "classification"
        else config.labels.rul_cap_hours
    )
    split = time_split(
        features[schema.time_column],
        config.split.validation_fraction,
        config.split.test_fraction,
        lookahead,
    )
    assigned = assign_split(features[schema.time_column], split)
    params = split.as_params()
    held_out = holdout_devices(features[schema.device_column], config)
    if held_out:
        # Unseen devices: nothing of theirs is learned from or tuned on; they meet the model in
        # the test period only.
        learned = assigned.isin(["train", "validation"])
        assigned[learned & features[schema.device_column].isin(held_out)] = "held out"
        params["split_holdout_devices"] = ",".join(held_out)[:5000]
    tables = {name: features[assigned == name].reset_index(drop=True) for name in SPLITS}
    for name, table in tables.items():
        if table[label].nunique() < 2:
            raise DataValidationError(
                f"{name} split: label '{label}' has a single value over {len(table)} rows; "
                "more data or more failures are needed"
            )
    return tables, spec, params


def holdout_devices(devices: pd.Series, config: TenantConfig) -> list[str]:
    """The seeded choice of devices kept out of training (split.holdout_device_fraction)."""
    fraction = config.split.holdout_device_fraction
    if fraction == 0:
        return []
    names = sorted(pd.unique(devices))
    count = max(1, round(fraction * len(names)))
    chosen = np.random.default_rng(config.training.seed).choice(names, size=count, replace=False)
    return sorted(str(name) for name in chosen)


def run_features(config: TenantConfig, data_uri: str = "latest") -> str:
    """Run the step; return the URI of the features directory for tune/train/evaluate."""
    if data_uri == "latest":
        data_uri = f"runs:/{latest_step_run(config, 'ingest').info.run_id}/dataset"
    with step_run(config, "features") as run:
        mlflow.log_params(
            {
                "data_uri": data_uri,
                "horizon_hours": config.labels.horizon_hours,
                "lags": config.features.lags,
                "windows": config.features.windows,
            }
        )
        telemetry, events = read_dataset(data_uri)
        tables, spec, boundaries = label_and_split(telemetry, events, config)
        mlflow.log_params(boundaries)
        mlflow.log_param(
            "label_source", config.labels.target_column or "failure events within the horizon"
        )
        mlflow.log_metric("feature_count", len(spec.feature_names))
        for name, table in tables.items():
            mlflow.log_metric(f"{name}_rows", len(table))
            # Positive rate (classification) or mean RUL hours (regression).
            mlflow.log_metric(f"{name}_label_mean", float(table[label_column(config)].mean()))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / FEATURES_DIR
            out.mkdir()
            for name, table in tables.items():
                table.to_parquet(out / f"{name}.parquet", index=False)
            (out / "feature_spec.json").write_text(spec.to_json())
            mlflow.log_artifacts(str(out), FEATURES_DIR)
        return f"runs:/{run.info.run_id}/{FEATURES_DIR}"


def read_features(features_uri: str) -> tuple[dict[str, pd.DataFrame], FeatureSpec]:
    """The split tables and spec logged by a features run."""
    try:
        with downloaded(features_uri) as local:
            tables = {name: pd.read_parquet(local / f"{name}.parquet") for name in SPLITS}
            spec = FeatureSpec.from_json((local / "feature_spec.json").read_text())
    except Exception as exc:
        raise StepInputError(f"features {features_uri}: cannot be read ({exc})") from None
    return tables, spec
