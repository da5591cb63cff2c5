"""Versions of a registered model: the one in Production, registering a new one."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException


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
