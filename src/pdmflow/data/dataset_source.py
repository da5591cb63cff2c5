"""Where a logged dataset lives, in a form MLflow records with `mlflow.log_input`.

MLflow ships sources for files, HTTP and cloud buckets, but none for a run's own artifacts
(`runs:/...`), which is what every later step reads and what works on any tracking store.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.data.dataset_source import DatasetSource


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
