"""Model registry: versions, stages, the `champion` alias, releases and rollbacks.

Stages are deprecated in MLflow but serving code still loads `models:/<name>/Production`, so a
release sets both: the Production stage (archiving the previous one) and the `champion` alias.
"""

from pdmflow.registry.release import (
    CHAMPION_ALIAS,
    release,
    release_history,
    rollback,
)
from pdmflow.registry.versions import production_version, register, update_description

__all__ = [
    "CHAMPION_ALIAS",
    "production_version",
    "register",
    "release",
    "release_history",
    "rollback",
    "update_description",
]
