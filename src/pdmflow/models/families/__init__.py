"""The model families the pipeline can train, by name: the one place that lists them.

Adding a family is one module beside these (an object with the verbs of `ModelFamily`) and one
line in `FAMILIES`; training.family and tuning.families in the config name its key.
"""

from __future__ import annotations

from typing import Any

from pdmflow.errors import ConfigError
from pdmflow.models.families.base import ModelFamily
from pdmflow.models.families.lightgbm import LightGBMFamily
from pdmflow.models.families.random_forest import RandomForestFamily

FAMILIES: dict[str, ModelFamily] = {
    "lightgbm": LightGBMFamily(),
    "random_forest": RandomForestFamily(),
}
# The family of runs and models logged before the family was recorded.
DEFAULT_FAMILY = "lightgbm"

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "ModelFamily", "family", "family_of"]


def family(name: str) -> ModelFamily:
    """The family called `name` (training.family, a train run's param `family`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"model family {name!r}: expected one of {', '.join(sorted(FAMILIES))}"
        ) from None


def family_of(estimator: Any) -> ModelFamily:
    """The family a fitted estimator belongs to."""
    for candidate in FAMILIES.values():
        if candidate.owns(estimator):
            return candidate
    raise TypeError(f"no model family fits a {type(estimator).__name__}")
