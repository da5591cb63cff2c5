"""One tenant's whole config: every section, and the checks that span several."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from pdmflow.config.base import GATE_RULE, _Strict
from pdmflow.config.data import DataConfig, LabelConfig, SchemaConfig, SourceConfig
from pdmflow.config.engine import EngineConfig, StorageConfig
from pdmflow.config.evaluation import EvaluationConfig, GateConfig, MonitoringConfig
from pdmflow.config.features import FeatureConfig, SplitConfig
from pdmflow.config.operations import RegistryConfig, ScheduleConfig, TrackingConfig
from pdmflow.config.training import TrainingConfig, TuningConfig
from pdmflow.evaluation.catalog import LIFT_METRICS, TUNING_OBJECTIVES, evaluate_metric_names


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

    registry: RegistryConfig = Field(
        RegistryConfig(),
        description="How releases are recorded in the model registry: stages or aliases.",
    )
    engine: EngineConfig = Field(
        EngineConfig(),
        description="Where per-device work runs: in this process (local) or on a Dask cluster.",
    )
    storage: StorageConfig = Field(
        StorageConfig(),
        description=(
            "Where step outputs that are data live: the run's artifacts, or a directory or "
            "bucket for fleets too large to copy into the artifact store."
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
    def _sampled_training_without_anomaly(self) -> TenantConfig:
        if self.training.max_rows is not None and self.features.anomaly_score:
            raise ValueError(
                "training.max_rows: the anomaly-score feature is fitted and cross-fitted on "
                "the rows in memory, so it cannot be given to a final fit on every learning "
                "row; set features.anomaly_score: false or training.max_rows: null"
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
