"""How a candidate is judged and watched: gates, evaluation, monitoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pdmflow.config.base import _Strict


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
    diagnostic_rows: int | None = Field(
        250_000,
        ge=1000,
        description=(
            "The robustness, champion, SHAP and latency checks read the test rows of a seeded "
            "sample of whole test devices holding at most this many rows (and those devices' "
            "readings); every test row is still scored for the test metrics. null: every test "
            "device."
        ),
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
