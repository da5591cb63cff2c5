"""tune: an Optuna TPE study over the model families' parameters, scored on the same folds
(or the one validation split) that train uses, with early stopping and pruning between folds."""

from __future__ import annotations

import json
import warnings
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
from optuna.visualization.matplotlib import plot_optimization_history
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.artifacts import label_column, latest_input, read_features
from pdmflow.config import TenantConfig
from pdmflow.features.selection import learning_set
from pdmflow.models.training import fold_predictions
from pdmflow.tracking import step_run

# What each task optimises on the validation rows: (metric name, direction).
OBJECTIVES = {
    "classification": ("validation_auc", "maximize"),
    "regression": ("validation_mae", "minimize"),
}


def search_space(trial: optuna.Trial, family: str) -> dict[str, Any]:
    """The brief's parameters per family, in the estimators' scikit-learn names."""
    if family == "random_forest":
        return {
            "n_estimators": trial.suggest_int("rf_n_estimators", 100, 400, log=True),
            "max_depth": trial.suggest_int("rf_max_depth", 4, 24),
            "min_samples_leaf": trial.suggest_int("rf_min_samples_leaf", 1, 50, log=True),
            "max_features": trial.suggest_float("rf_max_features", 0.05, 0.5, log=True),
        }
    return {
        # A ceiling: every fit stops early on its validation rows.
        "n_estimators": trial.suggest_int("n_estimators", 200, 2000, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "colsample_bytree": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "subsample": trial.suggest_float("bagging_fraction", 0.4, 1.0),
        "subsample_freq": 1,
        "min_child_samples": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
        "reg_alpha": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "reg_lambda": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "max_depth": trial.suggest_int("max_depth", 3, 12),
    }


def _families(config: TenantConfig) -> list[str]:
    return list(config.tuning.families) or [config.training.family]


def _choose_family(trial: optuna.Trial, families: list[str]) -> str:
    if len(families) == 1:
        return families[0]
    return str(trial.suggest_categorical("family", families))


def run_tune(
    config: TenantConfig,
    features_uri: str = "latest",
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
) -> str:
    """Run the study; return the tune run id (its best_params.json is what train reads)."""
    features_uri = latest_input(config, "features", features_uri)
    n_trials = n_trials or config.tuning.n_trials
    timeout_seconds = timeout_seconds or config.tuning.timeout_seconds
    tables, spec = read_features(features_uri)
    label = label_column(config)
    learning = learning_set(tables, spec, label, config)
    selection, folds = learning.selection, learning.folds
    X, y = learning.rows[selection.kept], learning.rows[label].to_numpy(dtype=float)
    metric, direction = OBJECTIVES[config.task]
    families = _families(config)

    def score(y_true: np.ndarray, predicted: np.ndarray) -> float:
        if config.task == "classification":
            return float(roc_auc_score(y_true.astype(int), predicted))
        return float(mean_absolute_error(y_true, predicted))

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
                "split_by": config.split.by,
                "families": ",".join(families),
                "features_selected": len(selection.kept),
            }
        )

        def objective(trial: optuna.Trial) -> float:
            family = _choose_family(trial, families)
            params = search_space(trial, family)

            def after_fold(k: int, scores: list[float]) -> None:
                # A trial whose running mean trails the others' stops between folds.
                trial.report(float(np.mean(scores)), k)
                if k < len(folds) - 1 and trial.should_prune():
                    raise optuna.TrialPruned()

            # Each trial is a nested run; a pruned one finishes normally, tagged as pruned.
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(trial.params)
                try:
                    result = fold_predictions(
                        family, config.task, X, y, folds, params, config, score, after_fold
                    )
                except optuna.TrialPruned as pruned:
                    mlflow.set_tag("optuna.trial_state", "PRUNED")
                    stopped: optuna.TrialPruned | None = pruned
                else:
                    stopped = None
                    value = float(np.mean(result.scores))
                    mlflow.log_metric(metric, value)
                    if len(folds) > 1:
                        mlflow.log_metrics(
                            {
                                f"cv_{metric}_mean": value,
                                f"cv_{metric}_std": float(np.std(result.scores)),
                            }
                        )
                    trial.set_user_attr("cv_std", float(np.std(result.scores)))
                    if result.best_iterations:
                        trial.set_user_attr(
                            "best_iteration", int(np.median(result.best_iterations))
                        )
                    mlflow.set_tag("optuna.trial_state", "COMPLETE")
            if stopped is not None:
                raise stopped
            return value

        study = optuna.create_study(
            study_name=f"{config.tenant_id}-{run.info.run_id}",
            storage=config.tuning.storage,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=config.training.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        )
        study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds)

        fixed = optuna.trial.FixedTrial(study.best_params)
        family = _choose_family(fixed, families)
        best = {"family": family, "params": search_space(fixed, family)}
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_param("best_family", family)
        states = [t.state for t in study.trials]
        best_attrs = study.best_trial.user_attrs
        mlflow.log_metrics(
            {
                f"best_{metric}": study.best_value,
                **({"best_cv_std": best_attrs["cv_std"]} if len(folds) > 1 else {}),
                **(
                    {"best_iteration": best_attrs["best_iteration"]}
                    if "best_iteration" in best_attrs
                    else {}
                ),
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
    """{"family": ..., "params": {...}} chosen by a tune run."""
    best = json.loads(mlflow.artifacts.load_text(f"runs:/{tune_run_id}/best_params.json"))
    if "family" not in best:  # written before families existed: LightGBM parameters
        best = {"family": "lightgbm", "params": best}
    return best
