"""scikit-learn's Random Forest behind the family protocol: no early stopping, its search space."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import onnx
import pandas as pd

from pdmflow.config import TrainingConfig
from pdmflow.models import random_forest
from pdmflow.models.families.base import ModelFamily

if TYPE_CHECKING:
    import optuna


class RandomForestFamily(ModelFamily):
    """No early stopping, no prepared fold data, no learning rate: the base verbs serve."""

    name = "random_forest"
    prefix = "rf"
    explainer_file = "explainer_estimator.joblib"

    def config_params(self, training: TrainingConfig) -> dict[str, Any]:
        return dict(training.random_forest_params)

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
    ) -> random_forest.RandomForestModel:
        """Every tree is grown: a forest does not stop early (`eval_set` is not used)."""
        return random_forest.fit(task, X, y, params, training.seed, sample_weight)

    def predict(self, model: Any, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(random_forest.predict(model, X), dtype=np.float64)

    def to_onnx(self, model: Any, n_features: int) -> onnx.ModelProto:
        return random_forest.to_onnx(model, n_features)

    def search_space(self, trial: optuna.Trial, learning_rate: float | None) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("rf_n_estimators", 100, 400, log=True),
            "max_depth": trial.suggest_int("rf_max_depth", 4, 24),
            "min_samples_leaf": trial.suggest_int("rf_min_samples_leaf", 1, 50, log=True),
            "max_features": trial.suggest_float("rf_max_features", 0.05, 0.5, log=True),
        }

    def read_only(
        self, params: dict[str, Any], X: pd.DataFrame, columns: set[str]
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        return params, X[[c for c in X.columns if c in columns]]

    def owns(self, estimator: Any) -> bool:
        return isinstance(estimator, random_forest.RandomForestModel)

    def explained_estimator(self, estimator: Any) -> random_forest.RandomForestModel:
        return estimator  # the forest itself: every tree votes

    def margin_name(self, task: str) -> str:
        if task == "classification":
            return "failure probability (Random Forest mean vote, before calibration)"
        return "remaining useful life (hours)"

    def margin(self, explained: Any, values: pd.DataFrame) -> np.ndarray:
        return np.asarray(random_forest.predict(explained, values), dtype=np.float64)

    def importance(self, explained: Any) -> tuple[np.ndarray, str]:
        return explained.feature_importances_, "mean decrease in impurity (Random Forest)"

    def save_explained(self, explained: Any, path: Path) -> None:
        # Load it with the same scikit-learn version.
        joblib.dump(explained, path, compress=3)

    def load_explained(self, path: Path) -> Any:
        return joblib.load(path)
