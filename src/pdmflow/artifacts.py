"""The catalog of step outputs: where each step writes its artifacts and how the next reads them.

Steps hand each other `runs:/<run id>/<dir>` URIs; this module is the one place that knows the
file names inside those directories.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient
from mlflow.entities import Run

from pdmflow.config import TenantConfig, storage_uri
from pdmflow.data.dataset_source import frame_dataset, storage_source
from pdmflow.engine.storage import (
    Filters,
    output_location,
    read_partitioned,
    write_partitioned,
)
from pdmflow.errors import StepInputError
from pdmflow.features.builder import FeatureSpec
from pdmflow.tracking import downloaded, latest_step_run, step_input

if TYPE_CHECKING:  # models/ (scikit-learn, ONNX: seconds of import) only where a step reads one
    from pdmflow.models.reference import SavedReference

DATASET_DIR = "dataset"
FEATURES_DIR = "features"
SPLITS = ("train", "validation", "test")
# The column each task learns.
LABELS = {
    "classification": "failure_within_horizon",
    "regression": "remaining_useful_life_hours",
}
SPLIT_MEMBERSHIP = "split_membership.json"
FEATURE_SPEC = "feature_spec.json"
# With storage.uri, a step's output folder holds this file naming where its tables are.
LOCATION_FILE = "location.json"
# Tags that hand a step's output to the next: the model a train (and evaluate) run logged, and
# the Production version an evaluate run compared the candidate with.
MODEL_URI_TAG = "pdmflow.model_uri"
CHAMPION_VERSION_TAG = "pdmflow.champion_version"
# The reference model a train run fits beside the candidate (models/reference.py).
REFERENCE_ARTIFACT = "reference"


RUNS_SCHEME = "runs:/"


def logged_model_id(train_run: Run) -> str | None:
    """The id of the LoggedModel a train run logged (MLflow 3 records it as the run's output);
    None for a run logged before MLflow 3."""
    outputs = train_run.outputs.model_outputs if train_run.outputs else []
    return outputs[-1].model_id if outputs else None


def run_id_of(uri: str) -> str:
    """The run id in a `runs:/<run id>/<path>` URI (what steps hand each other)."""
    run_id = uri.removeprefix(RUNS_SCHEME).split("/", 1)[0] if uri.startswith(RUNS_SCHEME) else ""
    if not run_id:
        raise StepInputError(f"{uri}: expected a step output URI, runs:/<run id>/<path>")
    return run_id


def label_column(config: TenantConfig) -> str:
    """The column the task learns: fails within the horizon, or remaining useful life."""
    return LABELS[config.task]


def _read_parquet(path: Any, filters: Filters | None = None) -> pd.DataFrame:
    """A Parquet table as a frame (only the rows `filters` keep, read as pyarrow filters them),
    the decoding buffers handed back to the system: Arrow's allocator keeps them otherwise,
    about twice the table's size (a gigabyte at 1M rows)."""
    frame = pd.read_parquet(path, filters=filters)
    pa.default_memory_pool().release_unused()
    return frame


def save_tables(
    tables: dict[str, pd.DataFrame],
    out: Path,
    config: TenantConfig,
    step: str,
    run_id: str,
    by_device: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write a step's tables where its data outputs go; return {name: location} ({} when in
    `out`).

    Without storage.uri: `<name>.parquet` in `out`, the folder the step logs as its artifact.
    With it: a partitioned Parquet dataset per table under <uri>/<tenant>/<step>/<run id>/<name>
    (engine/storage.py; the tables named in `by_device` in parts of whole devices) and, in
    `out`, LOCATION_FILE naming them: the artifact store holds the pointer, not the data.
    """
    root = storage_uri(config.storage)
    if root is None:
        for name, table in tables.items():
            table.to_parquet(out / f"{name}.parquet", index=False)
        return {}
    base = output_location(root, config.tenant_id, step, run_id)
    where: dict[str, str] = {}
    for name, table in tables.items():
        where[name] = f"{base}/{name}"
        device = config.schema_.device_column if name in by_device else None
        write_partitioned(table, where[name], device, config.engine.partition_rows)
    write_location(out, where)
    return where


def write_location(out: Path, where: dict[str, str]) -> None:
    """LOCATION_FILE in a step's output folder `out`: {table name: its location in storage}."""
    (out / LOCATION_FILE).write_text(
        json.dumps({"format": "parquet parts (part-NNNNN.parquet)", "tables": where}, indent=2)
    )


def stored_locations(uri: str) -> dict[str, str] | None:
    """{table name: location} of a step output kept in storage (`runs:/<run id>/<folder>`);
    None when its tables are artifacts in the folder itself."""
    with _output_files(uri.rstrip("/"), [LOCATION_FILE]) as files:
        if LOCATION_FILE not in files:
            return None
        return json.loads(files[LOCATION_FILE].read_text())["tables"]


def read_events(data_uri: str) -> pd.DataFrame:
    """The failure events an ingest run logged (not its telemetry)."""
    try:
        tables, _ = _load_tables(data_uri, ("events",))
    except Exception as exc:
        raise StepInputError(f"dataset {data_uri}: cannot be read ({exc})") from None
    return tables["events"]


def log_stored_tables(
    config: TenantConfig, tables: dict[str, pd.DataFrame], stored: dict[str, str]
) -> None:
    """Reference each table `save_tables` put in storage from the active run: a dataset with
    its location and digest, context `output:<name>` (MLflow records datasets as a run's
    inputs; the context says this run wrote it). Nothing when the tables are artifacts."""
    for name, location in stored.items():
        dataset = frame_dataset(
            tables[name], storage_source(location), name=f"{config.tenant_id}-{name}"
        )
        mlflow.log_input(dataset, context=f"output:{name}")


@contextmanager
def _output_files(uri: str, names: list[str]) -> Iterator[dict[str, Path]]:
    """The files of a step's output folder (`runs:/<run id>/<folder>`) among `names`, each
    downloaded alone into a temp dir removed on exit: {name: local path}. A step that needs
    one split (evaluate: test) does not copy the others."""
    folder = uri.removeprefix(RUNS_SCHEME).partition("/")[2]
    present = {Path(f.path).name for f in MlflowClient().list_artifacts(run_id_of(uri), folder)}
    with tempfile.TemporaryDirectory(prefix="pdmflow-") as tmp:
        yield {
            name: Path(mlflow.artifacts.download_artifacts(f"{uri}/{name}", dst_path=tmp))
            for name in names
            if name in present
        }


def _load_tables(
    uri: str,
    names: tuple[str, ...],
    other_files: tuple[str, ...] = (),
    filters: dict[str, Filters] | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """(the tables `save_tables` wrote, read from the step's output folder or from storage,
    each only with the rows its `filters` entry keeps (pyarrow filters); the text of
    `other_files` found beside them)."""
    filters = filters or {}
    uri = uri.rstrip("/")
    wanted = [LOCATION_FILE, *(f"{name}.parquet" for name in names), *other_files]
    with _output_files(uri, wanted) as files:
        absent = [name for name in other_files if name not in files]
        if absent:
            raise FileNotFoundError(f"no {', '.join(absent)}")
        texts = {name: files[name].read_text() for name in other_files}
        if LOCATION_FILE in files:
            where = json.loads(files[LOCATION_FILE].read_text())["tables"]
            unnamed = [name for name in names if name not in where]
            if unnamed:
                raise FileNotFoundError(f"{LOCATION_FILE} names no table {', '.join(unnamed)}")
            return {n: read_partitioned(where[n], filters.get(n)) for n in names}, texts
        missing = [f"{name}.parquet" for name in names if f"{name}.parquet" not in files]
        if missing:
            raise FileNotFoundError(f"no {', '.join(missing)}")
        return {n: _read_parquet(files[f"{n}.parquet"], filters.get(n)) for n in names}, texts


def read_dataset(
    data_uri: str, devices: Sequence[str] | None = None, device_column: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(telemetry, events) logged by an ingest run; with `devices` (and the `device_column`
    naming them), only those devices' telemetry rows are read, in the same order."""
    filters = {}
    if devices is not None:
        if device_column is None:
            raise ValueError("read_dataset: devices needs device_column")
        filters["telemetry"] = [(device_column, "in", [str(d) for d in devices])]
    try:
        tables, _ = _load_tables(data_uri, ("telemetry", "events"), filters=filters)
    except Exception as exc:
        raise StepInputError(f"dataset {data_uri}: cannot be read ({exc})") from None
    return tables["telemetry"], tables["events"]


def run_of(uri: str) -> Run:
    """The run a `runs:/<run id>/<path>` URI points into."""
    return mlflow.get_run(run_id_of(uri))


def data_uri_of(features_uri: str) -> str:
    """The dataset (an ingest run's output) a features run built its tables from."""
    return step_input(run_of(features_uri), "data_uri")


def read_features(
    features_uri: str, splits: tuple[str, ...] = SPLITS
) -> tuple[dict[str, pd.DataFrame], FeatureSpec]:
    """The split tables (those named in `splits`) and spec logged by a features run."""
    try:
        tables, texts = _load_tables(features_uri, splits, other_files=(FEATURE_SPEC,))
        spec = FeatureSpec.from_json(texts[FEATURE_SPEC])
    except Exception as exc:
        raise StepInputError(f"features {features_uri}: cannot be read ({exc})") from None
    return tables, spec


def read_split_membership(features_uri: str) -> dict[str, Any] | None:
    """What a features run learned from (devices or time boundaries), or None when not logged."""
    # Only this small file: the directory also holds every split table.
    try:
        with downloaded(f"{features_uri}/{SPLIT_MEMBERSHIP}") as path:
            return json.loads(path.read_text())
    except Exception:  # not logged (a features run from before split records)
        return None


# The directory of each step's output that the next step reads.
OUTPUT_DIRS = {"ingest": DATASET_DIR, "features": FEATURES_DIR}


def latest_input(config: TenantConfig, step: str, uri: str) -> str:
    """`uri` as given, or for 'latest' the output of the newest finished `step` run."""
    if uri != "latest":
        return uri
    return f"runs:/{latest_step_run(config, step).info.run_id}/{OUTPUT_DIRS[step]}"


def read_reference(train_run_id: str) -> SavedReference | None:
    """The reference model a train run logged; None for runs from before references."""
    if not MlflowClient().list_artifacts(train_run_id, REFERENCE_ARTIFACT):
        return None
    from pdmflow.models.reference import SavedReference

    with downloaded(f"runs:/{train_run_id}/{REFERENCE_ARTIFACT}") as local:
        return SavedReference.load(local)
