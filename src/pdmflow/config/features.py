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

    lags: list[str] = Field(
        ["1h", "3h", "6h"],
        min_length=1,
        description="Lag durations: the last reading at or before t - lag.",
    )
    windows: list[str] = Field(
        ["3h", "6h", "12h"],
        min_length=1,
        description="Rolling window durations: statistics over the readings in (t - window, t].",
    )
    rolling_statistics: list[Literal["mean", "std", "min", "max", "median", "skew", "kurt"]] = (
        Field(
            [
                "mean",
                "std",
                "min",
                "max",
                "median",
                "skew",
                "kurt",
            ],
            description="Statistics computed over each rolling window.",
        )
    )
    differences: bool = Field(
        True,
        description="First and second differences and percent change to the previous reading(s).",
    )
    interactions: list[tuple[str, str]] = Field(
        [], description="Pairs of continuous sensors: product, ratio and difference of each pair."
    )
    cross_sensor: bool = Field(
        True, description="Statistics across the continuous sensors' z-scores at each reading."
    )
    cyclical: bool = Field(
        True,
        description="Sine/cosine encodings of the reading's hour, day of week and month (UTC).",
    )
    spectral_sensors: list[str] = Field(
        [],
        description=(
            "Vibration-like sensors: dominant frequency and spectral energy of the last N readings."
        ),
    )
    spectral_window: int = Field(
        16, ge=4, description="Readings in the FFT of each spectral sensor."
    )
    time_since_failure: bool = Field(
        True, description="Hours since the device's last failure event at or before t."
    )
    maintenance_sensor: str | None = Field(
        None,
        description=(
            "A boolean sensor that is on during maintenance (e.g. maintenance_mode): adds "
            "the hours since it was last on, capped like time_since_failure."
        ),
    )
    time_since_cap_hours: float = Field(
        720.0,
        gt=0,
        description=(
            "Cap on hours since failure or maintenance (also the value when none is on record)."
        ),
    )
    drop_correlated_above: float = Field(
        0.999,
        gt=0,
        le=1,
        description=(
            "Selection inside train: constant features and near-duplicates (|r| above "
            "this, keeping the first of a pair) are dropped. 0.999 drops re-expressions "
            "(a percent change beside its difference) but keeps two sensors, or two windows, "
            "that merely move together: trees lose nothing to correlated columns, and the "
            "small differences between them can be the signal (docs/benchmarks.md)."
        ),
    )
    select_top_k: int | None = Field(
        None,
        ge=1,
        description=(
            "After dropping, keep only the k features of highest LightGBM gain; null: keep all."
        ),
    )
    anomaly_score: bool = Field(
        False,
        description=(
            "An Isolation Forest fitted on healthy training rows adds its anomaly score "
            "as a feature."
        ),
    )

    @model_validator(mode="after")
    def _valid_durations(self) -> FeatureConfig:
        _check_durations(self.lags, "features.lags")
        _check_durations(self.windows, "features.windows")
        return self


class SplitConfig(_Strict):
    by: Literal["time", "device"] = Field(
        "time",
        description=(
            "time: the fleet's calendar range is cut into periods (fleets observed side "
            "by side); device: whole devices go to train, validation and test "
            "(run-to-failure fleets)."
        ),
    )
    validation_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Share of the time range (or of the devices) for validation.",
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=0.5, description="Share of the time range (or of the devices) for the test."
    )
    holdout_device_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "split.by time: share of devices kept out of training and validation (seen "
            "only in test)."
        ),
    )
    cv_folds: int = Field(
        3,
        ge=0,
        le=10,
        description=(
            "Cross-validation folds over train + validation (0: one split): grouped by "
            "device for split.by device, expanding and purged for split.by time."
        ),
    )
    seed: int = Field(
        0,
        description=(
            "Seeds the device hash of split.by device (a device's split never depends on "
            "the others)."
        ),
    )
