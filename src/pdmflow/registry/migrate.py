"""`pdmflow registry migrate --to aliases`: a model released by stages becomes one released by
aliases, with its history kept.

Under the release lock, after repairing any half-done release: the Production version gets
@production (and keeps @champion), every version that was Archived is tagged
`pdmflow.archived_at` (so rollback still finds it), every stage is cleared to None with the
former one kept as tag `pdmflow.former_stage`, and the registered model is tagged
`pdmflow.registry_mode = aliases` (a later release in stages mode is then refused, not mixed
in). Clearing the stages is deliberate: serving code still loading `models:/<name>/Production`
fails loudly instead of scoring with a version that no longer moves. Running it again changes
nothing. The run (step `registry`) records what changed.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pdmflow.config import TenantConfig
from pdmflow.errors import StepInputError, first_line
from pdmflow.registry.lock import release_lock
from pdmflow.registry.repair import repair_release
from pdmflow.registry.versions import (
    ALIASES,
    ARCHIVED_TAG,
    CHAMPION_ALIAS,
    MODE_TAG,
    PRODUCTION_ALIAS,
    STAGES,
    production_version,
)
from pdmflow.tracking import step_run

FORMER_STAGE_TAG = "pdmflow.former_stage"


def migrate_to_aliases(name: str) -> list[str]:
    """Move model `name` from stages to aliases; one sentence per change (empty: none needed).
    Call it under the release lock."""
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as error:
        raise StepInputError(
            f"registry migrate: no registered model {name!r} ({first_line(error)})"
        ) from None
    done = list(repair_release(name, STAGES)) if registered.tags.get(MODE_TAG) != ALIASES else []
    released = production_version(name, STAGES)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    if released is not None:
        for alias in (PRODUCTION_ALIAS, CHAMPION_ALIAS):
            if str(registered.aliases.get(alias)) != str(released.version):
                client.set_registered_model_alias(name, alias, released.version)
                done.append(f"@{alias} -> version {released.version} (its Production version)")
    for version in sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
    ):
        stage = version.current_stage
        if stage == "Archived" and ARCHIVED_TAG not in version.tags:
            client.set_model_version_tag(name, version.version, ARCHIVED_TAG, now)
        if stage not in (None, "", "None"):
            client.set_model_version_tag(name, version.version, FORMER_STAGE_TAG, stage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # stage APIs are deprecated
                client.transition_model_version_stage(name, version.version, "None")
            done.append(
                f"version {version.version}: stage {stage} cleared (tag {FORMER_STAGE_TAG})"
            )
    if registered.tags.get(MODE_TAG) != ALIASES:
        client.set_registered_model_tag(name, MODE_TAG, ALIASES)
        done.append(f"tagged {MODE_TAG} = {ALIASES}")
    return done


def run_migrate(config: TenantConfig) -> list[str]:
    """The step: migrate the tenant's model, print and log what changed."""
    name = config.registered_model_name
    with step_run(config, "registry"), release_lock(name):
        done = migrate_to_aliases(name)
        mlflow.log_params({"migration": f"{STAGES} -> {ALIASES}", "registered_model": name})
        mlflow.log_metric("registry_changes", len(done))
        mlflow.log_text("\n".join(done) + "\n", "migration.txt")
    for line in done:
        print(f"model {name}: {line}")
    print(
        f"model {name}: released by aliases"
        + ("" if done else " already: nothing to change")
        + f"; serve it as models:/{name}@{PRODUCTION_ALIAS}"
    )
    if config.registry.mode != ALIASES:
        print(f"set registry.mode: aliases in the tenant config (it says {config.registry.mode})")
    return done
