"""How features are built and the rows split: features, split."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from pdmflow.config.base import _Strict


def _check_durations(values: list[str], key: str) -> None:
    for value in values:
        try:
            duration = pd.Timedelta(value)
        except ValueError:
            raise ValueError(f"{key}: '{value}' is not a duration such as 30s, 5min, 2h") from None
        if duration <= pd.Timedelta(0):
            raise ValueError(f"{key}: '{value}' must be positive")


class FeatureConfig(_Strict):
    """Lags and windows are durations (pandas offsets: 60s, 5min, 2h), looking backwards only."""

    lags: list[str] = Field(["1h", "3h", "6h"], min_length=1)
    windows: list[str] = Field(["3h", "6h", "12h"], min_length=1)
    rolling_statistics: list[Literal["mean", "std", "min", "max", "median", "skew", "kurt"]] = [
        "mean",
        "std",
        "min",
        "max",
        "median",
        "skew",
        "kurt",
    ]
    differences: bool = True
    # Pairs of continuous sensors: product, ratio and difference of each pair.
    interactions: list[tuple[str, str]] = []
    cross_sensor: bool = True
    cyclical: bool = True
    # Vibration-like sensors: dominant frequency and spectral energy of the last N readings.
    spectral_sensors: list[str] = []
    spectral_window: int = Field(16, ge=4)
    time_since_failure: bool = True
    # A boolean sensor that is on during maintenance (e.g. maintenance_mode): adds the hours
    # since it was last on, capped like time_since_failure.
    maintenance_sensor: str | None = None
    time_since_cap_hours: float = Field(720.0, gt=0)
    # Selection inside train: constant features and near-duplicates (|r| above this, keeping
    # the first) are dropped; then, when set, only the top k by LightGBM gain are kept.
    drop_correlated_above: float = Field(0.99, gt=0, le=1)
    select_top_k: int | None = Field(None, ge=1)
    # An Isolation Forest fitted on healthy training rows adds its anomaly score as a feature.
    anomaly_score: bool = False

    @model_validator(mode="after")
    def _valid_durations(self) -> FeatureConfig:
        _check_durations(self.lags, "features.lags")
        _check_durations(self.windows, "features.windows")
        return self


class SplitConfig(_Strict):
    # time: the fleet's calendar range is cut into periods (fleets observed side by side);
    # device: whole devices go to train, validation and test (run-to-failure fleets).
    by: Literal["time", "device"] = "time"
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    # split.by time: share of devices kept out of training and validation (seen only in test).
    holdout_device_fraction: float = Field(0.0, ge=0, lt=1)
    # Cross-validation folds over train + validation (0: one split): grouped by device for
    # split.by device, expanding and purged for split.by time.
    cv_folds: int = Field(3, ge=0, le=10)
    # Seeds the device hash of split.by device (a device's split never depends on the others).
    seed: int = 0
