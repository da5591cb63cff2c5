"""The LightGBM failure classifier and its ONNX export.

The exported graph takes one float tensor `features` [N, n_features] (columns in the feature
spec's order) and returns one float tensor `failure_probability` [N]: onnxmltools' `label` output
(declared with a wrong static shape, which ONNX Runtime warns about) is dropped and the
positive-class column of `probabilities` is gathered into a clean vector.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

INPUT_NAME = "features"
OUTPUT_NAME = "failure_probability"


def fit_classifier(
    X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int, **fit_kwargs: Any
) -> lgb.LGBMClassifier:
    """Fit LightGBM's binary classifier; params use LightGBM's scikit-learn names."""
    model = lgb.LGBMClassifier(
        objective="binary", random_state=seed, n_jobs=2, verbose=-1, **params
    )
    # Float32 features: the ONNX model computes in float32, so training sees the same values.
    model.fit(X.astype(np.float32), y.astype(int), **fit_kwargs)
    return model


def to_onnx(model: lgb.LGBMClassifier, n_features: int) -> onnx.ModelProto:
    """Convert to ONNX with a single `failure_probability` [N] output."""
    converted = convert_lightgbm(
        model,
        name="pdmflow_failure_classifier",
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
    )
    graph = converted.graph
    probabilities = next(o.name for o in graph.output if o.name != "label")
    positive_class = helper.make_tensor("positive_class_index", TensorProto.INT64, [], [1])
    graph.initializer.append(positive_class)
    graph.node.append(
        helper.make_node(
            "Gather",
            [probabilities, "positive_class_index"],
            [OUTPUT_NAME],
            axis=1,
            name="select_failure_probability",
        )
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(converted, full_check=True)
    return converted


def onnx_session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def onnx_predict(session: ort.InferenceSession, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    values = np.asarray(X, dtype=np.float32)
    return session.run([OUTPUT_NAME], {INPUT_NAME: values})[0]


def onnx_max_difference(
    model: lgb.LGBMClassifier, session: ort.InferenceSession, X: pd.DataFrame
) -> float:
    """Largest |ONNX Runtime - LightGBM| failure probability over the rows of X."""
    native = model.predict_proba(X.astype(np.float32))[:, 1]
    return float(np.max(np.abs(onnx_predict(session, X) - native)))
