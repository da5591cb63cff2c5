"""score: batch scoring of a fleet with a registered model, into a Parquet or CSV file.

Reads telemetry (a file, or the tenant's own source), scores each device at its latest reading
(or every reading, for backfills) in chunks of whole devices, in this process or (engine: dask)
as tasks of whole devices on the cluster's workers, writes the output atomically and logs one run
with the model version used, the engine and the row counts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from pdmflow.config import TenantConfig
from pdmflow.data.sources import _apply_renames, _read_file, describe_source, read_source
from pdmflow.engine import Engine, open_engine
from pdmflow.errors import DataValidationError, StepInputError, first_line
from pdmflow.registry.versions import resolve_model, serving_uri
from pdmflow.serving import FailureScorer
from pdmflow.serving.batch import (
    DEFAULT_ROWS_PER_CHUNK,
    PartitionScoring,
    ScoreWriter,
    input_kind,
    output_format,
    prepare,
    scored_chunks,
    short_history_devices,
    unhealthy_devices,
)
from pdmflow.tracking import log_engine, step_run

SKIPPED_ARTIFACT = "skipped_devices.csv"
SKIPPED_TAG = "pdmflow.skipped_devices"
# Devices named in the warning line; the run's artifact lists them all.
WARNING_DEVICES = 20


@dataclass
class ScoreResult:
    run_id: str
    output: Path
    model_name: str
    model_version: str
    metrics: dict[str, int]
    skipped: pd.DataFrame


def _load(model_uri: str, pinned_uri: str, keep_files: bool) -> FailureScorer:
    try:
        return FailureScorer.load(pinned_uri, keep_files)
    except (MlflowException, OSError) as error:
        raise StepInputError(
            f"model URI {model_uri}: cannot be loaded ({first_line(error)})"
        ) from None


def _read_telemetry(
    config: TenantConfig,
    input_path: str | None,
    events_path: str | None,
    frames: tuple[pd.DataFrame, pd.DataFrame | None] | None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, str, str]:
    """(telemetry, events or None, where the telemetry is from, where the events are from),
    columns renamed as the tenant's schema says."""
    if input_path is None:
        telemetry, events = read_source(config, frames)
        return telemetry, events, describe_source(config), "source"
    path = Path(input_path)
    telemetry = _apply_renames(_read_file(str(path), input_kind(path), "telemetry"), config)
    if events_path is None:
        return telemetry, None, str(path), "none"
    events_file = Path(events_path)
    events = _read_file(str(events_file), input_kind(events_file, "events"), "events")
    return telemetry, _apply_renames(events, config), str(path), str(events_file)


def _warn_skipped(skipped: pd.DataFrame, scorer: FailureScorer) -> None:
    named = ", ".join(map(str, skipped["device"].head(WARNING_DEVICES)))
    more = len(skipped) - WARNING_DEVICES
    if more > 0:
        named += f" ... and {more} more (the run's {SKIPPED_ARTIFACT})"
    print(
        f"pdmflow score: warning: {len(skipped)} device(s) skipped, too little history "
        f"(scoring needs {scorer.spec.history} and at least {scorer.spec.min_readings} "
        f"readings): {named}",
        file=sys.stderr,
    )


def _scored(
    engine: Engine,
    scorer: FailureScorer,
    scoring: PartitionScoring,
    telemetry: pd.DataFrame,
    config: TenantConfig,
) -> Iterator[pd.DataFrame]:
    """Scored frames in row order. Local engine: chunks scored in this process by `scorer`, as
    before engines. A cluster: `scoring` (the same `scored_chunks`) on each partition of whole
    devices, as tasks."""
    if engine.kind == "local":
        return scored_chunks(
            scorer, telemetry, scoring.events, scoring.skipped, scoring.model_name,
            scoring.model_version, scoring.all_rows, scoring.rows_per_chunk,
        )  # fmt: skip
    partitions = engine.iter_device_partitions(
        telemetry, scorer.spec.device_column, scoring, config.engine.partition_rows
    )
    return (partition for partition in partitions if len(partition))


def run_score(
    config: TenantConfig,
    output: str,
    input_path: str | None = None,
    events_path: str | None = None,
    model_uri: str | None = None,
    all_rows: bool = False,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
    frames: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
) -> ScoreResult:
    """Score `input_path` (None: the tenant's `source:`) into `output`; see `serving.batch`."""
    if events_path and input_path is None:
        raise StepInputError(
            "--events goes with --input: --source-config reads the events of the config's source"
        )
    output_path = Path(output).resolve()
    output_format(output_path)  # before any work
    model_uri = model_uri or serving_uri(config.registered_model_name, config.registry.mode)
    name, version, pinned_uri = resolve_model(model_uri)
    # On a cluster the workers load the very files checked here.
    scorer = _load(model_uri, pinned_uri, keep_files=config.engine.kind != "local")

    # The engine before the read: an unreachable scheduler fails the step first.
    with open_engine(config) as engine:
        raw, raw_events, source, events_source = _read_telemetry(
            config, input_path, events_path, frames
        )
        # The words the reader's own errors use: "telemetry file x.csv: ...".
        where = f"telemetry file {source}" if input_path else f"telemetry {source}"
        telemetry, events = prepare(raw, raw_events, scorer.spec, where)
        skipped = short_history_devices(telemetry, scorer.spec)
        devices = telemetry[scorer.spec.device_column].nunique()
        if len(skipped) == devices:
            raise DataValidationError(
                f"{where}: all {devices} devices have too little history to score (scoring "
                f"needs {scorer.spec.history} and at least {scorer.spec.min_readings} readings "
                "per device)"
            )
        if len(skipped):
            _warn_skipped(skipped, scorer)

        with step_run(config, "score") as run:
            # Not named like the entry point's parameters, which `mlflow run` logs as given.
            mlflow.log_params(
                {
                    "scored_model_uri": model_uri,
                    "model_name": name,
                    "model_version": version,
                    "input_source": source,
                    "events_source": events_source,
                    "output_path": str(output_path),
                    "scoring_mode": "all_rows" if all_rows else "latest",
                    "rows_per_chunk": rows_per_chunk,
                }
            )
            log_engine(engine)
            mlflow.set_tag("pdmflow.model_version", version)
            scoring = PartitionScoring(
                scorer.files or b"", model_uri, events, skipped, name, version, all_rows,
                rows_per_chunk,
            )  # fmt: skip
            unhealthy = 0
            # Written only when every partition is scored: a lost scheduler leaves no output.
            with ScoreWriter(output_path) as writer:
                for chunk in _scored(engine, scorer, scoring, telemetry, config):
                    writer.write(chunk)
                    unhealthy += unhealthy_devices(chunk, scorer.spec.device_column)
            metrics = {
                "rows_read": len(raw),
                "devices": devices,
                "devices_scored": devices - len(skipped),
                "devices_skipped": len(skipped),
                "rows_written": writer.rows,
                # Devices with a row whose sensor_health is not ok: their scores are unreliable.
                "devices_with_unhealthy_sensors": unhealthy,
            }
            mlflow.log_metrics(metrics)
            if len(skipped):
                mlflow.set_tag(SKIPPED_TAG, ",".join(map(str, skipped["device"]))[:5000])
                mlflow.log_text(skipped.to_csv(index=False), SKIPPED_ARTIFACT)
    print(
        f"scored {metrics['devices_scored']} devices ({writer.rows} rows) with {name} "
        f"version {version or '-'} into {output_path}"
    )
    return ScoreResult(run.info.run_id, output_path, name, version, metrics, skipped)
