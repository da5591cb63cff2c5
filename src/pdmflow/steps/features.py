"""features: label every row, build past-only features, split, log the tables and spec."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow

from pdmflow.artifacts import (
    FEATURE_SPEC,
    FEATURES_DIR,
    SPLIT_MEMBERSHIP,
    label_column,
    latest_input,
    log_stored_tables,
    read_dataset,
    save_tables,
)
from pdmflow.config import TenantConfig
from pdmflow.engine import open_engine
from pdmflow.features.split import (
    describe_split,
    device_feature_builder,
    label_and_split,
    split_report,
)
from pdmflow.tracking import log_engine, log_step_inputs, step_run


def run_features(config: TenantConfig, data_uri: str = "latest") -> str:
    """Run the step; return the URI of the features directory for tune/train/evaluate."""
    data_uri = latest_input(config, "ingest", data_uri)
    label = label_column(config)
    with step_run(config, "features") as run:
        log_step_inputs(
            {
                "data_uri": data_uri,
                "horizon_hours": config.labels.horizon_hours,
                "lags": config.features.lags,
                "windows": config.features.windows,
            }
        )
        # The engine first: an unreachable scheduler fails the step before a large read.
        with open_engine(config) as engine:
            log_engine(engine)
            telemetry, events = read_dataset(data_uri)
            features = engine.map_device_partitions(
                telemetry,
                config.schema_.device_column,
                device_feature_builder(config, events),
                config.engine.partition_rows,
            )
        tables, spec, params, membership = label_and_split(
            telemetry, events, config, label, features
        )
        mlflow.log_params(params)
        mlflow.log_param(
            "label_source", config.labels.target_column or "failure events within the horizon"
        )
        mlflow.log_metric("feature_count", len(spec.feature_names))
        for name, table in tables.items():
            mlflow.log_metric(f"{name}_rows", len(table))
            # Positive rate (classification) or mean RUL hours (regression).
            mlflow.log_metric(f"{name}_label_mean", float(table[label].mean()))
        report = split_report(tables, config, label)
        mlflow.log_metric("split_warnings", len(report["warnings"]))
        mlflow.log_dict(report, "split_report.json")
        print(describe_split(report), end="")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / FEATURES_DIR
            out.mkdir()
            stored = save_tables(
                tables, out, config, "features", run.info.run_id, by_device=tuple(tables)
            )
            (out / FEATURE_SPEC).write_text(spec.to_json())
            (out / SPLIT_MEMBERSHIP).write_text(json.dumps(membership, indent=2))
            mlflow.log_artifacts(str(out), FEATURES_DIR)
        log_stored_tables(config, tables, stored)
        if stored:
            print(f"stored:      {stored['train'].rsplit('/', 1)[0]} (one folder of parts a split)")
        return f"runs:/{run.info.run_id}/{FEATURES_DIR}"
