"""Finish or undo a release that was killed part-way, so the registry is consistent again.

A release makes several registry calls (register, Staging, Production archiving the old one,
the `champion` alias, release tags); a process killed between two of them leaves a half-done
state. Consistent means: at most one version in Production, none in Staging (Staging only ever
lasts for the instant of a release), and `champion` on the Production version (no alias when
there is none). promote repairs before it releases, `pdmflow status` when it finds a problem;
both under the release lock, so a live release is never taken for a dead one.

In `registry.mode: aliases` the same invariant reads: @staging gone, @champion on @production,
and the @production version not tagged archived.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pdmflow.registry.versions import (
    ALIASES,
    ARCHIVED_TAG,
    CHAMPION_ALIAS,
    PRODUCTION_ALIAS,
    STAGES,
    STAGING_ALIAS,
)

INTERRUPTED_TAG = "pdmflow.release_interrupted_at"


def _state(name: str, mode: str) -> tuple[list[ModelVersion], list[ModelVersion], str | None]:
    """(Production versions oldest first, versions being released, the version `champion`
    names): by stage, or by @production and @staging in aliases mode."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return [], [], None
        raise
    by_number = sorted(versions, key=lambda v: int(v.version))
    if mode == ALIASES:
        named = {
            key: str(aliases[key]) for key in (PRODUCTION_ALIAS, STAGING_ALIAS) if key in aliases
        }
        production = [v for v in by_number if str(v.version) == named.get(PRODUCTION_ALIAS)]
        staging = [v for v in by_number if str(v.version) == named.get(STAGING_ALIAS)]
    else:
        production = [v for v in by_number if v.current_stage == "Production"]
        staging = [v for v in by_number if v.current_stage == "Staging"]
    champion = aliases.get(CHAMPION_ALIAS)
    return production, staging, None if champion is None else str(champion)


def release_problems(name: str, mode: str = STAGES) -> list[str]:
    """What is inconsistent in model `name`'s release state (empty when nothing is)."""
    production, staging, champion = _state(name, mode)
    problems = []
    if len(production) > 1:
        numbers = ", ".join(str(v.version) for v in production)
        problems.append(f"versions {numbers} are all in Production")
    where = f"@{STAGING_ALIAS}" if mode == ALIASES else "Staging"
    problems += [f"version {v.version} is in {where} (a release stopped there)" for v in staging]
    released = str(production[-1].version) if production else None
    if champion != released:
        problems.append(
            f"@{CHAMPION_ALIAS} points at {champion or 'nothing'}, "
            f"Production is {released or 'empty'}"
        )
    if mode == ALIASES and production and ARCHIVED_TAG in production[-1].tags:
        problems.append(f"version {released} is @{PRODUCTION_ALIAS} but tagged {ARCHIVED_TAG}")
    return problems


def _move(name: str, version: str, stage: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stage APIs are deprecated, still served
        MlflowClient().transition_model_version_stage(name, version, stage)


def repair_release(name: str, mode: str = STAGES) -> list[str]:
    """Make model `name` consistent; one sentence per change made (empty when none was needed).

    Call it under the release lock. Several Production versions: the one `champion` names (else
    the newest) stays, the others are archived. A version left in Staging goes back to None,
    tagged INTERRUPTED_TAG: its release never reached Production, and a later promote registers
    a fresh version. Last, `champion` moves to the Production version (or is removed).
    """
    production, staging, champion = _state(name, mode)
    client = MlflowClient()
    done: list[str] = []
    if len(production) > 1:
        keep = next((v for v in production if str(v.version) == champion), production[-1])
        for extra in production:
            if extra is not keep:
                _move(name, extra.version, "Archived")
                done.append(
                    f"archived version {extra.version}: it was in Production next to "
                    f"version {keep.version}"
                )
        production = [keep]
    for half_released in staging:
        if mode == ALIASES:
            client.delete_registered_model_alias(name, STAGING_ALIAS)
            if production and half_released.version == production[0].version:
                done.append(
                    f"removed @{STAGING_ALIAS} from version {half_released.version}: its "
                    f"release had reached @{PRODUCTION_ALIAS}"
                )
                continue
        else:
            _move(name, half_released.version, "None")
        client.set_model_version_tag(
            name,
            half_released.version,
            INTERRUPTED_TAG,
            datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        where = f"@{STAGING_ALIAS}" if mode == ALIASES else "Staging back to None"
        done.append(
            f"moved version {half_released.version} from {where}: its release "
            "was interrupted before Production (promote again to release a new version)"
        )
    if mode == ALIASES and production and ARCHIVED_TAG in production[0].tags:
        client.delete_model_version_tag(name, production[0].version, ARCHIVED_TAG)
        done.append(
            f"removed {ARCHIVED_TAG} from version {production[0].version}: it is still "
            f"@{PRODUCTION_ALIAS} (a release stopped before moving it)"
        )
    released = str(production[0].version) if production else None
    if champion != released:
        if released is None:
            client.delete_registered_model_alias(name, CHAMPION_ALIAS)
            done.append(
                f"removed @{CHAMPION_ALIAS} (it named version {champion}, not in Production)"
            )
        else:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, released)
            done.append(
                f"moved @{CHAMPION_ALIAS} from {champion or 'nothing'} to version {released}, "
                "the Production version"
            )
    return [f"model {name}: repaired an interrupted release: {line}" for line in done]
