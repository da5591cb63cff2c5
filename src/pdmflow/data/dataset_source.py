"""Where a logged dataset lives, in a form MLflow records with `mlflow.log_input`.

MLflow ships sources for files, HTTP and cloud buckets, but none for a run's own artifacts
(`runs:/...`), which is what every later step reads and what works on any tracking store.
`frame_dataset` is MLflow's pandas dataset with its schema found column by column.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema

# Rows MLflow's own inference sees to type the columns (their dtypes decide it).
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


class _FrameDataset(PandasDataset):
    """A PandasDataset whose schema is given rather than inferred."""

    def __init__(self, df: pd.DataFrame, source: DatasetSource, name: str, schema: Schema):
        super().__init__(df=df, source=source, name=name)
        self._given_schema = schema

    @property
    def schema(self) -> Schema:
        return self._given_schema


def frame_dataset(frame: pd.DataFrame, source: DatasetSource, name: str) -> PandasDataset:
    """`mlflow.data.from_pandas(frame, source, name=name)` with the schema MLflow would infer,
    found column by column: its own inference tests every value of every column for missing
    ones (7 s at 100k readings, a minute at 1M). Types come from a sample of the rows, which
    MLflow types by dtype; a column is required when it holds no missing value."""
    sampled = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
    schema = Schema(
        [
            ColSpec(column.type, column.name, required=bool(frame[column.name].notna().all()))
            for column in sampled.inputs
        ]
    )
    return _FrameDataset(frame, source, name, schema)
