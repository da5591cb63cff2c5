"""Versions of a registered model: the one in Production, registering a new one."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pdmflow.errors import StepInputError, first_line
from pdmflow.registry.faults import kill_point


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
    kill_point("create_model_version")
    version = mlflow.register_model(model_uri, name, tags=tags)
    kill_point("update_model_version")
    MlflowClient().update_model_version(name, version.version, description=description)
    return version


def update_description(name: str, version: str, description: str) -> None:
    kill_point("update_description")
    MlflowClient().update_model_version(name, version, description=description)


def _is_logged_model(model_id: str) -> bool:
    """Whether MLflow 3 knows a LoggedModel by this id (what `log_model` returns as
    `models:/m-<id>`), rather than a registered model of that name."""
    try:
        mlflow.get_logged_model(model_id)
    except MlflowException:
        return False
    return True


def resolve_model(model_uri: str) -> tuple[str, str, str]:
    """(model name, version, URI pinned to that version) of a `models:/` URI; other URIs
    (runs:/, paths, a logged model's `models:/m-<id>`) are scored as they are, named by the
    URI, with no version."""
    if not model_uri.startswith("models:/"):
        return model_uri, "", model_uri
    path = model_uri.removeprefix("models:/")
    name, _, suffix = path.partition("/")
    if not suffix and name.startswith("m-") and _is_logged_model(name):
        return model_uri, "", model_uri
    alias = None
    if not suffix and "@" in name:
        name, alias = name.rsplit("@", 1)
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise StepInputError(f"model URI {model_uri}: no registered model '{name}'") from None
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias).version
        elif suffix.isdigit():
            version = client.get_model_version(name, suffix).version
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if suffix and suffix.lower() != "latest":
                versions = [v for v in versions if v.current_stage.lower() == suffix.lower()]
            if not versions:
                raise StepInputError(
                    f"model URI {model_uri}: model '{name}' has no version in stage '{suffix}'"
                )
            version = str(max(int(v.version) for v in versions))
    except MlflowException as error:
        raise StepInputError(f"model URI {model_uri}: {first_line(error)}") from None
    return name, str(version), f"models:/{name}/{version}"
