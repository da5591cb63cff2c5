"""How the model is fitted and tuned: training (with its threshold rule), tuning."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pdmflow.config.base import _Strict


class ThresholdConfig(_Strict):
    """How the decision threshold is chosen on out-of-fold (or validation) predictions."""

    # meet_gates: the most recall whose precision reaches gates.min_precision plus
    # `precision_margin` (the validation-to-test gap), else the F1 threshold, with a warning.
    rule: Literal["f1", "precision_at_least", "recall_at_least", "cost", "meet_gates"] = "f1"
    precision_margin: float = Field(0.05, ge=0, lt=1)
    precision: float | None = Field(None, gt=0, le=1)
    recall: float | None = Field(None, gt=0, le=1)
    missed_failure_cost: float | None = Field(None, gt=0)
    false_alarm_cost: float | None = Field(None, gt=0)

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
    # lightgbm (default) or random_forest; tuning.families lets Optuna choose instead.
    family: Literal["lightgbm", "random_forest"] = "lightgbm"
    # LightGBM parameters (scikit-learn names); n_estimators is a ceiling (early stopping).
    params: dict[str, Any] = {
        "n_estimators": 1000,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "colsample_bytree": 0.8,
        "subsample": 0.8,
        "subsample_freq": 1,
    }
    # Random Forest parameters (scikit-learn names), for family random_forest.
    random_forest_params: dict[str, Any] = {}
    # LightGBM's histogram bins per feature (its max_bin) in feature selection and the
    # released model's fits; tuning.max_bin is the trials'.
    max_bin: int = Field(255, ge=2)
    # Boosting stops when the validation metric has not improved for this many rounds;
    # params.n_estimators is the ceiling.
    early_stopping_rounds: int = Field(50, ge=1)
    # The released model is refitted on train + validation with the early-stopped number of
    # rounds (scaled by the rows it sees); false: the model fitted on the train rows is kept.
    refit: bool = True
    # Calibration of probabilities, fitted on out-of-fold (or validation) predictions.
    # sigmoid keeps the ranking (AUC) exactly; isotonic bends freely but needs more positives.
    calibration: Literal["none", "sigmoid", "isotonic"] = "sigmoid"
    # A fixed decision threshold; null: chosen by `threshold.rule`.
    decision_threshold: float | None = Field(None, gt=0, lt=1)
    threshold: ThresholdConfig = ThresholdConfig()
    # task: regression: LightGBM objective for remaining useful life. l2 weighs the large
    # (late) errors that RMSE and the NASA score punish; l1 aims at the median (lowest MAE).
    rul_objective: Literal["l2", "huber", "l1"] = "l2"
    seed: int = 42


class TuningConfig(_Strict):
    n_trials: int = Field(20, ge=1)
    timeout_seconds: float = Field(600, gt=0)
    # Optuna storage URL (e.g. postgresql://...) to share a study between workers; null = memory.
    storage: str | None = None
    # Model families Optuna chooses among; empty: training.family only.
    families: list[Literal["lightgbm", "random_forest"]] = []
    # LightGBM's learning rate in every trial; the study searches the trees' shape and
    # regularisation. null: the rate is searched too (0.01-0.3), and trials at low rates take
    # many times longer (README "Training").
    learning_rate: float | None = Field(0.1, gt=0, le=1)
    # train fits the study's best LightGBM parameters at this slower rate, its rounds ceiling
    # scaled up to match (early stopping picks the rounds); null: released at the tuned rate.
    release_learning_rate: float | None = Field(0.025, gt=0, le=1)
    # Trials fit and score at most this many learning rows, drawn at random (each fold keeps
    # its share); train still fits on all of them. null: every row.
    max_rows: int | None = Field(50_000, ge=1000)
    # Trials stop after this many rounds without gain on a fold's validation rows: a round at
    # tuning.learning_rate learns more than one at the release rate, so less patience does.
    # null: training.early_stopping_rounds.
    early_stopping_rounds: int | None = Field(20, ge=1)
    # LightGBM's histogram bins per feature in the trials. A round scans every bin of each
    # leaf, so fewer bins make trials cheaper (a 64-leaf round 38 % at 63 bins); the release
    # keeps training.max_bin, which finds thresholds a process log needs (README "Training").
    # null: training.max_bin.
    max_bin: int | None = Field(63, ge=2)
    # What trials optimise on their validation rows. Classification: average_precision
    # (rare failures: it rewards ranking the few failing rows first, where AUC is already
    # near 1 for every trial), auc or log_loss; regression: mae or rmse. null: the task's first.
    objective: Literal["average_precision", "auc", "log_loss", "mae", "rmse"] | None = None
    # Trials also choose which feature groups the model reads (raw values always; lags,
    # short/long rolling mean and std, rolling shape, differences, interactions, cross-sensor,
    # spectral, cyclical, time since an event ...). The reference model's recipe and the
    # full feature set are the first two trials, so the tuned model is never behind them on
    # the objective.
    feature_groups: bool = True
