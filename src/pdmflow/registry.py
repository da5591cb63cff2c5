"""Model registry: versions, stages, the `champion` alias.

Stages are deprecated in MLflow but serving code still loads `models:/<name>/Production`, so a
release sets both: the Production stage (archiving the previous one) and the `champion` alias.
"""

from __future__ import annotations

import warnings

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION_ALIAS = "champion"


def production_version(name: str) -> ModelVersion | None:
    """The version currently in Production, or None (also when the model is not registered)."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    in_production = [v for v in versions if v.current_stage == "Production"]
    return max(in_production, key=lambda v: int(v.version), default=None)


def register(name: str, model_uri: str, tags: dict[str, str], description: str) -> ModelVersion:
    """A new version of `name` (created if needed) from `model_uri`, with tags and description."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().update_model_version(name, version.version, description=description)
    return version


def update_description(name: str, version: str, description: str) -> None:
    MlflowClient().update_model_version(name, version, description=description)


def release(name: str, version: str) -> None:
    """None -> Staging -> Production, archive the old Production, point `champion` here."""
    client = MlflowClient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stage APIs are deprecated, still served
        client.transition_model_version_stage(name, version, "Staging")
        client.transition_model_version_stage(
            name, version, "Production", archive_existing_versions=True
        )
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
