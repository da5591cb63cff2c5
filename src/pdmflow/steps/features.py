"""features: label every row, build past-only features, split, log the tables and spec."""

from __future__ import annotations

import json
import math
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
    read_events,
    save_tables,
    stored_locations,
    write_location,
)
from pdmflow.config import TenantConfig, storage_uri
from pdmflow.data.dataset_source import stored_dataset
from pdmflow.engine import open_engine
from pdmflow.engine.storage import output_location
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.split import (
    counts_report,
    describe_split,
    device_feature_builder,
    label_and_split,
    split_counts,
)
from pdmflow.features.stored import build_stored_features
from pdmflow.tracking import log_engine, log_step_inputs, step_run


def run_features(config: TenantConfig, data_uri: str = "latest") -> str:
    """Run the step; return the URI of the features directory for tune/train/evaluate.

    With storage.uri set and the dataset in storage, the tables are built part by part where
    the engine runs its tasks and written to storage from there (features/stored.py): no
    process holds a whole table. Otherwise in this process (or its partitions on the engine).
    """
    data_uri = latest_input(config, "ingest", data_uri)
    label = label_column(config)
    root = storage_uri(config.storage)
    with step_run(config, "features") as run:
        log_step_inputs(
            {
                "data_uri": data_uri,
                "horizon_hours": config.labels.horizon_hours,
                "lags": config.features.lags,
                "windows": config.features.windows,
            }
        )
        in_storage = stored_locations(data_uri) if root else None
        # The engine first: an unreachable scheduler fails the step before a large read.
        with open_engine(config) as engine:
            log_engine(engine)
            if in_storage:
                base = output_location(root, config.tenant_id, "features", run.info.run_id)
                built = build_stored_features(
                    engine.map_tasks,
                    in_storage["telemetry"],
                    read_events(data_uri),
                    config,
                    label,
                    base,
                )
                counts, params, membership = built.counts, built.plan.params, built.plan.membership
            else:
                telemetry, events = read_dataset(data_uri)
                features = engine.map_device_partitions(
                    telemetry,
                    config.schema_.device_column,
                    device_feature_builder(config, events),
                    config.engine.partition_rows,
                )
        if not in_storage:
            tables, _, params, membership = label_and_split(
                telemetry, events, config, label, features
            )
            counts = split_counts(tables, config, label)
        spec = FeatureSpec.from_config(config)
        mlflow.log_params(params)
        mlflow.log_param(
            "label_source", config.labels.target_column or "failure events within the horizon"
        )
        mlflow.log_metric("feature_count", len(spec.feature_names))
        for name, row in counts.items():
            mlflow.log_metric(f"{name}_rows", row["rows"])
            # Positive rate (classification) or mean RUL hours (regression).
            mlflow.log_metric(
                f"{name}_label_mean", row["label_sum"] / row["rows"] if row["rows"] else math.nan
            )
        report = counts_report(counts, config)
        mlflow.log_metric("split_warnings", len(report["warnings"]))
        mlflow.log_dict(report, "split_report.json")
        print(describe_split(report), end="")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / FEATURES_DIR
            out.mkdir()
            if in_storage:
                stored = built.locations
                write_location(out, stored)
            else:
                stored = save_tables(
                    tables, out, config, "features", run.info.run_id, by_device=tuple(tables)
                )
            (out / FEATURE_SPEC).write_text(spec.to_json())
            (out / SPLIT_MEMBERSHIP).write_text(json.dumps(membership, indent=2))
            mlflow.log_artifacts(str(out), FEATURES_DIR)
        if in_storage:
            for name, location in stored.items():
                dataset = stored_dataset(
                    location, f"{config.tenant_id}-{name}", built.digests[name], built.columns[name]
                )
                mlflow.log_input(dataset, context=f"output:{name}")
        else:
            log_stored_tables(config, tables, stored)
        if stored:
            print(f"stored:      {stored['train'].rsplit('/', 1)[0]} (one folder of parts a split)")
        return f"runs:/{run.info.run_id}/{FEATURES_DIR}"
