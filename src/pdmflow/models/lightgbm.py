"""LightGBM for both tasks: fit with early stopping, predict, export to ONNX.

The exported graph takes one float tensor `features` [N, n_features] (columns in the feature
spec's order) and returns one float tensor [N]: `failure_probability` (classification) or
`remaining_useful_life_hours` (regression). For the classifier, onnxmltools' `label` output
(declared with a wrong static shape, which ONNX Runtime warns about) is dropped and the
positive-class column of `probabilities` is gathered into a clean vector; the regressor's
[N, 1] output is flattened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

from pdmflow.models.memory import fix_mmap_threshold
from pdmflow.models.onnx import INPUT_NAME, OUTPUT_NAMES, onnx_predict
from pdmflow.models.threads import estimator_threads

LightGBMModel = lgb.LGBMClassifier | lgb.LGBMRegressor
# Each fit's bin-sampling buffers go back to the system when freed (models/memory.py).
fix_mmap_threshold()


# training.rul_objective -> LightGBM objective for remaining useful life.
RUL_OBJECTIVES = {"l2": "regression", "huber": "huber", "l1": "regression_l1"}


def fit_model(
    task: str,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    params: dict[str, Any],
    seed: int,
    eval_set: tuple[pd.DataFrame, pd.Series | np.ndarray] | None = None,
    early_stopping_rounds: int | None = None,
    rul_objective: str = "l1",
    callbacks: list[Any] | None = None,
    max_bin: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> LightGBMModel:
    """Fit LightGBM for the task; params use LightGBM's scikit-learn names.

    With `eval_set` and `early_stopping_rounds`, boosting stops once the evaluation loss has
    not improved for that many rounds; `params["n_estimators"]` is then a ceiling and the model
    keeps its best iteration (`best_iteration_`), which predictions and the ONNX export use.
    `max_bin`: histogram bins per feature (training.max_bin; None: LightGBM's 255); a
    `max_bin` in params wins. `sample_weight`: each row's weight (None: 1 each).
    """
    # Threads: params may set n_jobs (tuning workers split the cores between them).
    params = {"n_jobs": estimator_threads(), **_bins(max_bin), **params}
    model = estimator(task, params, seed, rul_objective)
    if task == "classification":
        y = np.asarray(y).astype(int)
    callbacks = list(callbacks or [])
    fit_kwargs: dict[str, Any] = {}
    if eval_set is not None:
        eval_X, eval_y = eval_set
        eval_y = np.asarray(eval_y).astype(int if task == "classification" else float)
        fit_kwargs.update(eval_X=(eval_X.astype(np.float32, copy=False),), eval_y=(eval_y,))
        if early_stopping_rounds:
            callbacks.append(
                lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)
            )
    # Float32 features: the ONNX model computes in float32, so training sees the same values.
    model.fit(
        X.astype(np.float32, copy=False),
        y,
        sample_weight=sample_weight,
        callbacks=callbacks,
        **fit_kwargs,
    )
    return model


def estimator(
    task: str,
    params: dict[str, Any],
    seed: int,
    rul_objective: str,
    classifier: type[lgb.LGBMClassifier] = lgb.LGBMClassifier,
    regressor: type[lgb.LGBMRegressor] = lgb.LGBMRegressor,
    **settings: Any,
) -> Any:
    """The unfitted estimator of the task: `classifier` (binary) or `regressor` (the
    rul_objective's objective), with `params` (scikit-learn names) and `settings`."""
    if task == "classification":
        return classifier(objective="binary", random_state=seed, verbose=-1, **params, **settings)
    params = {k: v for k, v in params.items() if k != "is_unbalance"}  # binary-only
    return regressor(
        objective=RUL_OBJECTIVES[rul_objective],
        random_state=seed,
        verbose=-1,
        **params,
        **settings,
    )


def at_learning_rate(params: dict[str, Any], rate: float) -> dict[str, Any]:
    """`params` boosting at `rate`, the `n_estimators` ceiling scaled by how much slower
    (or faster) each round now learns; early stopping still picks the rounds."""
    rounds = round(int(params["n_estimators"]) * float(params["learning_rate"]) / rate)
    return {**params, "learning_rate": rate, "n_estimators": max(1, rounds)}


# Bins built once must serve trials with any min_data_in_leaf: no pre-filtering by it.
DATASET_PARAMS = {"feature_pre_filter": False, "verbose": -1}


def _bins(max_bin: int | None) -> dict[str, int]:
    return {} if max_bin is None else {"max_bin": int(max_bin)}


@dataclass
class FoldData:
    """One fold's binned LightGBM datasets (fit and validation rows), built once and shared by
    every trial of a study: binning the same frame again is most of a small trial's time."""

    fit: lgb.Dataset
    valid: lgb.Dataset
    valid_X: np.ndarray  # float32, for predictions
    valid_y: np.ndarray


def fold_data(
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    max_bin: int | None = None,
) -> list[FoldData]:
    """Each fold's datasets, binned now (float32 features and `max_bin` bins, as `fit_model`
    fits them)."""
    values = X.to_numpy(dtype=np.float32)
    labels = np.asarray(y).astype(int if task == "classification" else float)
    names = [str(c) for c in X.columns]
    built = []
    for fit_rows, valid_rows in folds:
        # The seed also picks the rows bin boundaries are sampled from (as fit_model's does).
        params = {**DATASET_PARAMS, **_bins(max_bin), "seed": seed}
        fit = lgb.Dataset(
            values[fit_rows], labels[fit_rows], feature_name=names, params=params
        ).construct()
        # The bins alone stay (free_raw_data): the raw copies of a fold are the size of X.
        # The reference's own params: other params make LightGBM warn that it overrides them.
        valid = lgb.Dataset(
            values[valid_rows], labels[valid_rows], reference=fit, params=params
        ).construct()
        built.append(FoldData(fit, valid, values[valid_rows], labels[valid_rows]))
    return built


def fit_booster(
    task: str,
    data: FoldData,
    params: dict[str, Any],
    seed: int,
    early_stopping_rounds: int,
    rul_objective: str = "l1",
    callbacks: list[Any] | None = None,
) -> lgb.Booster:
    """`fit_model` on a fold's prebuilt datasets: the same trees as `fit_model` with the bins
    they were built with (LightGBM's native API takes the scikit-learn names as aliases),
    stopping early on the fold's validation rows."""
    params = {"n_jobs": estimator_threads(), **params}
    rounds = int(params.pop("n_estimators", 100))
    if task == "classification":
        objective = "binary"
    else:
        objective = RUL_OBJECTIVES[rul_objective]
        params.pop("is_unbalance", None)
    native = {**params, "objective": objective, "random_state": seed, "verbose": -1}
    stop = lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)
    return lgb.train(
        native,
        data.fit,
        num_boost_round=rounds,
        valid_sets=[data.valid],
        callbacks=[*(callbacks or []), stop],
    )


def booster_predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """Failure probability or RUL hours at the booster's best iteration."""
    return booster.predict(X, num_iteration=booster_trees(booster))


def booster_trees(booster: lgb.Booster) -> int:
    return int(booster.best_iteration) if booster.best_iteration else booster.num_trees()


def tree_count(model: LightGBMModel) -> int:
    """Boosting rounds the model predicts with: the best iteration after early stopping."""
    best = getattr(model, "best_iteration_", None)
    return int(best) if best else int(model.booster_.num_trees())


def native_predict(model: LightGBMModel, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """The task's prediction from LightGBM itself: failure probability or RUL hours."""
    # A frame keeps its column names, which the model was fitted with.
    values = X.astype(np.float32) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float32)
    if isinstance(model, lgb.LGBMClassifier):
        return model.predict_proba(values)[:, 1]
    return model.predict(values)


def _float32_exact(model: LightGBMModel) -> lgb.Booster:
    """The same trees with every split threshold moved down to a float32 value.

    LightGBM splits at double thresholds; ONNX stores them as float32. Rounding a threshold up
    onto a float32 value that occurs in the data flips that value's branch: one leaf, up to
    1e-4 in probability. Moving it down to the largest float32 not above it keeps every
    float32 input on the same side (no float32 lies in between), so predictions are unchanged.
    """

    def floor_to_float32(match: re.Match[str]) -> str:
        values = np.array(match.group(1).split(" "), dtype=np.float64)
        rounded = values.astype(np.float32)
        up = rounded.astype(np.float64) > values
        rounded[up] = np.nextafter(rounded[up], np.float32(-np.inf))
        return "threshold=" + " ".join(repr(float(v)) for v in rounded)

    # Only the rounds the model predicts with (its best iteration after early stopping).
    text = model.booster_.model_to_string(num_iteration=tree_count(model))
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # byte offsets no longer hold
    text = re.sub(r"^threshold=(.*)$", floor_to_float32, text, flags=re.M)
    return lgb.Booster(model_str=text)


def to_onnx(model: LightGBMModel, n_features: int) -> onnx.ModelProto:
    """Convert to ONNX with a single float output of shape [N]."""
    classification = isinstance(model, lgb.LGBMClassifier)
    converted = convert_lightgbm(
        _float32_exact(model),
        name="pdmflow_" + ("failure_classifier" if classification else "rul_regressor"),
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
    )
    graph = converted.graph
    if classification:
        source = next(o.name for o in graph.output if o.name != "label")
        graph.initializer.append(
            helper.make_tensor("positive_class_index", TensorProto.INT64, [], [1])
        )
        graph.node.append(
            helper.make_node(
                "Gather",
                [source, "positive_class_index"],
                [OUTPUT_NAMES["classification"]],
                axis=1,
                name="select_failure_probability",
            )
        )
    else:
        source = graph.output[0].name
        graph.initializer.append(helper.make_tensor("flat_shape", TensorProto.INT64, [1], [-1]))
        graph.node.append(
            helper.make_node(
                "Reshape", [source, "flat_shape"], [OUTPUT_NAMES["regression"]], name="flatten"
            )
        )
    output = OUTPUT_NAMES["classification" if classification else "regression"]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(converted, full_check=True)
    return converted


def onnx_max_difference(
    model: LightGBMModel, session: ort.InferenceSession, X: pd.DataFrame
) -> float:
    """Largest |ONNX Runtime - LightGBM| prediction over the rows of X."""
    return float(np.max(np.abs(onnx_predict(session, X) - native_predict(model, X))))
