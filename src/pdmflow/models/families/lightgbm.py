"""LightGBM behind the family protocol: early stopping, prebuilt fold bins, its search space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import onnx
import pandas as pd

from pdmflow.config import TrainingConfig
from pdmflow.models import lightgbm
from pdmflow.models.families.base import Folds, ModelFamily

if TYPE_CHECKING:
    import optuna

    from pdmflow.engine.dask_engine import DaskEngine


class LightGBMFamily(ModelFamily):
    name = "lightgbm"
    prefix = "lgbm"
    explainer_file = "explainer_estimator.txt"
    fits_on_cluster = True

    def config_params(self, training: TrainingConfig) -> dict[str, Any]:
        return dict(training.params)

    def logged_params(self, params: dict[str, Any], training: TrainingConfig) -> dict[str, Any]:
        logged = super().logged_params(params, training)
        if "max_bin" not in params:
            logged[f"{self.prefix}_max_bin"] = training.max_bin
        return logged

    def released_params(
        self, params: dict[str, Any], release_learning_rate: float | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Released at `release_learning_rate` when that is slower than the trials' rate (the
        rounds ceiling scaled to match); a tune run from before the release rate records none."""
        tuned = params.get("learning_rate")
        if release_learning_rate is None or tuned is None or release_learning_rate >= tuned:
            return params, {}
        released = lightgbm.at_learning_rate(params, release_learning_rate)
        return released, {"tuned_learning_rate": tuned}

    def fit(
        self,
        task: str,
        X: pd.DataFrame,
        y: np.ndarray,
        params: dict[str, Any],
        training: TrainingConfig,
        eval_set: tuple[pd.DataFrame, np.ndarray] | None = None,
        callbacks: list[Any] | None = None,
        early_stopping_rounds: int | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> lightgbm.LightGBMModel:
        """Stops early on `eval_set` when given, after `early_stopping_rounds` (default
        training.early_stopping_rounds) rounds without gain."""
        patience = early_stopping_rounds or training.early_stopping_rounds
        return lightgbm.fit_model(
            task,
            X,
            y,
            params,
            training.seed,
            eval_set=eval_set,
            early_stopping_rounds=patience if eval_set else None,
            rul_objective=training.rul_objective,
            callbacks=callbacks,
            max_bin=training.max_bin,
            sample_weight=sample_weight,
        )

    def fit_on_cluster(
        self,
        engine: DaskEngine,
        task: str,
        X: pd.DataFrame,
        y: np.ndarray,
        devices: pd.Series,
        params: dict[str, Any],
        training: TrainingConfig,
        partition_rows: int,
        sample_weight: np.ndarray | None = None,
    ) -> lightgbm.LightGBMModel:
        """lightgbm.dask's data-parallel training on the workers (models/lightgbm_dask.py)."""
        from pdmflow.models import lightgbm_dask  # Dask's import only where a cluster is used

        return lightgbm_dask.fit_dask_model(
            engine,
            task,
            X,
            y,
            devices,
            params,
            training.seed,
            partition_rows,
            rul_objective=training.rul_objective,
            max_bin=training.max_bin,
            sample_weight=sample_weight,
        )

    def fit_loaded_on_cluster(
        self,
        engine: DaskEngine,
        task: str,
        load: Callable[[Any], tuple[pd.DataFrame, pd.Series, pd.Series | None]],
        items: list[Any],
        feature_names: list[str],
        params: dict[str, Any],
        training: TrainingConfig,
        weighted: bool = False,
    ) -> lightgbm.LightGBMModel:
        from pdmflow.models import lightgbm_dask

        return lightgbm_dask.fit_dask_loaded(
            engine,
            task,
            load,
            items,
            feature_names,
            params,
            training.seed,
            rul_objective=training.rul_objective,
            max_bin=training.max_bin,
            weighted=weighted,
        )

    def fold_datasets(
        self,
        task: str,
        X: pd.DataFrame,
        y: np.ndarray,
        folds: Folds,
        seed: int,
        max_bin: int | None,
    ) -> list[lightgbm.FoldData]:
        return lightgbm.fold_data(task, X, y, folds, seed, max_bin)

    def fit_fold(
        self,
        task: str,
        data: lightgbm.FoldData,
        params: dict[str, Any],
        training: TrainingConfig,
        early_stopping_rounds: int,
        callbacks: list[Any] | None = None,
    ) -> tuple[lgb.Booster, np.ndarray, int]:
        """The same trees as `fit` with the bins they were built with, as a booster."""
        booster = lightgbm.fit_booster(
            task,
            data,
            params,
            training.seed,
            early_stopping_rounds,
            training.rul_objective,
            callbacks,
        )
        predicted = lightgbm.booster_predict(booster, data.valid_X)
        return booster, predicted, lightgbm.booster_trees(booster)

    def predict(self, model: Any, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(lightgbm.native_predict(model, X), dtype=np.float64)

    def tree_count(self, model: Any) -> int:
        return lightgbm.tree_count(model)

    def to_onnx(self, model: Any, n_features: int) -> onnx.ModelProto:
        return lightgbm.to_onnx(model, n_features)

    def search_space(self, trial: optuna.Trial, learning_rate: float | None) -> dict[str, Any]:
        """Trials boost at `learning_rate` and search the trees' shape and regularisation, as
        Optuna's own LightGBM tuner does: the rate sets a trial's cost (rounds to converge)
        more than its score. None searches the rate too (0.01 to 0.3)."""
        return {
            # A ceiling: every fit stops early on its validation rows.
            "n_estimators": trial.suggest_int("n_estimators", 200, 2000, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
            "learning_rate": (
                learning_rate
                if learning_rate is not None
                else trial.suggest_float("learning_rate", 0.01, 0.3, log=True)
            ),
            "colsample_bytree": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "subsample": trial.suggest_float("bagging_fraction", 0.4, 1.0),
            "subsample_freq": 1,
            "min_child_samples": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
            "reg_alpha": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
            "reg_lambda": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
            "max_depth": trial.suggest_int("max_depth", 3, 12),
        }

    def read_only(
        self, params: dict[str, Any], X: pd.DataFrame, columns: set[str]
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        # The prebuilt bins hold every column: a column outside the trial's groups gets no
        # split gain (LightGBM's feature_contri), so it is never used.
        params["feature_contri"] = [float(c in columns) for c in X.columns]
        return params, X

    def owns(self, estimator: Any) -> bool:
        return isinstance(estimator, lightgbm.LightGBMModel | lgb.Booster)

    def explained_estimator(self, estimator: Any) -> lgb.Booster:
        """A booster cut to the trees the model predicts with (`tree_count`, as the ONNX export
        is): `shap.TreeExplainer` uses every tree of a booster, also any boosted past the best
        iteration, which neither the native model nor the ONNX graph uses."""
        if isinstance(estimator, lgb.Booster):
            return estimator
        text = estimator.booster_.model_to_string(num_iteration=lightgbm.tree_count(estimator))
        return lgb.Booster(model_str=text)

    def margin_name(self, task: str) -> str:
        if task == "classification":
            return "log-odds of failure (LightGBM raw score, before calibration)"
        return "remaining useful life (hours)"

    def margin(self, explained: Any, values: pd.DataFrame) -> np.ndarray:
        return np.asarray(explained.predict(values, raw_score=True), dtype=np.float64)

    def importance(self, explained: Any) -> tuple[np.ndarray, str]:
        return (
            explained.feature_importance(importance_type="gain"),
            "LightGBM gain (total loss reduction of its splits)",
        )

    def save_explained(self, explained: Any, path: Path) -> None:
        path.write_text(explained.model_to_string())

    def load_explained(self, path: Path) -> lgb.Booster:
        return lgb.Booster(model_str=path.read_text())
