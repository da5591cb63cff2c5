"""Releases and rollbacks: who moved which version into Production, when, and why.

Every move into Production is recorded on the version as tags, so the registry itself holds the
release history (`release_history`):

- `pdmflow.released_at` / `pdmflow.released_by`: promote released it (every gate passed);
- `pdmflow.restored_at` / `_by` / `pdmflow.restore_reason`: a rollback put it back;
- `pdmflow.rolled_back_at` / `_by` / `pdmflow.rollback_reason`: a rollback took it out.

In `registry.mode: aliases` no stage is set: @staging marks the version for the instant of its
release, @production and @champion name the released one, and the version they leave is
tagged `pdmflow.archived_at` (what the Archived stage says in stages mode).
"""

from __future__ import annotations

import getpass
import os
import warnings
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pdmflow.errors import StepInputError
from pdmflow.registry.faults import kill_point
from pdmflow.registry.versions import (
    ALIASES,
    ARCHIVED_TAG,
    CHAMPION_ALIAS,
    MODE_TAG,
    PRODUCTION_ALIAS,
    STAGES,
    STAGING_ALIAS,
    check_mode,
    is_archived,
    production_version,
)


def _who() -> str:
    """The person or service acting: PDMFLOW_USER, else the login name."""
    try:
        return os.environ.get("PDMFLOW_USER") or getpass.getuser()
    except OSError:  # no login name in some containers
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _to_production(name: str, version: str, mode: str) -> None:
    """Production (archiving the one there), then `champion` moves to it."""
    client = MlflowClient()
    if mode == ALIASES:
        current = production_version(name, ALIASES)
        kill_point("transition_to_production")
        if current is not None and str(current.version) != str(version):
            client.set_model_version_tag(name, current.version, ARCHIVED_TAG, _now())
        if ARCHIVED_TAG in client.get_model_version(name, version).tags:  # restored
            client.delete_model_version_tag(name, version, ARCHIVED_TAG)
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    else:
        kill_point("transition_to_production")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stage APIs are deprecated
            client.transition_model_version_stage(
                name, version, "Production", archive_existing_versions=True
            )
    kill_point("set_champion_alias")
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


def release(name: str, version: str, mode: str = STAGES) -> None:
    """Staging, then Production archiving the old one, then `champion` here; in aliases mode
    @staging, then @production (the old one tagged archived), @champion, @staging removed."""
    client = MlflowClient()
    check_mode(name, mode)
    kill_point("transition_to_staging")
    if mode == ALIASES:
        client.set_registered_model_tag(name, MODE_TAG, ALIASES)
        client.set_registered_model_alias(name, STAGING_ALIAS, version)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(name, version, "Staging")
    _to_production(name, version, mode)
    if mode == ALIASES:
        client.delete_registered_model_alias(name, STAGING_ALIAS)
    kill_point("set_release_tags")
    client.set_model_version_tag(name, version, "pdmflow.released_at", _now())
    client.set_model_version_tag(name, version, "pdmflow.released_by", _who())


def _versions(name: str) -> dict[str, ModelVersion]:
    try:
        found = MlflowClient().search_model_versions(f"name = '{name}'")
    except MlflowException:
        found = []
    return {str(v.version): v for v in found}


def _rollback_target(
    name: str,
    versions: dict[str, ModelVersion],
    current: str,
    to_version: str | None,
    mode: str,
) -> ModelVersion:
    if to_version is not None:
        target = versions.get(str(to_version))
        if target is None:
            raise StepInputError(f"rollback: model {name} has no version {to_version}")
        if str(target.version) == current:
            raise StepInputError(f"rollback: version {to_version} of {name} is already Production")
        if not is_archived(target, mode):
            state = (
                "was never released"
                if mode == ALIASES
                else f"is in stage '{target.current_stage}', not Archived"
            )
            raise StepInputError(
                f"rollback: version {to_version} of {name} {state}: only a version that was "
                "released before can be put back"
            )
        return target
    # The previous release: the newest Archived version older than the current one that was
    # not itself rolled back (undoing a rollback names its version).
    candidates = [
        v
        for v in versions.values()
        if is_archived(v, mode)
        and int(v.version) < int(current)
        and "pdmflow.rollback_reason" not in v.tags
    ]
    if not candidates:
        raise StepInputError(
            f"rollback: model {name} has no earlier archived version to put back "
            f"(Production is version {current}); name one with --to-version"
        )
    return max(candidates, key=lambda v: int(v.version))


def rollback(
    name: str, reason: str, to_version: str | None = None, mode: str = STAGES
) -> tuple[str, str]:
    """Put the previous (or `to_version`) Archived version back in Production.

    The current Production version is archived and tagged with who, when and why; the restored
    one is tagged the same way, and `champion` moves to it. Returns (restored, rolled back).
    Raises StepInputError, with nothing changed, when there is no Production version, no
    Archived version to restore, or the named version was never released.
    """
    if not reason.strip():
        raise StepInputError("rollback: --reason is required (it is kept on both versions)")
    check_mode(name, mode)
    current = production_version(name, mode)
    if current is None:
        raise StepInputError(f"rollback: model {name} has no Production version to roll back")
    current_version = str(current.version)
    target = _rollback_target(name, _versions(name), current_version, to_version, mode)
    restored = str(target.version)
    _to_production(name, restored, mode)
    client = MlflowClient()
    when, who = _now(), _who()
    for version, prefix, key in (
        (restored, "pdmflow.restored", "pdmflow.restore_reason"),
        (current_version, "pdmflow.rolled_back", "pdmflow.rollback_reason"),
    ):
        client.set_model_version_tag(name, version, f"{prefix}_at", when)
        client.set_model_version_tag(name, version, f"{prefix}_by", who)
        client.set_model_version_tag(name, version, key, reason)
    return restored, current_version


def release_history(name: str) -> list[dict[str, str]]:
    """Every version and every move into or out of Production, oldest first.

    One row per event: version, when, event (registered / released / rejected / rolled back /
    restored), who and the reason (the failed gates for a rejection).
    """
    events: list[dict[str, str]] = []
    for key, version in sorted(_versions(name).items(), key=lambda kv: int(kv[0])):
        tags = version.tags
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
        if tags.get("gates_passed") == "false":
            failed = [
                k[len("gate.") :] for k, v in tags.items() if k.startswith("gate.") and "FAIL" in v
            ]
            events.append(
                {"version": key, "when": created.isoformat(timespec="milliseconds"),
                 "event": "rejected", "who": "", "reason": "failed " + ", ".join(failed)}
            )  # fmt: skip
        if tags.get("gates_passed") == "true":
            # Versions released before release tags existed: their registration time.
            when = tags.get("pdmflow.released_at", created.isoformat(timespec="milliseconds"))
            events.append(
                {"version": key, "when": when, "event": "released",
                 "who": tags.get("pdmflow.released_by", ""), "reason": "every gate passed"}
            )  # fmt: skip
        for prefix, event, reason in (
            ("pdmflow.rolled_back", "rolled back", "pdmflow.rollback_reason"),
            ("pdmflow.restored", "restored", "pdmflow.restore_reason"),
        ):
            if f"{prefix}_at" in tags:
                events.append(
                    {"version": key, "when": tags[f"{prefix}_at"], "event": event,
                     "who": tags.get(f"{prefix}_by", ""), "reason": tags.get(reason, "")}
                )  # fmt: skip
    # A rollback archives and restores at one instant: the archive reads first.
    rank = {"rejected": 0, "released": 0, "rolled back": 1, "restored": 2}
    return sorted(events, key=lambda e: (e["when"], rank[e["event"]], int(e["version"])))
