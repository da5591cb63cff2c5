"""How the model is fitted and tuned: training (with its threshold rule), tuning."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pdmflow.config.base import _Strict


class ThresholdConfig(_Strict):
    """How the decision threshold is chosen on out-of-fold (or validation) predictions."""

    rule: Literal["f1", "precision_at_least", "recall_at_least", "cost", "meet_gates"] = Field(
        "meet_gates",
        description=(
            "How the threshold is picked: meet_gates (default) the most recall whose precision "
            "reaches gates.min_precision plus `precision_margin` (else, or when that floor leaves "
            "under half of gates.min_recall, the F1 threshold, with a warning; with "
            "gates.min_precision 0, the F1 threshold); f1 maximises F1; "
            "precision_at_least / recall_at_least the best other side above a floor; cost "
            "the lowest total cost. A regression tenant ignores it."
        ),
    )
    precision_margin: float = Field(
        0.10,
        ge=0,
        lt=1,
        description=(
            "rule meet_gates: room added to gates.min_precision for the gap between "
            "out-of-fold and test precision (down to -0.12 on the quality bench's real fleet)."
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
    negative_sample_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "For fleets where healthy rows dominate: the fits keep each healthy learning row "
            "(label 0, or RUL at labels.rul_cap_hours) at this rate, seeded, with weight "
            "1/rate; every failure row is kept, and out-of-fold predictions (calibration, "
            "threshold) still cover every validation row. null: every row, unweighted."
        ),
    )
    max_rows: int | None = Field(
        None,
        ge=1000,
        description=(
            "For fleets whose learning rows do not fit in one process: the fold fits, "
            "calibration, threshold and the reference use at most this many learning rows, "
            "drawn at random as tuning.max_rows draws them (each fold keeps its share); the "
            "released model's final fit still reads every learning row (on the workers, with "
            "engine.kind dask and storage.uri). Not with features.anomaly_score. null: every "
            "row."
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
