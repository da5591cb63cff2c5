"""What the pipeline asks of a model family: one object per family, listed in `families/`.

Steps, tuning, evaluation and lineage hold a family object and call these verbs; none of them
asks which family it is. A family wraps its estimator module (models/lightgbm.py,
models/random_forest.py): fitting, predicting, the Optuna search space, the ONNX export and
what SHAP's tree explainer runs on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pandas as pd

from pdmflow.config import TrainingConfig
from pdmflow.models.sampling import Folds

if TYPE_CHECKING:
    import optuna

    from pdmflow.engine.dask_engine import DaskEngine


class ModelFamily(ABC):
    """A model family behind the pipeline's verbs (scikit-learn names for every parameter).

    The verbs with a body are what a family without early stopping, prepared fold data or a
    learning rate does; a family that has them overrides those too.
    """

    name: str  # as in training.family and tuning.families
    prefix: str  # of the train run's params (`<prefix>_<param>`) and of Optuna's names
    explainer_file: str  # the explained estimator's file name beside the ONNX graph
    fits_on_cluster = False  # whether `fit_on_cluster` trains one model on an engine's workers

    @abstractmethod
    def config_params(self, training: TrainingConfig) -> dict[str, Any]:
        """The family's parameters in the config (training.params or its own section)."""
        ...

    def logged_params(self, params: dict[str, Any], training: TrainingConfig) -> dict[str, Any]:
        """The train run's params for `params`: `<prefix>_<name>`, plus the settings the fit
        takes from `training` that `params` does not set."""
        return {f"{self.prefix}_{k}": v for k, v in params.items()}

    def params_from_logged(self, logged: dict[str, str]) -> dict[str, str]:
        """The family's parameters back from a train run's params (the prefix removed)."""
        start = f"{self.prefix}_"
        return {k[len(start) :]: v for k, v in logged.items() if k.startswith(start)}

    def released_params(
        self, params: dict[str, Any], release_learning_rate: float | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the tuned `params` as released, extra train params saying how they changed)."""
        return params, {}

    @abstractmethod
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
    ) -> Any:
        """One fitted estimator; a family that can stops early on `eval_set` when given.
        `sample_weight`: each row's weight in the fit (None: every row weighs 1)."""
        ...

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
    ) -> Any:
        """`fit` (no early stopping) as one model trained on the engine's workers, from
        partitions of whole devices (`devices`: each row's device) of about `partition_rows`
        rows; the estimator comes back as a local one, as `fit` returns it."""
        raise NotImplementedError(f"{self.name}: no fit on a cluster")

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
    ) -> Any:
        """`fit_on_cluster` on partitions each worker loads itself (`load(item)` -> X, y and
        the weights, or None), so the rows never pass through this process."""
        raise NotImplementedError(f"{self.name}: no fit on a cluster")

    def fold_datasets(
        self,
        task: str,
        X: pd.DataFrame,
        y: np.ndarray,
        folds: Folds,
        seed: int,
        max_bin: int | None,
    ) -> list[Any] | None:
        """Each fold's data prepared once for many fits (`fit_fold`), or None when the
        family fits the rows as they are."""
        return None

    def fit_fold(
        self,
        task: str,
        data: Any,
        params: dict[str, Any],
        training: TrainingConfig,
        early_stopping_rounds: int,
        callbacks: list[Any] | None = None,
    ) -> tuple[Any, np.ndarray, int]:
        """(model, predictions on the fold's validation rows, trees kept) from one of
        `fold_datasets`' items."""
        raise NotImplementedError(f"{self.name}: no prepared fold datasets")

    @abstractmethod
    def predict(self, model: Any, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Failure probability (or RUL hours) from the estimator itself, float64."""
        ...

    def tree_count(self, model: Any) -> int | None:
        """Trees (boosting rounds) the model predicts with after early stopping; None for a
        family that does not stop early."""
        return None

    @abstractmethod
    def to_onnx(self, model: Any, n_features: int) -> onnx.ModelProto:
        """The ONNX graph: input `features` [N, n_features] float32, one float32 output [N]."""
        ...

    @abstractmethod
    def search_space(self, trial: optuna.Trial, learning_rate: float | None) -> dict[str, Any]:
        """One Optuna trial's parameters (`learning_rate`: tuning.learning_rate)."""
        ...

    @abstractmethod
    def read_only(
        self, params: dict[str, Any], X: pd.DataFrame, columns: set[str]
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """(params, X) of a trial that may use only `columns` of X."""
        ...

    @abstractmethod
    def owns(self, estimator: Any) -> bool:
        """Whether `estimator` is one of this family's fitted models."""
        ...

    @abstractmethod
    def explained_estimator(self, estimator: Any) -> Any:
        """What SHAP's TreeExplainer runs on: the trees the model predicts with."""
        ...

    @abstractmethod
    def margin_name(self, task: str) -> str:
        """What the explained estimator's raw output (its SHAP margin) is."""
        ...

    @abstractmethod
    def margin(self, explained: Any, values: pd.DataFrame) -> np.ndarray:
        """The explained estimator's raw output, float64."""
        ...

    @abstractmethod
    def importance(self, explained: Any) -> tuple[np.ndarray, str]:
        """(the model's own importance of each input column, what that importance is)."""
        ...

    @abstractmethod
    def save_explained(self, explained: Any, path: Path) -> None: ...

    @abstractmethod
    def load_explained(self, path: Path) -> Any: ...
