"""Batch scoring of a fleet: every device at its latest reading, or every reading (backfill).

Frames in, frames out; the scorer is a loaded `FailureScorer`. The telemetry is validated once
(`prepare`), then scored in chunks of whole devices (`scored_chunks`) and appended to the output
by `ScoreWriter`, so the working memory beyond the input stays bounded by the chunk size:

    telemetry, events = prepare(raw_telemetry, raw_events, scorer.spec, "telemetry file x.csv")
    skipped = short_history_devices(telemetry, scorer.spec)
    with ScoreWriter(Path("scores.parquet")) as writer:
        for chunk in scored_chunks(scorer, telemetry, events, skipped, "pdmflow-x", "3"):
            writer.write(chunk)

Output columns: the device and time columns; `failure_probability` (classification) or
`remaining_useful_life_hours` and `health_status` (RUL); `predicted_failure`, the alert flag
(the model's decision threshold, or health status critical for RUL); `sensor_health`
(`pdmflow.serving.health`: `ok`, or e.g. `pressure:missing;vibration:flat-lined`); `model_name`,
`model_version`. In latest-row mode `sensor_health` is the device's over the health window
ending at its latest reading; with `all_rows` it is per row, over each row's own trailing
window (`rowwise_health`), never the device's health over the chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pdmflow.data.validation import filled_gaps
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import FeatureSpec, build_features, device_chunks
from pdmflow.serving.health import HEALTHY, sensor_health_by_row
from pdmflow.serving.scorer import FailureScorer, validate_for_spec

ALERT_COLUMN = "predicted_failure"
DEFAULT_ROWS_PER_CHUNK = 100_000
# The reader (`pdmflow.data.sources`) kind for each telemetry file suffix.
INPUT_KINDS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def input_kind(path: Path, role: str = "telemetry") -> str:
    """The source kind (csv, json, jsonl, parquet) of a file, by its suffix."""
    kind = INPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataValidationError(
            f"{role} file {path}: unknown format '{path.suffix}' "
            f"(expected one of {', '.join(INPUT_KINDS)})"
        )
    return kind


def output_format(path: Path) -> str:
    """parquet or csv, by the output's suffix."""
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataValidationError(
            f"output {path}: unknown format '{path.suffix}' (expected .parquet, .pq or .csv)"
        )
    return kind


def prepare(
    telemetry: pd.DataFrame, events: pd.DataFrame | None, spec: FeatureSpec, where: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Telemetry and events validated and normalised as `FailureScorer.score_telemetry` does,
    sorted by device then time, gaps kept as NaN (scoring reads them for sensor health, then
    fills them); `where` names the input in errors."""
    if spec.time_since_failure and events is None:
        raise DataValidationError(
            f"{where}: this model uses hours_since_failure: give the failure events too "
            f"(--events PATH, or --source-config for the tenant's source)"
        )
    return validate_for_spec(telemetry, events, spec, where)


def short_history_devices(telemetry: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Devices whose latest reading lacks a full history (less than `spec.history` of time
    since their first reading, or fewer than `spec.min_readings` readings): they cannot be
    scored. Columns: device, readings, first_reading, last_reading (one row per device)."""
    times = telemetry.groupby(spec.device_column, sort=False)[spec.time_column]
    summary = times.agg(readings="size", first_reading="min", last_reading="max")
    short = (summary["last_reading"] - summary["first_reading"] < spec.history) | (
        summary["readings"] < spec.min_readings
    )
    return summary[short].rename_axis("device").reset_index()


def whole_device_chunks(devices: pd.Series, rows_per_chunk: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of whole devices, about `rows_per_chunk` rows each, for rows
    sorted by device."""
    values = devices.to_numpy()
    if len(values) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return device_chunks(starts, len(values), rows_per_chunk)


def score_latest(
    scorer: FailureScorer, telemetry: pd.DataFrame, events: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per device at its latest reading: exactly `scorer.score_telemetry`, plus the
    alert flag for RUL models (health status critical). Every device needs a full history;
    `telemetry` prepared."""
    scored = scorer.score_validated(telemetry, events)
    if ALERT_COLUMN not in scored:
        scored[ALERT_COLUMN] = (scored["health_status"] == "critical").to_numpy()
    return scored


def score_all_rows(
    scorer: FailureScorer, telemetry: pd.DataFrame, events: pd.DataFrame | None
) -> pd.DataFrame:
    """Every reading with a full history, scored as training features are: `build_features`,
    then `scorer.score_features`; the same columns as `score_latest`, `sensor_health` per row
    over its own trailing window. `telemetry` prepared."""
    spec = scorer.spec
    health = sensor_health_by_row(telemetry, spec)
    sensors = [*spec.continuous_sensors, *spec.boolean_sensors]
    if telemetry[sensors].isna().to_numpy().any():
        telemetry = filled_gaps(telemetry, spec.device_column, sensors)
    features = build_features(telemetry, spec, events)
    prediction = scorer.score_features(features)
    scored = features[[spec.device_column, spec.time_column]].reset_index(drop=True)
    scored = scorer.decide(scored, prediction)
    scored["sensor_health"] = health[telemetry.index.get_indexer(features.index)]
    if ALERT_COLUMN not in scored:
        scored[ALERT_COLUMN] = (scored["health_status"] == "critical").to_numpy()
    return scored


def unhealthy_devices(scored: pd.DataFrame, device_column: str) -> int:
    """Devices with at least one row of `scored` whose `sensor_health` is not `ok` (chunks hold
    whole devices, so the counts of chunks add up)."""
    return int(scored.loc[scored["sensor_health"] != HEALTHY, device_column].nunique())


def scored_chunks(
    scorer: FailureScorer,
    telemetry: pd.DataFrame,
    events: pd.DataFrame | None,
    skipped: pd.DataFrame,
    model_name: str,
    model_version: str,
    all_rows: bool = False,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
) -> Iterator[pd.DataFrame]:
    """Scored frames, one per chunk of whole devices, leaving out the `skipped` devices
    (`short_history_devices`); `telemetry` and `events` as `prepare` returns them."""
    device = scorer.spec.device_column
    skip = set(skipped["device"])
    score = score_all_rows if all_rows else score_latest
    for begin, end in whole_device_chunks(telemetry[device], rows_per_chunk):
        chunk = telemetry.iloc[begin:end]
        if skip:
            chunk = chunk[~chunk[device].isin(skip)]
        if chunk.empty:
            continue
        chunk_events = None
        if events is not None:
            chunk_events = events[events[device].isin(chunk[device].unique())]
        scored = score(scorer, chunk, chunk_events)
        scored["model_name"] = model_name
        scored["model_version"] = model_version
        yield scored


@dataclass(frozen=True)
class PartitionScoring:
    """`scored_chunks` of one partition of whole devices, in whichever process runs it (a Dask
    worker): the model travels as its files (`FailureScorer.load(..., keep_files=True)`) and is
    loaded once per call. The scored rows of the partition, or an empty frame when all its
    devices are `skipped`; the same rows as `scored_chunks` gives those devices here."""

    model_files: bytes
    model_uri: str
    events: pd.DataFrame | None
    skipped: pd.DataFrame
    model_name: str
    model_version: str
    all_rows: bool = False
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK

    def __call__(self, telemetry: pd.DataFrame) -> pd.DataFrame:
        scorer = FailureScorer.from_files(self.model_files, self.model_uri)
        chunks = list(
            scored_chunks(
                scorer,
                telemetry,
                self.events,
                self.skipped,
                self.model_name,
                self.model_version,
                self.all_rows,
                self.rows_per_chunk,
            )
        )
        if not chunks:
            return pd.DataFrame()
        return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]


class ScoreWriter:
    """Appends scored frames to a temp file next to `path` (Parquet or CSV by its suffix) and
    renames it to `path` when the `with` block ends without error; on an error the temp file
    is removed and `path` is left as it was."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._csv = None

    def __enter__(self) -> ScoreWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "parquet":
            if self._parquet is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self.partial, self._schema)
            else:
                table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
            self._parquet.write_table(table)
        else:
            header = self._csv is None
            if self._csv is None:
                self._csv = open(self.partial, "w", newline="")  # closed in __exit__
            frame.to_csv(self._csv, index=False, header=header)
        self.rows += len(frame)

    def _close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._close()
        finally:
            if kind is None and self.rows:
                os.replace(self.partial, self.path)
            else:
                self.partial.unlink(missing_ok=True)
        if kind is None and not self.rows:
            raise DataValidationError(f"output {self.path}: no scored rows to write")
