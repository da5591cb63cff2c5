"""Typed tenant configuration: the only place that reads YAML.

A tenant config is one YAML file. Every key is declared here; an unknown key or a value of the
wrong type is refused with a one-line message naming the file and the key.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from pdmflow.errors import ConfigError
from pdmflow.evaluation.catalog import LIFT_METRICS, TUNING_OBJECTIVES, evaluate_metric_names

DEFAULT_CONFIG_PATH = "configs/default.yaml"
# A gate rule in gates.require: a comparison and a number.
GATE_RULE = re.compile(r"\s*(>=|<=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*")
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class _Strict(BaseModel):
    # extra="forbid" turns a typo in a YAML key into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class SyntheticSource(_Strict):
    """Seeded generator of a degrading fleet (see pdmflow.data.synthetic)."""

    n_devices: int = Field(40, ge=1, description="Number of devices in the generated fleet.")
    days: float = Field(
        30.0, gt=0, description="Days of history per device (run_to_failure: the mean lifetime)."
    )
    sample_minutes: float = Field(
        30.0, gt=0, description="Minutes between two readings of a device."
    )
    mean_days_between_failures: float = Field(
        9.0, gt=0, description="Mean days between two failures of one device (calendar fleet)."
    )
    degradation_hours: float = Field(
        36.0,
        gt=0,
        description=(
            "Hours before each failure in which the sensors drift (and vibration "
            "oscillates harder); run_to_failure: the late, faster phase of wear."
        ),
    )
    noise: float = Field(1.0, ge=0, description="Scale of the sensors' random noise.")
    seed: int = Field(7, description="Random seed: the same seed gives the same fleet.")
    run_to_failure: bool = Field(
        False,
        description=(
            "The shape of history (at most one of run_to_failure, process_log, "
            "component_failures; none: a fleet observed side by side over calendar time). "
            "run_to_failure: every device starts at once, worn to its own degree, and "
            "runs until its single failure; `days` is the mean lifetime (each between "
            "0.5x and 2x), `degradation_hours` the late, faster phase of wear."
        ),
    )
    process_log: bool = Field(
        False,
        description=(
            "process_log: one machine's log, one reading per sample_minutes over `days`, "
            "with the milling sensors (air/process temperature, rotational speed, torque, "
            "tool wear) and a 0/1 column named by labels.target_column; failures come "
            "from physics rules."
        ),
    )
    process_log_failure_rate: float = Field(
        0.034,
        gt=0,
        lt=0.5,
        description="process_log: share of readings that are failures (AI4I 2020: 3.4 %).",
    )
    component_failures: bool = Field(
        False,
        description=(
            "component_failures: the calendar fleet, but each failure is of one "
            "component, and component i shows only in continuous sensor i (like the Azure "
            "PdM telemetry: volt, rotate, pressure, vibration); the other sensors carry "
            "no sign of it. Events' failure_type names it."
        ),
    )


class SourceConfig(_Strict):
    """Where telemetry and failure events come from."""

    kind: Literal["synthetic", "csv", "json", "jsonl", "parquet", "sql", "dataframe"] = Field(
        "synthetic",
        description=(
            "Which source ingest reads: a seeded synthetic fleet, files, a SQL database, "
            "or frames handed to the Python API."
        ),
    )
    synthetic: SyntheticSource = Field(
        SyntheticSource(), description="The synthetic fleet's shape and seed (kind synthetic)."
    )
    telemetry_path: str | None = Field(
        None,
        description=(
            "Telemetry file (kinds csv, json, jsonl, parquet); timestamps as ISO 8601 text."
        ),
    )
    events_path: str | None = Field(
        None, description="Failure events file (device, event_time[, failure_type]); optional."
    )
    url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL (kind sql). Put the password in PDMFLOW_DB_PASSWORD rather "
            "than in the file; it is never logged (see pdmflow.data.sources.redact_url)."
        ),
    )
    telemetry_table: str | None = Field(
        None, description="Telemetry table, [schema.]table (kind sql)."
    )
    events_table: str | None = Field(
        None, description="Failure events table, [schema.]table (kind sql); optional."
    )
    tenant_column: str | None = Field(
        None,
        description=(
            "SQL filter, sent as a bound parameter: only rows whose tenant_column equals tenant_id."
        ),
    )
    devices: list[str] = Field(
        [], description="SQL filter: only these devices (empty: every device)."
    )
    start: datetime | None = Field(
        None, description="SQL filter: readings at or after this ISO date-time (inclusive)."
    )
    end: datetime | None = Field(
        None, description="SQL filter: readings before this ISO date-time (exclusive)."
    )
    chunk_rows: int = Field(
        100_000, ge=1000, description="Rows read at a time through the SQL server-side cursor."
    )

    @model_validator(mode="after")
    def _identifiers_are_plain(self) -> SourceConfig:
        # Names end up in SQL (quoted by SQLAlchemy); anything but a plain identifier is refused
        # here, before a connection is even opened.
        for key in ("telemetry_table", "events_table", "tenant_column"):
            value = getattr(self, key)
            if value is not None and not SQL_IDENTIFIER.fullmatch(value):
                raise ValueError(
                    f"source.{key} {value!r} is not a plain SQL identifier ([schema.]name of "
                    "letters, digits and underscores)"
                )
        return self

    @model_validator(mode="after")
    def _paths_for_kind(self) -> SourceConfig:
        if self.kind in ("csv", "json", "jsonl", "parquet") and not self.telemetry_path:
            raise ValueError(f"source.telemetry_path is required when source.kind is {self.kind}")
        if self.kind == "sql" and not (self.url and self.telemetry_table):
            raise ValueError("source.url and source.telemetry_table are required for kind sql")
        return self


class SchemaConfig(_Strict):
    """How the tenant's columns map onto pdmflow's names."""

    device_column: str = Field(
        "device_id", description="Column holding the device id (telemetry and events)."
    )
    time_column: str = Field("timestamp", description="Column holding each reading's timestamp.")
    event_time_column: str = Field(
        "event_time", description="Column holding each failure event's time."
    )
    continuous_sensors: list[str] = Field(
        min_length=1, description="Numeric sensors (temperature, vibration, ...); at least one."
    )
    boolean_sensors: list[str] = Field(
        [], description="On/off sensors (pump on, valve open, alarm active, ...)."
    )
    rename: dict[str, str] = Field(
        {}, description="Source column name -> pdmflow column name, applied right after reading."
    )
    value_ranges: dict[str, tuple[float, float]] = Field(
        {},
        description=(
            "Plausible [low, high] per continuous sensor: readings outside are sensor "
            "faults, treated as missing (carried forward); more than "
            "data.max_out_of_range_fraction of a device's readings out of range is an "
            "error."
        ),
    )

    @model_validator(mode="after")
    def _ranges_name_sensors(self) -> SchemaConfig:
        for sensor, (low, high) in self.value_ranges.items():
            if sensor not in self.continuous_sensors:
                raise ValueError(f"schema.value_ranges names '{sensor}', not a continuous sensor")
            if not low < high:
                raise ValueError(f"schema.value_ranges.{sensor}: expected [low, high], low < high")
        return self


class LabelConfig(_Strict):
    horizon_hours: float = Field(
        24.0,
        gt=0,
        description=(
            "Label failure_within_horizon: 1 when the device fails within this many hours "
            "after a reading."
        ),
    )
    target_column: str | None = Field(
        None,
        description=(
            "A 0/1 column already in the telemetry (e.g. failure_indicator): when set, it "
            "is the label and failure events are optional."
        ),
    )
    rul_cap_hours: float = Field(
        168.0,
        gt=0,
        description=(
            "Remaining useful life (task: regression): hours to the next failure, capped here."
        ),
    )
    critical_hours: float = Field(
        10.0, gt=0, description="Health status from RUL: critical below this many hours."
    )
    warning_hours: float = Field(
        50.0,
        gt=0,
        description=(
            "Health status from RUL: warning below this many hours (and at least "
            "critical_hours), else normal."
        ),
    )
    rul_tolerance_hours: float = Field(
        10.0,
        gt=0,
        description=(
            "A RUL prediction within this many hours of the truth is neither early nor late."
        ),
    )

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> LabelConfig:
        if not self.critical_hours < self.warning_hours <= self.rul_cap_hours:
            raise ValueError("labels: expected critical_hours < warning_hours <= rul_cap_hours")
        return self


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
        0.99,
        gt=0,
        le=1,
        description=(
            "Selection inside train: constant features and near-duplicates (|r| above "
            "this, keeping the first of a pair) are dropped."
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


class ThresholdConfig(_Strict):
    """How the decision threshold is chosen on out-of-fold (or validation) predictions."""

    rule: Literal["f1", "precision_at_least", "recall_at_least", "cost", "meet_gates"] = Field(
        "f1",
        description=(
            "How the threshold is picked: f1 maximises F1; precision_at_least / "
            "recall_at_least the best other side above a floor; cost the lowest total "
            "cost; meet_gates the most recall whose precision reaches gates.min_precision "
            "plus `precision_margin` (else the F1 threshold, with a warning)."
        ),
    )
    precision_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description=(
            "rule meet_gates: room added to gates.min_precision for the validation-to-test gap."
        ),
    )
    precision: float | None = Field(
        None, gt=0, le=1, description="rule precision_at_least: the precision floor."
    )
    recall: float | None = Field(
        None, gt=0, le=1, description="rule recall_at_least: the recall floor."
    )
    missed_failure_cost: float | None = Field(
        None, gt=0, description="rule cost: the cost of one missed failure."
    )
    false_alarm_cost: float | None = Field(
        None, gt=0, description="rule cost: the cost of one false alarm."
    )

    @model_validator(mode="after")
    def _rule_has_its_numbers(self) -> ThresholdConfig:
        needs = {
            "precision_at_least": ["precision"],
            "recall_at_least": ["recall"],
            "cost": ["missed_failure_cost", "false_alarm_cost"],
        }.get(self.rule, [])
        missing = [key for key in needs if getattr(self, key) is None]
        if missing:
            raise ValueError(f"training.threshold.{missing[0]} is required for rule {self.rule}")
        return self


class TrainingConfig(_Strict):
    family: Literal["lightgbm", "random_forest"] = Field(
        "lightgbm",
        description=(
            "Model family: lightgbm (default) or random_forest; tuning.families lets "
            "Optuna choose instead."
        ),
    )
    params: dict[str, Any] = Field(
        {
            "n_estimators": 1000,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 20,
            "colsample_bytree": 0.8,
            "subsample": 0.8,
            "subsample_freq": 1,
        },
        description=(
            "LightGBM parameters (scikit-learn names); n_estimators is a ceiling (early stopping)."
        ),
    )
    random_forest_params: dict[str, Any] = Field(
        {}, description="Random Forest parameters (scikit-learn names), for family random_forest."
    )
    max_bin: int = Field(
        255,
        ge=2,
        description=(
            "LightGBM's histogram bins per feature (its max_bin) in feature selection and "
            "the released model's fits; tuning.max_bin is the trials'."
        ),
    )
    early_stopping_rounds: int = Field(
        50,
        ge=1,
        description=(
            "Boosting stops when the validation metric has not improved for this many "
            "rounds; params.n_estimators is the ceiling."
        ),
    )
    refit: bool = Field(
        True,
        description=(
            "The released model is refitted on train + validation with the early-stopped "
            "number of rounds (scaled by the rows it sees); false: the model fitted on "
            "the train rows is kept."
        ),
    )
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        "sigmoid",
        description=(
            "Calibration of probabilities, fitted on out-of-fold (or validation) "
            "predictions. sigmoid keeps the ranking (AUC) exactly; isotonic bends freely "
            "but needs more positives."
        ),
    )
    decision_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="A fixed decision threshold; null: chosen by `threshold.rule`.",
    )
    threshold: ThresholdConfig = Field(
        ThresholdConfig(),
        description="How the decision threshold is chosen when decision_threshold is null.",
    )
    rul_objective: Literal["l2", "huber", "l1"] = Field(
        "l2",
        description=(
            "task: regression: LightGBM objective for remaining useful life. l2 weighs "
            "the large (late) errors that RMSE and the NASA score punish; l1 aims at the "
            "median (lowest MAE)."
        ),
    )
    seed: int = Field(42, description="Seed of model fits and of the tuning sample.")


class TuningConfig(_Strict):
    n_trials: int = Field(
        20, ge=1, description="Optuna trials (shared by all workers of one study)."
    )
    timeout_seconds: float = Field(
        600, gt=0, description="Wall-time budget of the study, in seconds."
    )
    storage: str | None = Field(
        None,
        description=(
            "Optuna storage URL (e.g. postgresql://...) to share a study between workers; "
            "null = memory."
        ),
    )
    families: list[Literal["lightgbm", "random_forest"]] = Field(
        [], description="Model families Optuna chooses among; empty: training.family only."
    )
    learning_rate: float | None = Field(
        0.1,
        gt=0,
        le=1,
        description=(
            "LightGBM's learning rate in every trial; the study searches the trees' shape "
            "and regularisation. null: the rate is searched too (0.01-0.3), and trials at "
            "low rates take many times longer (docs: data scientist guide, tuning)."
        ),
    )
    release_learning_rate: float | None = Field(
        0.025,
        gt=0,
        le=1,
        description=(
            "train fits the study's best LightGBM parameters at this slower rate, its "
            "rounds ceiling scaled up to match (early stopping picks the rounds); null: "
            "released at the tuned rate."
        ),
    )
    max_rows: int | None = Field(
        50_000,
        ge=1000,
        description=(
            "Trials fit and score at most this many learning rows, drawn at random (each "
            "fold keeps its share); train still fits on all of them. null: every row."
        ),
    )
    early_stopping_rounds: int | None = Field(
        20,
        ge=1,
        description=(
            "Trials stop after this many rounds without gain on a fold's validation rows: "
            "a round at tuning.learning_rate learns more than one at the release rate, so "
            "less patience does. null: training.early_stopping_rounds."
        ),
    )
    max_bin: int | None = Field(
        63,
        ge=2,
        description=(
            "LightGBM's histogram bins per feature in the trials. A round scans every bin "
            "of each leaf, so fewer bins make trials cheaper (a 64-leaf round 38 % at 63 "
            "bins); the release keeps training.max_bin, which finds thresholds a process "
            "log needs (docs: data scientist guide, tuning). null: training.max_bin."
        ),
    )
    objective: Literal["average_precision", "auc", "log_loss", "mae", "rmse"] | None = Field(
        None,
        description=(
            "What trials optimise on their validation rows. Classification: "
            "average_precision (rare failures: it rewards ranking the few failing rows "
            "first, where AUC is already near 1 for every trial), auc or log_loss; "
            "regression: mae or rmse. null: the task's first."
        ),
    )
    feature_groups: bool = Field(
        True,
        description=(
            "Trials also choose which feature groups the model reads (raw values always; "
            "lags, short/long rolling mean and std, rolling shape, differences, "
            "interactions, cross-sensor, spectral, cyclical, time since an event ...). "
            "The reference model's recipe and the full feature set are the first two "
            "trials, so the tuned model is never behind them on the objective."
        ),
    )


class LiftGate(_Strict):
    """The candidate must beat the in-run reference model on `metric` by at least `margin`
    (for error metrics, lower by at least `margin`)."""

    metric: str = Field(
        "average_precision",
        description="The metric compared with the reference model (a lift_* metric of the task).",
    )
    margin: float = Field(
        0.0,
        description=(
            "How far ahead of the reference the candidate must be (error metrics: lower "
            "by at least this)."
        ),
    )


class GateConfig(_Strict):
    min_auc: float = Field(0.80, description="Release gate: test AUC at least this.")
    min_precision: float = Field(
        0.75, description="Release gate: precision at the decision threshold at least this."
    )
    min_recall: float = Field(
        0.70, description="Release gate: recall at the decision threshold at least this."
    )
    max_latency_p99_ms: float = Field(
        100.0,
        description=(
            "Release gate: p99 milliseconds to score one device from its raw readings "
            "(latency_device_p99_ms)."
        ),
    )
    max_onnx_difference: float = Field(
        1e-5, description="Release gate: largest |ONNX - native| probability on the test rows."
    )
    max_auc_regression: float = Field(
        0.01,
        ge=0,
        description=(
            "Non-inferiority margin: the lower bound of the bootstrap interval of "
            "(candidate - Production) AUC on the same test rows must be >= "
            "-max_auc_regression. 0 would ask every retrain to be significantly better "
            "(see require_better_than_champion for that)."
        ),
    )
    max_mae_hours: float = Field(
        24.0,
        gt=0,
        description=(
            "task: regression (remaining useful life): release gate on the test MAE, in hours."
        ),
    )
    max_onnx_difference_hours: float = Field(
        0.01,
        gt=0,
        description=(
            "float32 ONNX against float64 LightGBM, in hours (sums over hundreds of trees)."
        ),
    )
    max_mae_regression_hours: float = Field(
        2.0,
        ge=0,
        description=(
            "The same margin for RUL: the upper bound of the MAE difference's interval, in hours."
        ),
    )
    profile: Literal["standard", "strict"] = Field(
        "standard",
        description=(
            "standard: the gates above. strict (classification): also AUC >= 0.85, "
            "precision at probability >= 0.7 >= 0.80, ECE < 0.10 and CV AUC std < 0.05 "
            "(needs split.cv_folds >= 2)."
        ),
    )
    max_noise_auc_drop: float | None = Field(
        0.05,
        ge=0,
        description=(
            "The candidate's AUC drop under 10 % sensor noise "
            "(robustness_noise_10pct_auc_drop): a model must not hang on a sensor's last "
            "decimals. null: not gated."
        ),
    )
    max_dead_sensor_auc_drop: float | None = Field(
        None,
        ge=0,
        description=(
            "The AUC drop with one sensor dead or frozen "
            "(robustness_dead_sensor_auc_drop, the worst sensor). Opt-in: when a "
            "component fails in one sensor, a model that catches it must lose AUC without "
            "that sensor; the card names the sensors the model depends on instead, and "
            "serving flags their health. null: measured and reported, not gated."
        ),
    )
    max_robustness_auc_drop: float | None = Field(
        None,
        ge=0,
        description=(
            "The worst drop of any perturbation (noise or a dead sensor); null: not gated."
        ),
    )
    min_lift_over_reference: LiftGate | None = Field(
        None,
        description=(
            "Candidate against the reference model trained beside it in the same run, "
            "e.g. {metric: average_precision, margin: 0.0}; null: reported (lift_* "
            "metrics), not gated."
        ),
    )
    require_better_than_champion: bool = Field(
        False,
        description=(
            "The champion gate passes when the bootstrap interval's lower bound of "
            "(candidate - champion) AUC is >= -max_auc_regression; this asks for a lower "
            "bound > 0 (a significant improvement)."
        ),
    )
    require: dict[str, str] = Field(
        {},
        description=(
            'Any metric the evaluate run logs, gated by name: {lead_time_median_hours: ">= 6"}.'
        ),
    )


class EvaluationConfig(_Strict):
    robustness: bool = Field(
        True,
        description=(
            "Score the candidate again with sensor noise and with each continuous sensor dead."
        ),
    )
    noise_levels: list[float] = Field(
        [0.05, 0.10],
        min_length=1,
        description="Gaussian noise levels, as fractions of each sensor's standard deviation.",
    )
    bootstrap_resamples: int = Field(
        1000, ge=1000, description="Paired device-block bootstrap of the champion comparison."
    )
    shap_rows: int = Field(
        2000,
        ge=10,
        description="Test rows SHAP explains (a seeded sample when the test set is larger).",
    )
    latency_batch_devices: int = Field(
        1000,
        ge=1,
        description="The serving latency's batch: one score_telemetry call for this many devices.",
    )
    seed: int = Field(0, description="Seed of the noise, the SHAP sample and the bootstrap.")


class MonitoringConfig(_Strict):
    """`pdmflow monitor`: drift of the newest data against the Production model's training rows
    and, where labels have arrived since the release, the Production model's recent accuracy."""

    window_days: float = Field(
        7.0,
        gt=0,
        description="The newest data window: the last window_days of readings in the source.",
    )
    max_psi: float = Field(
        0.25,
        gt=0,
        description=(
            "Retrain early when the population stability index of any raw sensor or top "
            "feature passes this (0.1: a small shift, 0.25: a large one, the usual "
            "reading of PSI)."
        ),
    )
    min_recent_auc: float = Field(
        0.75,
        gt=0,
        le=1,
        description=(
            "Retrain early when the Production model's AUC on rows labelled since its "
            "release falls below this."
        ),
    )
    top_features: int = Field(
        10, ge=0, description="Model features (by importance) checked besides the raw sensors."
    )
    psi_bins: int = Field(
        10,
        ge=2,
        le=100,
        description="Quantile bins of the training distribution the PSI is computed on.",
    )


class ScheduleConfig(_Strict):
    """When the scheduler (scheduler.py) retrains and monitors this tenant."""

    cadence: Literal["daily", "weekly"] = Field(
        "daily", description="How often the tenant retrains: daily or weekly."
    )
    at: str = Field(
        "02:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Retrain time, HH:MM in `timezone`.",
    )
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = (
        Field("monday", description="weekly: the day of the week.")
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of `at` and `monitor_at` (e.g. UTC, Europe/Berlin)."
    )
    monitor_at: str | None = Field(
        "01:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description=(
            "`pdmflow monitor` runs daily at this time; a drift or accuracy drop past "
            "monitoring.* retrains at once. null: no monitoring."
        ),
    )
    catch_up_hours: float = Field(
        168.0,
        ge=0,
        description=(
            "A scheduled retrain missed while the scheduler was down runs once when it "
            "starts, if it was due less than this many hours ago (older ones are skipped, "
            "said in the log)."
        ),
    )

    @model_validator(mode="after")
    def _known_timezone(self) -> ScheduleConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule.timezone '{self.timezone}' is not an IANA time zone "
                "(e.g. UTC, Europe/Berlin)"
            ) from None
        return self


class TrackingConfig(_Strict):
    """The tenant's account on an authenticated tracking server (`mlflow server --app-name
    basic-auth`) and how long to wait for the server. The password is read from the environment
    variable named here, never from this file, and never logged."""

    username: str | None = Field(
        None,
        description=(
            "The tenant's account on an authenticated tracking server (used only against "
            "an http(s):// tracking URI)."
        ),
    )
    password_env: str = Field(
        "PDMFLOW_TRACKING_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Environment variable holding the account's password (never this file, never logged)."
        ),
    )
    max_wait_seconds: float = Field(
        300,
        ge=0,
        description=(
            "How long a step waits for an unreachable tracking server (retrying, one line "
            "per retry) before it gives up with exit status 4."
        ),
    )


class DataConfig(_Strict):
    min_rows: int = Field(
        1000, ge=1, description="Fewer rows than this is an error ('too little data')."
    )
    max_out_of_range_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "More than this share of a device's readings outside schema.value_ranges is "
            "an error naming the device and column."
        ),
    )


class TenantConfig(_Strict):
    # The file load_config read and its text as written (None when built in code): promote
    # keeps the text with every registered version, so `pdmflow reproduce` can read it back.
    _source_path: str | None = PrivateAttr(None)
    _source_text: str | None = PrivateAttr(None)
    tenant_id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Lower-case id of the tenant (organisation)."
    )
    task: Literal["classification", "regression"] = Field(
        "classification",
        description=(
            "classification: fails within the horizon (default); regression: remaining useful life."
        ),
    )
    experiment_name: str = Field(description="MLflow experiment for every run of this tenant.")
    registered_model_name: str = Field(
        description="Registered model this tenant's versions are released under."
    )
    source: SourceConfig = Field(
        SourceConfig(), description="Where telemetry and failure events come from."
    )
    schema_: SchemaConfig = Field(
        alias="schema", description="How the tenant's columns map onto pdmflow's names."
    )
    labels: LabelConfig = Field(
        LabelConfig(),
        description="How labels are derived (horizon, target column, remaining useful life).",
    )
    features: FeatureConfig = Field(
        FeatureConfig(),
        description="Feature families built per device from its own past, and feature selection.",
    )
    split: SplitConfig = Field(
        SplitConfig(),
        description="How rows are split into train, validation and test, and the CV folds.",
    )
    training: TrainingConfig = Field(
        TrainingConfig(),
        description="The released model: family, parameters, calibration, threshold.",
    )
    tuning: TuningConfig = Field(
        TuningConfig(), description="The Optuna study: budget, storage, search choices."
    )
    gates: GateConfig = Field(
        GateConfig(),
        description="Release gates promote checks before a version goes to Production.",
    )
    evaluation: EvaluationConfig = Field(
        EvaluationConfig(),
        description=(
            "What evaluate computes besides the metrics: robustness, bootstrap, SHAP, latency."
        ),
    )
    data: DataConfig = Field(DataConfig(), description="Data rules ingest enforces.")
    monitoring: MonitoringConfig = Field(
        MonitoringConfig(), description="`pdmflow monitor`: drift and recent accuracy checks."
    )
    schedule: ScheduleConfig = Field(
        ScheduleConfig(),
        description="When the scheduler (scheduler.py) retrains and monitors this tenant.",
    )
    tracking: TrackingConfig = Field(
        TrackingConfig(),
        description=(
            "The tenant's account on an authenticated tracking server and how long to wait for it."
        ),
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _task_has_its_labels(self) -> TenantConfig:
        if self.task == "regression" and self.labels.target_column:
            raise ValueError(
                "task regression (remaining useful life) derives its label from failure "
                "events; labels.target_column is for classification"
            )
        return self

    @model_validator(mode="after")
    def _refit_with_folds(self) -> TenantConfig:
        if not self.training.refit and self.split.cv_folds:
            raise ValueError(
                "training.refit: false keeps the model fitted on the train rows, which exists "
                "only with one validation split: set split.cv_folds: 0 as well"
            )
        return self

    @model_validator(mode="after")
    def _feature_sensors_exist(self) -> TenantConfig:
        continuous = set(self.schema_.continuous_sensors)
        named = [
            *self.features.spectral_sensors,
            *(s for pair in self.features.interactions for s in pair),
        ]
        unknown = [s for s in named if s not in continuous]
        maintenance = self.features.maintenance_sensor
        if maintenance and maintenance not in self.schema_.boolean_sensors:
            raise ValueError(
                f"features.maintenance_sensor '{maintenance}' is not in schema.boolean_sensors"
            )
        if unknown:
            raise ValueError(
                f"features name sensor '{unknown[0]}', which is not in schema.continuous_sensors"
            )
        return self

    @model_validator(mode="after")
    def _gates_measurable(self) -> TenantConfig:
        gates = self.gates
        if gates.profile == "strict":
            if self.task != "classification":
                raise ValueError(
                    "gates.profile strict is for task classification; for remaining useful "
                    "life gate gates.max_mae_hours or gates.require"
                )
            if self.split.cv_folds < 2:
                raise ValueError(
                    "gates.profile strict gates the CV AUC spread: set split.cv_folds to 2 or more"
                )
        if self.task == "classification":
            for key in (
                "max_noise_auc_drop",
                "max_dead_sensor_auc_drop",
                "max_robustness_auc_drop",
            ):
                if getattr(gates, key) is None:
                    continue
                if not self.evaluation.robustness:
                    raise ValueError(
                        f"gates.{key} needs evaluation.robustness: true (or set the gate to null)"
                    )
                if key == "max_noise_auc_drop" and 0.10 not in self.evaluation.noise_levels:
                    raise ValueError(
                        "gates.max_noise_auc_drop gates 10 % noise: add 0.1 to "
                        "evaluation.noise_levels (or set the gate to null)"
                    )
        lift = gates.min_lift_over_reference
        if lift is not None and lift.metric not in LIFT_METRICS[self.task]:
            raise ValueError(
                f"gates.min_lift_over_reference.metric: '{lift.metric}' is not compared with "
                f"the reference for task {self.task} (expected one of "
                f"{', '.join(LIFT_METRICS[self.task])})"
            )
        objective = self.tuning.objective
        if objective is not None and objective not in TUNING_OBJECTIVES[self.task]:
            raise ValueError(
                f"tuning.objective: '{objective}' is not an objective of task {self.task} "
                f"(expected one of {', '.join(TUNING_OBJECTIVES[self.task])})"
            )
        rule = self.training.threshold.rule
        if rule == "meet_gates" and self.task != "classification":
            raise ValueError("training.threshold.rule meet_gates is for task classification")
        for metric, rule in gates.require.items():
            if not GATE_RULE.fullmatch(rule):
                raise ValueError(
                    f"gates.require.{metric}: expected a comparison such as '>= 0.8' or "
                    f"'< 0.1', got {rule!r}"
                )
            if metric.startswith("champion_") or metric.startswith("candidate_"):
                raise ValueError(
                    f"gates.require.{metric}: the champion comparison is gated by "
                    "gates.max_auc_regression / max_mae_regression_hours and "
                    "require_better_than_champion (no champion exists on a first release)"
                )
            if "noise_10pct" in metric and 0.10 not in self.evaluation.noise_levels:
                raise ValueError(f"gates.require.{metric}: needs 0.1 in evaluation.noise_levels")
        known = evaluate_metric_names(
            self.task,
            robustness=self.evaluation.robustness,
            champion=False,
            cv=self.split.cv_folds >= 2,
        )
        unknown = sorted(set(gates.require) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else f"e.g. {', '.join(sorted(known)[:6])}, ...; docs/data-scientist.md lists them"
            )
            raise ValueError(
                f"gates.require.{unknown[0]}: no evaluate metric of that name for task "
                f"{self.task} with this config ({hint}; cv_* need split.cv_folds >= 2, "
                "robustness_* evaluation.robustness)"
            )
        return self

    @property
    def sensors(self) -> list[str]:
        return [*self.schema_.continuous_sensors, *self.schema_.boolean_sensors]


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"] if part != "schema_") or "<top level>"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    if error["type"] == "value_error" and key == "<top level>":
        # A check across keys: its message names them, the input is the whole file.
        return str(error["ctx"]["error"])
    return f"key '{key}': {error['msg']} (got {error.get('input')!r})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last silently: a second `gates:` block would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> TenantConfig:
    """Read and validate a tenant YAML file; raise ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path}: file not found")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping of keys at the top level")
    try:
        config = TenantConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"config {path}: {problems}") from None
    config._source_path = str(path)
    config._source_text = text
    return config


def database_password() -> str | None:
    """The database password from the environment, so it never sits in a config file."""
    return os.environ.get("PDMFLOW_DB_PASSWORD")


FAULT_KILL_ENV = "PDMFLOW_FAULT_KILL_AT"


def fault_kill_point() -> str | None:
    """Test-only: the registry call before which promote SIGKILLs itself ($PDMFLOW_FAULT_KILL_AT).

    The one place the fault-injection hook is read; unset (always, outside tests/faults/) it is
    None and nothing happens.
    """
    return os.environ.get(FAULT_KILL_ENV) or None
