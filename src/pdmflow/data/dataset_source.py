"""Where a logged dataset lives, in a form MLflow records with `mlflow.log_input`.

MLflow ships sources for files, HTTP and cloud buckets, but none for a run's own artifacts
(`runs:/...`), which is what every later step reads and what works on any tracking store.
`frame_dataset` is MLflow's pandas dataset with its schema found column by column.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema

# Present values of a column MLflow's own inference sees to type it.
SCHEMA_SAMPLE_ROWS = 1000


class RunArtifactDatasetSource(DatasetSource):
    """A dataset stored as a run artifact, plus the (secret-free) origin it was read from."""

    def __init__(self, uri: str, origin: str) -> None:
        self.uri = uri
        self.origin = origin

    @staticmethod
    def _get_source_type() -> str:
        return "run_artifact"

    def load(self) -> str:
        """Download the artifact; return its local path."""
        return mlflow.artifacts.download_artifacts(self.uri)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/")

    @classmethod
    def _resolve(cls, raw_source: Any) -> RunArtifactDatasetSource:
        return cls(str(raw_source), origin="")

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "origin": self.origin}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> RunArtifactDatasetSource:
        return cls(source_dict["uri"], source_dict.get("origin", ""))


class StorageDatasetSource(DatasetSource):
    """A dataset in storage (storage.uri) at a URL MLflow has no source type for (memory://,
    abfs://...); MLflow's own file and bucket sources cover the rest (`storage_source`)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "pdmflow_storage"

    def load(self) -> str:
        return self.uri

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # only ever built by storage_source

    @classmethod
    def _resolve(cls, raw_source: Any) -> StorageDatasetSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> StorageDatasetSource:
        return cls(source_dict["uri"])


def storage_source(uri: str) -> DatasetSource:
    """The source MLflow records for a dataset at `uri` in storage: its own local-file, S3, GCS
    ... source where it has one, else StorageDatasetSource."""
    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
            warnings.simplefilter("ignore")
            return resolve_dataset_source(uri)
    except Exception:
        return StorageDatasetSource(uri)


class _FrameDataset(PandasDataset):
    """A PandasDataset whose schema is given rather than inferred."""

    def __init__(self, df: pd.DataFrame, source: DatasetSource, name: str, schema: Schema):
        super().__init__(df=df, source=source, name=name)
        self._given_schema = schema

    @property
    def schema(self) -> Schema:
        return self._given_schema


def _column_spec(column: pd.Series) -> ColSpec | None:
    """The column's ColSpec as MLflow infers it from every value, found from a sample of its
    present values: MLflow types a column by its dtype, and an object column of strings as
    string. None where only every value could tell (an empty column, mixed objects)."""
    present = column.dropna()
    if present.empty:
        return None
    if column.dtype == object and not present.map(type).eq(str).all():
        return None
    sample = present.head(SCHEMA_SAMPLE_ROWS).to_frame(column.name)
    inferred = infer_signature(sample).inputs.inputs
    if len(inferred) != 1 or inferred[0].name != column.name:
        return None
    return ColSpec(inferred[0].type, column.name, required=len(present) == len(column))


def frame_dataset(frame: pd.DataFrame, source: DatasetSource, name: str) -> PandasDataset:
    """`mlflow.data.from_pandas(frame, source, name=name)`, its schema found column by column
    (`_column_spec`) where MLflow's own inference visits every value of every column in Python
    (docs/benchmarks.md, "The whole pipeline by fleet size"). A column only its values can type
    sends the whole frame through MLflow's inference."""
    specs = [_column_spec(frame[column]) for column in frame.columns]
    if any(spec is None for spec in specs):
        return mlflow.data.from_pandas(frame, source=source, name=name)
    return _FrameDataset(frame, source, name, Schema(specs))


# Per column of one part of a stored table: (its MLflow type, or None where `_column_spec`
# cannot tell from that part; whether the part misses values).
PartColumns = dict[str, tuple[str | None, bool]]


def part_columns(frame: pd.DataFrame) -> PartColumns:
    """What the schema of a table stored in parts is merged from, for one part."""
    facts: PartColumns = {}
    for column in frame.columns:
        spec = _column_spec(frame[column])
        facts[column] = (spec.to_dict()["type"] if spec else None, bool(frame[column].isna().any()))
    return facts


def stored_dataset(location: str, name: str, digest: str, parts: list[PartColumns]) -> MetaDataset:
    """A table written part by part in storage, as MLflow records it: its location, the digest
    of its parts, and the schema of its columns (typed by the first part that tells, required
    where no part misses a value); no schema when some column is typed by no part."""
    specs = []
    for column in parts[0] if parts else []:
        types = [p[column][0] for p in parts if p[column][0] is not None]
        if not types:
            specs = None
            break
        specs.append(ColSpec(types[0], column, required=not any(p[column][1] for p in parts)))
    schema = Schema(specs) if specs else None
    return MetaDataset(storage_source(location), name=name, digest=digest, schema=schema)
