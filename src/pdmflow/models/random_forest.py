"""scikit-learn Random Forest for both tasks, behind the same verbs as the LightGBM family.

The ONNX export follows the LightGBM contract: one input `features` [N, n_features] float32
and one float32 output [N], `failure_probability` or `remaining_useful_life_hours`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from pdmflow.errors import ConfigError
from pdmflow.models.onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    TARGET_OPSET,
    float32_exact_forest,
    set_single_output,
)
from pdmflow.models.threads import estimator_threads

RandomForestModel = RandomForestClassifier | RandomForestRegressor
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "min_samples_leaf": 5,
    "max_features": "sqrt",
    "class_weight": None,
}
TREE_ENSEMBLES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


def fit(
    task: str,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    params: dict[str, Any],
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> RandomForestModel:
    """Fit a forest for the task ("classification" or "regression") on float32 features.

    `params` override DEFAULT_PARAMS with scikit-learn's names; an unknown name is an error.
    `sample_weight`: each row's weight (None: 1 each).
    """
    if task == "classification":
        model: RandomForestModel = RandomForestClassifier(random_state=seed)
        y = np.asarray(y).astype(int)
        if set(np.unique(y)) != {0, 1}:
            raise ValueError(
                f"random forest classification: labels must be 0 and 1, got "
                f"{sorted(set(np.unique(y)))}"
            )
    elif task == "regression":
        model = RandomForestRegressor(random_state=seed)
    else:
        raise ValueError(
            f"random forest: task must be 'classification' or 'regression', got {task!r}"
        )
    settings = {"n_jobs": estimator_threads(), **DEFAULT_PARAMS, **params}
    if task == "regression":
        settings.pop("class_weight")  # classifier-only
    unknown = sorted(set(settings) - set(model.get_params()))
    if unknown:
        raise ConfigError(
            f"training.random_forest_params: unknown {', '.join(unknown)}; expected "
            f"scikit-learn {type(model).__name__} parameter names"
        )
    model.set_params(**settings)
    # Float32 features: the ONNX model computes in float32, so training sees the same values.
    model.fit(X.astype(np.float32, copy=False), y, sample_weight=sample_weight)
    return model


def predict(model: RandomForestModel, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """The task's prediction from scikit-learn itself: failure probability or RUL hours."""
    values = X.astype(np.float32) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float32)
    if not isinstance(values, pd.DataFrame) and hasattr(model, "feature_names_in_"):
        # The model was fitted on a frame; give the columns back their names.
        values = pd.DataFrame(values, columns=model.feature_names_in_)
    if isinstance(model, RandomForestClassifier):
        return model.predict_proba(values)[:, 1]
    return model.predict(values)


def to_onnx(model: RandomForestModel, n_features: int) -> onnx.ModelProto:
    """Convert to ONNX: input `features` [N, n_features] float32, one float32 output [N].

    Predictions agree with `predict` on float32 inputs to float32 rounding: thresholds are
    float32-exact (see `float32_exact_forest`) and the trees are summed in double.
    """
    classification = isinstance(model, RandomForestClassifier)
    if classification and list(model.classes_) != [0, 1]:
        raise ValueError(f"random forest: classes must be [0, 1], got {list(model.classes_)}")
    exact = float32_exact_forest(model)
    converted = convert_sklearn(
        exact,
        name="pdmflow_" + ("failure_classifier" if classification else "rul_regressor"),
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(exact): {"zipmap": False}} if classification else None,
        target_opset=TARGET_OPSET,
        # skl2onnx's identity-removal pass takes most of the conversion time on deep forests;
        # ONNX Runtime drops identity nodes itself when it builds the session.
        model_optim=False,
    )
    graph = converted.graph
    _sum_trees_in_double(graph)
    (trees,) = (node for node in graph.node if node.op_type in TREE_ENSEMBLES)
    if classification:
        graph.initializer.append(
            helper.make_tensor("positive_class_index", TensorProto.INT64, [], [1])
        )
        graph.node.append(
            helper.make_node(
                "Gather",
                [trees.output[1], "positive_class_index"],
                [OUTPUT_NAMES["classification"]],
                axis=1,
                name="select_failure_probability",
            )
        )
        set_single_output(
            converted, OUTPUT_NAMES["classification"], OUTPUT_NAMES["classification"], flatten=False
        )
    else:
        set_single_output(converted, trees.output[0], OUTPUT_NAMES["regression"])
    onnx.checker.check_model(converted, full_check=True)
    return converted


def _sum_trees_in_double(graph: onnx.GraphProto) -> None:
    """Feed the tree ensemble double inputs so ONNX Runtime accumulates the trees in double.

    ONNX Runtime sums tree outputs in the input's precision; 300 float32 additions drift by
    ~1e-6, while sklearn sums in double. Float32 values convert to double exactly and the
    thresholds are float32 values, so every branch stays the same.
    """
    graph.node.insert(
        0,
        helper.make_node(
            "Cast", [INPUT_NAME], ["features_as_double"], to=TensorProto.DOUBLE, name="to_double"
        ),
    )
    for node in graph.node:
        if node.op_type in TREE_ENSEMBLES:
            node.input[0] = "features_as_double"
