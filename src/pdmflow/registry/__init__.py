"""Model registry: versions, stages, the `champion` alias, releases and rollbacks, the release
lock (one release of a model at a time) and lineage (what each version was built from).

`registry.mode: stages` (the default): serving code loads `models:/<name>/Production`, so a
release sets both the Production stage (archiving the previous one) and the `champion` alias.
`registry.mode: aliases`: no stage is ever set; @production and @champion name the release
(`migrate.py` moves a model from stages to aliases).
"""

from pdmflow.registry.lock import release_lock
from pdmflow.registry.release import release, release_history, rollback
from pdmflow.registry.repair import release_problems, repair_release
from pdmflow.registry.versions import (
    ALIASES,
    CHAMPION_ALIAS,
    PRODUCTION_ALIAS,
    STAGES,
    production_version,
    register,
    serving_uri,
    update_description,
)

__all__ = [
    "ALIASES",
    "CHAMPION_ALIAS",
    "PRODUCTION_ALIAS",
    "STAGES",
    "production_version",
    "register",
    "release",
    "release_history",
    "release_lock",
    "release_problems",
    "repair_release",
    "rollback",
    "serving_uri",
    "update_description",
]
