"""Model registry: versions, stages, the `champion` alias, releases and rollbacks, the release
lock (one release of a model at a time) and lineage (what each version was built from).

Stages are deprecated in MLflow but serving code still loads `models:/<name>/Production`, so a
release sets both: the Production stage (archiving the previous one) and the `champion` alias.
"""

from pdmflow.registry.lock import release_lock
from pdmflow.registry.release import (
    CHAMPION_ALIAS,
    release,
    release_history,
    rollback,
)
from pdmflow.registry.repair import release_problems, repair_release
from pdmflow.registry.versions import production_version, register, update_description

__all__ = [
    "CHAMPION_ALIAS",
    "production_version",
    "register",
    "release",
    "release_history",
    "release_lock",
    "release_problems",
    "repair_release",
    "rollback",
    "update_description",
]
