"""tune: an Optuna TPE study over LightGBM parameters maximising validation AUC, with pruning."""

from __future__ import annotations

import json
import warnings
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
import pandas as pd
from optuna.visualization.matplotlib import plot_optimization_history
from optuna_integration import LightGBMPruningCallback
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.config import TenantConfig
from pdmflow.features.split import time_folds
from pdmflow.models.lightgbm_onnx import fit_model, native_predict
from pdmflow.steps.features import label_column, read_features
from pdmflow.tracking import latest_step_run, step_run

# What each task optimises on the validation period: (metric name, direction, LightGBM metric).
OBJECTIVES = {
    "classification": ("validation_auc", "maximize", "auc"),
    "regression": ("validation_mae", "minimize", "l1"),
}


def search_space(trial: optuna.Trial, task: str) -> dict[str, Any]:
    """The brief's LightGBM parameters, in LightGBM's scikit-learn names."""
    return {
        "n_estimators": 300,
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "colsample_bytree": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "subsample": trial.suggest_float("bagging_fraction", 0.4, 1.0),
        "subsample_freq": 1,
        "min_child_samples": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
        "reg_alpha": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "reg_lambda": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "max_depth": trial.suggest_int("max_depth", 3, 12),
        **({"is_unbalance": True} if task == "classification" else {}),
    }


def run_tune(
    config: TenantConfig,
    features_uri: str = "latest",
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
) -> str:
    """Run the study; return the tune run id (its best_params.json is what train reads)."""
    if features_uri == "latest":
        features_uri = f"runs:/{latest_step_run(config, 'features').info.run_id}/features"
    n_trials = n_trials or config.tuning.n_trials
    timeout_seconds = timeout_seconds or config.tuning.timeout_seconds
    tables, spec = read_features(features_uri)
    train, validation = tables["train"], tables["validation"]
    label = label_column(config)
    X_train, y_train = train[spec.feature_names], train[label]
    X_valid, y_valid = validation[spec.feature_names], validation[label]
    metric, direction, lightgbm_metric = OBJECTIVES[config.task]
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    if config.split.cv_folds:
        both = pd.concat([train, validation]).sort_values(spec.time_column, kind="stable")
        X_all, y_all = both[spec.feature_names], both[label]
        lookahead = (
            config.labels.horizon_hours
            if config.task == "classification"
            else config.labels.rul_cap_hours
        )
        folds = time_folds(
            both[spec.time_column].reset_index(drop=True),
            config.split.cv_folds,
            pd.Timedelta(hours=lookahead),
        )

    with step_run(config, "tune") as run:
        mlflow.log_params(
            {
                "features_uri": features_uri,
                "n_trials": n_trials,
                "timeout_seconds": timeout_seconds,
                "sampler": "TPE",
                "pruner": "MedianPruner",
                "objective": f"{direction} {metric}",
                "cv_folds": config.split.cv_folds,
            }
        )

        def score(model: object, X: pd.DataFrame, y: pd.Series) -> float:
            predicted = native_predict(model, X)
            if config.task == "classification":
                return float(roc_auc_score(y, predicted))
            return float(mean_absolute_error(y, predicted))

        def fit(params: dict[str, Any], X: pd.DataFrame, y: pd.Series, **kwargs: Any) -> object:
            return fit_model(config.task, X, y, params, config.training.seed, **kwargs)

        def single_split(trial: optuna.Trial, params: dict[str, Any]) -> float:
            # LightGBM reports the validation metric every iteration; hopeless trials stop early.
            model = fit(
                params,
                X_train,
                y_train,
                eval_X=X_valid.astype("float32"),
                eval_y=y_valid.astype(int if config.task == "classification" else float),
                eval_metric=lightgbm_metric,
                callbacks=[LightGBMPruningCallback(trial, lightgbm_metric)],
            )
            return score(model, X_valid, y_valid)

        def cross_validated(trial: optuna.Trial, params: dict[str, Any]) -> float:
            # Each fold trains on the past and validates on the next period; a trial whose
            # running mean trails the others' is pruned between folds.
            scores: list[float] = []
            for step, (train_rows, valid_rows) in enumerate(folds):
                model = fit(params, X_all.iloc[train_rows], y_all.iloc[train_rows])
                scores.append(score(model, X_all.iloc[valid_rows], y_all.iloc[valid_rows]))
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            mlflow.log_metrics(
                {
                    f"cv_{metric}_std": float(np.std(scores)),
                    f"cv_{metric}_mean": float(np.mean(scores)),
                }
            )
            trial.set_user_attr("cv_std", float(np.std(scores)))
            return float(np.mean(scores))

        def objective(trial: optuna.Trial) -> float:
            params = search_space(trial, config.task)
            # Each trial is a nested run; a pruned one finishes normally, tagged as pruned.
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(trial.params)
                try:
                    value = (cross_validated if folds else single_split)(trial, params)
                except optuna.TrialPruned as pruned:
                    mlflow.set_tag("optuna.trial_state", "PRUNED")
                    stopped: optuna.TrialPruned | None = pruned
                else:
                    stopped = None
                    mlflow.log_metric(metric, value)
                    mlflow.set_tag("optuna.trial_state", "COMPLETE")
            if stopped is not None:
                raise stopped
            return value

        study = optuna.create_study(
            study_name=f"{config.tenant_id}-{run.info.run_id}",
            storage=config.tuning.storage,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=config.training.seed),
            # Steps are boosting rounds on one split, folds under cross-validation.
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=5, n_warmup_steps=1 if folds else 20
            ),
        )
        study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds)

        best = search_space(optuna.trial.FixedTrial(study.best_params), config.task)
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        states = [t.state for t in study.trials]
        mlflow.log_metrics(
            {
                f"best_{metric}": study.best_value,
                **({"best_cv_std": study.best_trial.user_attrs["cv_std"]} if folds else {}),
                "trials_complete": states.count(optuna.trial.TrialState.COMPLETE),
                "trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
            }
        )
        mlflow.log_text(json.dumps(best, indent=2), "best_params.json")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = plot_optimization_history(study)
        mlflow.log_figure(axes.figure, "optimization_history.png")
        plt.close(axes.figure)
        return run.info.run_id


def read_best_params(tune_run_id: str) -> dict[str, Any]:
    return json.loads(mlflow.artifacts.load_text(f"runs:/{tune_run_id}/best_params.json"))
