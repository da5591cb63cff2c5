"""Feature groups: the spec's features gathered into the units tuning switches on and off, and
the reference model's recipe expressed in them.

The groups follow what a data scientist would add to a model one idea at a time: the raw
readings, their lags, rolling mean and standard deviation over the short and the long windows,
the rolling distribution's shape (min, max, median, skew, kurtosis, z-score), first and higher
differences, interactions, cross-sensor statistics, spectral features, boolean activity,
calendar encodings, and the time since a failure or maintenance. models/reference.py says
which groups the reference recipe reads and which every trial reads.
"""

from __future__ import annotations

from pdmflow.features.builder import FeatureSpec
from pdmflow.models.reference import features_in

# Every group, in the order trials name them.
GROUPS = (
    "raw",
    "lags",
    "rolling_short",
    "rolling_long",
    "rolling_shape",
    "differences",
    "higher_differences",
    "boolean_activity",
    "interactions",
    "cross_sensor",
    "spectral",
    "cyclical",
    "time_since_event",
)
_BY_FAMILY = {
    "raw value": "raw",
    "lag": "lags",
    "rolling z-score": "rolling_shape",
    "boolean activity": "boolean_activity",
    "interaction": "interactions",
    "cross-sensor": "cross_sensor",
    "spectral": "spectral",
    "cyclical time": "cyclical",
    "time since failure": "time_since_event",
    "time since maintenance": "time_since_event",
}
_MOMENTS = ("mean", "std")


def _group(spec: FeatureSpec, family: str, name: str, short_windows: set[str]) -> str:
    if family == "difference":
        return "differences" if name.endswith("_diff_1") else "higher_differences"
    if family == "rolling statistic":
        # {sensor}_roll_{window}_{statistic}
        statistic = name.rsplit("_", 1)[1]
        if statistic not in _MOMENTS:
            return "rolling_shape"
        window = next(w for w in spec.windows if f"_roll_{w}_" in name)
        return "rolling_short" if window in short_windows else "rolling_long"
    return _BY_FAMILY[family]


def feature_groups(spec: FeatureSpec, names: list[str] | None = None) -> dict[str, list[str]]:
    """Group -> the features of `names` (default: the spec's) in it, in the spec's order;
    groups without a feature are left out. Short windows are the shorter half of
    features.windows (the middle one of an odd count counts as short)."""
    chosen = set(spec.feature_names if names is None else names)
    short_windows = set(spec.windows[: (len(spec.windows) + 1) // 2])
    grouped: dict[str, list[str]] = {}
    for family, name in spec.feature_families():
        if name in chosen:
            grouped.setdefault(_group(spec, family, name, short_windows), []).append(name)
    return {group: grouped[group] for group in GROUPS if group in grouped}


def features_of_groups(
    spec: FeatureSpec, names: list[str], chosen: list[str] | tuple[str, ...]
) -> list[str]:
    """The features among `names` in the `chosen` groups (and the always-read ones), in the
    spec's order."""
    picked = set(features_in(feature_groups(spec, names), chosen))
    return [name for name in spec.feature_names if name in picked]
