"""The feature spec: which features a model reads and how each is built, saved beside the model
so serving rebuilds exactly the training features (`FeatureSpec.to_json` / `from_json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.errors import DataValidationError

ROLLING_STATISTICS = ("mean", "std", "min", "max", "median", "skew", "kurt")
CYCLES = (("hour", 24), ("day_of_week", 7), ("month", 12))


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to rebuild the model's input from raw telemetry, in order."""

    device_column: str
    time_column: str
    event_time_column: str
    continuous_sensors: list[str]
    boolean_sensors: list[str]
    lags: list[str]
    windows: list[str]
    rolling_statistics: list[str]
    differences: bool
    interactions: list[list[str]]
    cross_sensor: bool
    cyclical: bool
    spectral_sensors: list[str]
    spectral_window: int
    time_since_failure: bool
    time_since_cap_hours: float
    feature_names: list[str] = field(default_factory=list)
    maintenance_sensor: str | None = None
    # schema.value_ranges: plausible [low, high] per continuous sensor, for sensor health at
    # serving (`pdmflow.serving.health`); a spec saved before this field loads with none.
    value_ranges: dict[str, list[float]] = field(default_factory=dict)
    # Bumped when the meaning of a field changes; older specs cannot be rebuilt by this code.
    format_version: int = 2

    @classmethod
    def from_config(cls, config: TenantConfig) -> FeatureSpec:
        schema, features = config.schema_, config.features
        spec = cls(
            device_column=schema.device_column,
            time_column=schema.time_column,
            event_time_column=schema.event_time_column,
            continuous_sensors=list(schema.continuous_sensors),
            boolean_sensors=list(schema.boolean_sensors),
            lags=sorted(features.lags, key=pd.Timedelta),
            windows=sorted(features.windows, key=pd.Timedelta),
            rolling_statistics=list(features.rolling_statistics),
            differences=features.differences,
            interactions=[list(pair) for pair in features.interactions],
            cross_sensor=features.cross_sensor,
            cyclical=features.cyclical,
            spectral_sensors=list(features.spectral_sensors),
            spectral_window=features.spectral_window,
            time_since_failure=features.time_since_failure,
            maintenance_sensor=features.maintenance_sensor,
            time_since_cap_hours=features.time_since_cap_hours,
            value_ranges={
                sensor: [float(low), float(high)]
                for sensor, (low, high) in schema.value_ranges.items()
            },
        )
        return cls(**{**asdict(spec), "feature_names": spec._names()})

    @property
    def input_columns(self) -> list[str]:
        return [
            self.device_column,
            self.time_column,
            *self.continuous_sensors,
            *self.boolean_sensors,
        ]

    @property
    def history(self) -> pd.Timedelta:
        """How far back from a reading its features look (the longest lag or window)."""
        return max(pd.Timedelta(x) for x in [*self.lags, *self.windows])

    @property
    def serving_history(self) -> pd.Timedelta:
        """How far back serving must give readings for a device's latest features to equal
        training's: `history`, or the time-since cap when hours_since_maintenance is built
        (the last maintenance reading may lie that far back)."""
        if self.maintenance_sensor and "hours_since_maintenance" in self.feature_names:
            return max(self.history, pd.Timedelta(hours=self.time_since_cap_hours))
        return self.history

    @property
    def health_window(self) -> pd.Timedelta:
        """The trailing window sensor health reads at a reading t: (t - history, t], the
        readings the rolling windows and lags of t's features look at."""
        return self.history

    @property
    def min_readings(self) -> int:
        """Readings a device needs, at least, besides `history` of time."""
        return max(3, self.spectral_window if self.spectral_sensors else 0)

    @property
    def zscore_window(self) -> str:
        return self.windows[-1]

    def feature_families(self) -> list[tuple[str, str]]:
        """(family, feature name) for every feature the spec can build, in the spec's order."""
        named: list[tuple[str, str]] = []

        def add(family: str, *names: str) -> None:
            named.extend((family, name) for name in names)

        for sensor in self.continuous_sensors:
            add("raw value", sensor)
            add("lag", *(f"{sensor}_lag_{lag}" for lag in self.lags))
            if self.differences:
                add("difference", f"{sensor}_diff_1", f"{sensor}_diff_2", f"{sensor}_pct_change")
            for window in self.windows:
                add(
                    "rolling statistic",
                    *(f"{sensor}_roll_{window}_{stat}" for stat in self.rolling_statistics),
                )
            add("rolling z-score", f"{sensor}_zscore_{self.zscore_window}")
        for sensor in self.boolean_sensors:
            add("raw value", sensor)
            for window in self.windows:
                add(
                    "boolean activity", f"{sensor}_share_on_{window}", f"{sensor}_switches_{window}"
                )
        for a, b in self.interactions:
            add("interaction", f"{a}_times_{b}", f"{a}_per_{b}", f"{a}_minus_{b}")
        if self.cross_sensor:
            add(
                "cross-sensor",
                "cross_sensor_abs_zscore_mean",
                "cross_sensor_abs_zscore_max",
                "cross_sensor_zscore_std",
            )
        for sensor in self.spectral_sensors:
            add("spectral", f"{sensor}_dominant_frequency_hz", f"{sensor}_spectral_energy")
        if self.cyclical:
            for unit, _ in CYCLES:
                add("cyclical time", f"{unit}_sin", f"{unit}_cos")
        if self.time_since_failure:
            add("time since failure", "hours_since_failure")
        if self.maintenance_sensor:
            add("time since maintenance", "hours_since_maintenance")
        return named

    def _names(self) -> list[str]:
        return [name for _, name in self.feature_families()]

    def families(self) -> dict[str, int]:
        """How many of the spec's features each family holds (lag, rolling statistic, ...)."""
        kept = set(self.feature_names)
        counts: dict[str, int] = {}
        for family, name in self.feature_families():
            if name in kept:
                counts[family] = counts.get(family, 0) + 1
        return counts

    def with_features(self, names: list[str]) -> FeatureSpec:
        """The same spec reading only `names` (a subset, kept in the spec's order)."""
        known = set(self._names())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DataValidationError(f"feature '{unknown[0]}' is not built by this spec")
        chosen = set(names)
        return replace(self, feature_names=[n for n in self._names() if n in chosen])

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "input_columns": self.input_columns, "history": str(self.history)},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data: dict[str, Any] = json.loads(text)
        version = data.get("format_version", 1)
        if version != cls.format_version:
            raise DataValidationError(
                f"feature spec format {version} cannot be rebuilt by this pdmflow "
                f"(format {cls.format_version})"
            )
        data.pop("input_columns", None)
        data.pop("history", None)
        return cls(**data)
