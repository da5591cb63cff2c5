"""features: label every row, build past-only features, split by time, log the tables and spec."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.data.labels import failure_within_horizon
from pdmflow.errors import DataValidationError, StepInputError
from pdmflow.features.builder import FeatureSpec, build_features
from pdmflow.features.split import assign_split, time_split
from pdmflow.tracking import downloaded, latest_step_run, step_run

FEATURES_DIR = "features"
LABEL = "failure_within_horizon"
SPLITS = ("train", "validation", "test")


def read_dataset(data_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        with downloaded(data_uri) as local:
            return pd.read_parquet(local / "telemetry.parquet"), pd.read_parquet(
                local / "events.parquet"
            )
    except Exception as exc:
        raise StepInputError(f"dataset {data_uri}: cannot be read ({exc})") from None


def label_and_split(
    telemetry: pd.DataFrame, events: pd.DataFrame, config: TenantConfig
) -> tuple[dict[str, pd.DataFrame], FeatureSpec, dict[str, str]]:
    """Pure part of the step: feature tables per split, the spec, and the split boundaries."""
    schema = config.schema_
    spec = FeatureSpec.from_config(config)
    if config.labels.target_column:
        labels = telemetry[config.labels.target_column].astype("float64")
    else:
        labels = failure_within_horizon(
            telemetry,
            events,
            config.labels.horizon_hours,
            schema.device_column,
            schema.time_column,
            schema.event_time_column,
        )
    features = build_features(telemetry, spec, events)
    features[LABEL] = labels.loc[features.index].to_numpy()  # build_features keeps the index
    features = features.dropna(subset=[LABEL])
    split = time_split(
        features[schema.time_column],
        config.split.validation_fraction,
        config.split.test_fraction,
        config.labels.horizon_hours,
    )
    assigned = assign_split(features[schema.time_column], split)
    tables = {name: features[assigned == name].reset_index(drop=True) for name in SPLITS}
    for name, table in tables.items():
        positives = int(table[LABEL].sum())
        if positives == 0 or positives == len(table):
            raise DataValidationError(
                f"{name} split: label '{LABEL}' has only one class ({len(table)} rows, "
                f"{positives} positive); more data or more failures are needed"
            )
    return tables, spec, split.as_params()


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
            mlflow.log_metric(f"{name}_positive_rate", float(table[LABEL].mean()))
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
