"""Feature families computed per device from the past only, and the spec serving reuses.

Every feature at row t of a device uses that device's readings at t and before, never after.
Windows and lags are counted in samples. The first `warmup_samples` rows of each device do not
have a full history and are dropped (training) or refused (serving) instead of being padded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.errors import DataValidationError

ROLLING_STATISTICS = ("mean", "std", "min", "max")


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to rebuild the model's input from raw telemetry, in order."""

    device_column: str
    time_column: str
    continuous_sensors: list[str]
    boolean_sensors: list[str]
    lags: list[int]
    windows: list[int]
    feature_names: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: TenantConfig) -> FeatureSpec:
        schema = config.schema_
        spec = cls(
            device_column=schema.device_column,
            time_column=schema.time_column,
            continuous_sensors=list(schema.continuous_sensors),
            boolean_sensors=list(schema.boolean_sensors),
            lags=sorted(config.features.lags),
            windows=sorted(config.features.windows),
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
    def warmup_samples(self) -> int:
        """Readings a device needs before its first complete feature row."""
        return max(max(self.lags), max(self.windows) - 1)

    def _names(self) -> list[str]:
        names: list[str] = []
        for sensor in self.continuous_sensors:
            names.append(sensor)
            names += [f"{sensor}_lag_{k}" for k in self.lags]
            names.append(f"{sensor}_diff_1")
            for window in self.windows:
                names += [f"{sensor}_roll{window}_{stat}" for stat in ROLLING_STATISTICS]
        for sensor in self.boolean_sensors:
            names.append(sensor)
            names += [f"{sensor}_share_on_{window}" for window in self.windows]
        return names

    def to_json(self) -> str:
        return json.dumps(
            {
                **asdict(self),
                "warmup_samples": self.warmup_samples,
                "input_columns": self.input_columns,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data: dict[str, Any] = json.loads(text)
        data.pop("warmup_samples", None)
        data.pop("input_columns", None)
        return cls(**data)


def build_features(telemetry: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Feature rows (device, time, features in spec order) for every row with full history.

    `telemetry` must be validated: sorted by device then time, no missing sensor values.
    """
    device = telemetry[spec.device_column]
    # Rolling over the whole column is exact for every kept row: a kept row's window never
    # reaches back past its own device's first reading (that is what the warm-up guarantees).
    position = device.groupby(device, sort=False).cumcount().to_numpy()
    columns: dict[str, np.ndarray] = {}
    for sensor in spec.continuous_sensors:
        values = telemetry[sensor].astype("float64")
        columns[sensor] = values.to_numpy()
        for k in spec.lags:
            columns[f"{sensor}_lag_{k}"] = values.shift(k).to_numpy()
        columns[f"{sensor}_diff_1"] = values.diff(1).to_numpy()
        for window in spec.windows:
            rolling = values.rolling(window)
            for stat in ROLLING_STATISTICS:
                columns[f"{sensor}_roll{window}_{stat}"] = getattr(rolling, stat)().to_numpy()
    for sensor in spec.boolean_sensors:
        values = telemetry[sensor].astype("float64")
        columns[sensor] = values.to_numpy()
        for window in spec.windows:
            columns[f"{sensor}_share_on_{window}"] = values.rolling(window).mean().to_numpy()

    keep = position >= spec.warmup_samples
    features = pd.DataFrame({name: columns[name][keep] for name in spec.feature_names})
    features.insert(0, spec.time_column, telemetry[spec.time_column].to_numpy()[keep])
    features.insert(0, spec.device_column, device.to_numpy()[keep])
    return features


def latest_features(telemetry: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """One feature row per device: the one at its latest timestamp."""
    device = spec.device_column
    counts = telemetry.groupby(device).size()
    short = counts[counts <= spec.warmup_samples]
    if not short.empty:
        raise DataValidationError(
            f"device '{short.index[0]}' has {int(short.iloc[0])} readings; scoring needs at "
            f"least {spec.warmup_samples + 1} (the longest lag or window)"
        )
    recent = telemetry.groupby(device, sort=False).tail(spec.warmup_samples + 1)
    features = build_features(recent.reset_index(drop=True), spec)
    return features.groupby(device, sort=False).tail(1).reset_index(drop=True)
