"""Versions of a registered model: the one in Production, registering a new one."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pdmflow.errors import StepInputError, first_line
from pdmflow.registry.faults import kill_point

STAGES, ALIASES = "stages", "aliases"  # registry.mode
CHAMPION_ALIAS = "champion"  # on the released version in both modes
PRODUCTION_ALIAS = "production"  # aliases mode: what the Production stage is in stages mode
STAGING_ALIAS = "staging"  # aliases mode: the version being released, for that instant only
ARCHIVED_TAG = "pdmflow.archived_at"  # aliases mode: a released version taken out of production
MODE_TAG = "pdmflow.registry_mode"  # on the registered model, once it is managed by aliases


def production_version(name: str, mode: str = STAGES) -> ModelVersion | None:
    """The version currently released (Production stage, or @production in aliases mode), or
    None (also when the model is not registered)."""
    client = MlflowClient()
    if mode == ALIASES:
        try:
            return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
        except MlflowException:
            return None
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    in_production = [v for v in versions if v.current_stage == "Production"]
    return max(in_production, key=lambda v: int(v.version), default=None)


def serving_uri(name: str, mode: str = STAGES) -> str:
    """The URI serving code loads the released version by, in this registry mode."""
    return f"models:/{name}@{PRODUCTION_ALIAS}" if mode == ALIASES else f"models:/{name}/Production"


def is_archived(version: ModelVersion, mode: str = STAGES) -> bool:
    """Whether the version was released once and has since been taken out of production."""
    if mode == ALIASES:
        return ARCHIVED_TAG in version.tags and PRODUCTION_ALIAS not in version.aliases
    return version.current_stage == "Archived"


def check_mode(name: str, mode: str) -> None:
    """Refuse to release in one mode a model the registry manages in the other.

    A model moved to aliases (`pdmflow registry migrate --to aliases`, or first released in
    aliases mode) carries MODE_TAG; a stages-mode release of it would put a Production stage
    beside @production, and an aliases-mode release of a model still released by stage would
    leave serving code on a stale Production version.
    """
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        return  # not registered yet: the first version decides
    managed = registered.tags.get(MODE_TAG)
    if managed is not None and managed != mode:
        raise StepInputError(
            f"registry.mode is {mode} but model {name} is released by {managed} (tag "
            f"{MODE_TAG}); set registry.mode: {managed} in the tenant config"
        )
    if managed is None and mode == ALIASES and production_version(name, STAGES) is not None:
        raise StepInputError(
            f"model {name} has a version in the Production stage: run `pdmflow registry "
            "migrate --to aliases` first, then release with registry.mode: aliases"
        )


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
