"""ingest: read the tenant's source, validate it, log it as a Parquet dataset artifact."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import mlflow
import pandas as pd

from pdmflow.artifacts import DATASET_DIR, save_tables, write_location
from pdmflow.config import TenantConfig, storage_uri
from pdmflow.data.dataset_source import (
    RunArtifactDatasetSource,
    frame_dataset,
    storage_source,
    stored_dataset,
)
from pdmflow.data.sources import describe_source, read_source, read_source_groups
from pdmflow.data.stored import ingest_in_parts
from pdmflow.data.validation import summarise, validate
from pdmflow.engine.storage import output_location, part_rows
from pdmflow.tracking import step_run


def run_ingest(
    config: TenantConfig, frames: tuple[pd.DataFrame, pd.DataFrame | None] | None = None
) -> str:
    """Run the step; return the URI of the dataset directory for `features`.

    `frames` = (telemetry, events) in memory, for `source.kind: dataframe`. With storage.uri
    set and a source read in groups of whole devices (`read_source_groups`), one group at a
    time is validated and written to storage (data/stored.py); otherwise the source is read
    and validated whole.
    """
    source = describe_source(config)
    root = storage_uri(config.storage)
    rows_per_group = partial(part_rows, partition_rows=config.engine.partition_rows)
    with step_run(config, "ingest") as run:
        mlflow.log_params({"source_kind": config.source.kind, "source": source})
        groups = read_source_groups(config, rows_per_group) if root else None
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / DATASET_DIR
            out.mkdir()
            if groups is not None:
                base = output_location(root, config.tenant_id, "ingest", run.info.run_id)
                ingested = ingest_in_parts(groups, config, source, base)
                stored, report = ingested.locations, ingested.report
                write_location(out, stored)
                dataset = stored_dataset(
                    stored["telemetry"],
                    f"{config.tenant_id}-telemetry",
                    ingested.digest,
                    ingested.columns,
                )
            else:
                telemetry, events = read_source(config, frames)
                telemetry, events, report = validate(telemetry, events, config, source)
                stored = save_tables(
                    {"telemetry": telemetry, "events": events},
                    out,
                    config,
                    "ingest",
                    run.info.run_id,
                    by_device=("telemetry",),
                )
                # The dataset's source is the Parquet downstream steps read (the run's
                # artifact, or the partitioned dataset in storage.uri) and its origin
                # (synthetic fleet, file, database URL without password).
                dataset = frame_dataset(
                    telemetry,
                    storage_source(stored["telemetry"])
                    if stored
                    else RunArtifactDatasetSource(
                        f"runs:/{run.info.run_id}/{DATASET_DIR}/telemetry.parquet", origin=source
                    ),
                    name=f"{config.tenant_id}-telemetry",
                )
            mlflow.log_artifacts(str(out), DATASET_DIR)
        mlflow.log_metrics(
            {
                "rows": report["rows"],
                "devices": report["devices"],
                "failures": report["failures"],
                "validation_warnings": len(report["warnings"]),
            }
        )
        if stored:
            location = stored["telemetry"].rsplit("/", 1)[0]
            mlflow.set_tag("pdmflow.data_location", location)
            print(f"stored:      {location} (telemetry/, events/ as Parquet parts)")
        mlflow.log_input(dataset, context="ingest", tags={"origin": source})
        mlflow.log_dict(report, "validation_report.json")
        mlflow.log_text(summarise(report), "validation_summary.txt")
        mlflow.set_tag("pdmflow.dataset_digest", dataset.digest)
        print(summarise(report), end="")
        return f"runs:/{run.info.run_id}/{DATASET_DIR}"
