"""Isolation Forest anomaly score: a label-free model whose score is an extra feature.

The score is always computed through ONNX Runtime (`anomaly_scores`), at training time too,
so the estimator is trained on exactly the float32 values the serving graph produces.
"""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest

from pdmflow.models.onnx import (
    ANOMALY_OUTPUT,
    INPUT_NAME,
    TARGET_OPSET,
    float32_exact_forest,
    onnx_session,
    set_single_output,
)
from pdmflow.models.threads import estimator_threads


def fit_isolation_forest(
    X_healthy: pd.DataFrame, seed: int, n_estimators: int = 100
) -> IsolationForest:
    """Fit an Isolation Forest on exactly the given rows (the caller passes healthy rows)."""
    if len(X_healthy) < 2:
        raise ValueError(f"isolation forest: needs at least 2 healthy rows, got {len(X_healthy)}")
    model = IsolationForest(n_estimators=n_estimators, random_state=seed)
    # Float32 features, as in ONNX; a plain array keeps ONNX and sklearn inputs identical.
    model.fit(np.asarray(X_healthy, dtype=np.float32))
    return model


def anomaly_onnx(model: IsolationForest, n_features: int) -> onnx.ModelProto:
    """ONNX graph: `features` [N, n_features] float32 -> `anomaly_score` [N] float32.

    anomaly_score = -score_samples: higher means more anomalous; it agrees with
    `-model.score_samples` to float32 rounding (thresholds are float32-exact).
    """
    if model.n_features_in_ != n_features:
        raise ValueError(
            f"isolation forest: fitted on {model.n_features_in_} features, asked for {n_features}"
        )
    exact = float32_exact_forest(model)
    converted = convert_sklearn(
        exact,
        name="pdmflow_anomaly_score",
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(exact): {"score_samples": True}},
        target_opset=TARGET_OPSET,
        # skl2onnx's identity-removal pass takes most of the conversion time on deep forests;
        # ONNX Runtime drops identity nodes itself when it builds the session.
        model_optim=False,
    )
    graph = converted.graph
    score_samples = graph.output[2].name  # outputs: label, decision function, score_samples
    graph.node.append(
        helper.make_node("Neg", [score_samples], ["negated_score_samples"], name="negate")
    )
    set_single_output(converted, "negated_score_samples", ANOMALY_OUTPUT)
    onnx.checker.check_model(converted, full_check=True)
    return converted


def anomaly_scores(model_proto: onnx.ModelProto, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Anomaly score [N] float32 per row, computed by ONNX Runtime; a row's score depends on
    that row only."""
    values = np.asarray(X, dtype=np.float32)
    session = onnx_session(model_proto, threads=estimator_threads())  # whole tables
    return session.run(None, {INPUT_NAME: values})[0]
