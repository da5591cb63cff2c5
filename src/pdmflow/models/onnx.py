"""ONNX export helpers shared by every model family, and composition into one serving graph.

Every exported part follows one contract: input `features` [N, n] float32, one float32 output
of shape [N]. `compose` wires the parts into the graph that is registered and served:

    features ─┬──────────────────────────────► Concat ─► estimator ─► calibration ─► output
              └─► isolation forest ─► anomaly_score ─┘

The output keeps the estimator's name (`failure_probability` or
`remaining_useful_life_hours`), so serving does not care which parts are present.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from onnx import TensorProto, helper, version_converter

# skl2onnx's default picks ai.onnx.ml 4, which its IsolationForest converter rejects; opset 18
# runs on every onnxruntime the project allows (>= 1.18).
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
ANOMALY_OUTPUT = "anomaly_score"
INPUT_NAME = "features"
OUTPUT_NAMES = {
    "classification": "failure_probability",
    "regression": "remaining_useful_life_hours",
}


# How the registered model's ONNX Runtime session runs (MLflow keeps this in the MLmodel file):
# one thread that does not spin. A tree ensemble on a few rows gains nothing from a thread
# pool, and idle pool threads spinning on every core cost a second serving process its CPU.
SERVING_SESSION_OPTIONS = {
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
    "execution_mode": "sequential",
    "extra_session_config": {
        "session.intra_op.allow_spinning": "0",
        "session.inter_op.allow_spinning": "0",
    },
}


def serving_requirements() -> list[str]:
    """The registered model's pip requirements, pinned to this environment (MLflow adds itself):
    what MLflow infers for an ONNX model, given here because inferring them loads the model in
    a subprocess, about 2.5 s of every train run."""
    import mlflow.onnx  # the flavour module, only where a model is logged

    return [*mlflow.onnx.get_default_pip_requirements(), f"numpy=={np.__version__}"]


def serving_signature(n_features: int, task: str) -> ModelSignature:
    """The registered model's signature: a float64 tensor [N, n_features] in the feature spec's
    order and one float32 output [N].

    float64 because that is what a pandas frame or a NumPy array of features holds: MLflow
    checks a tensor's dtype exactly, and its ONNX flavour casts float64 to the graph's float32
    input. A tensor, not named columns: MLflow checks a column signature column by column on
    every call (8 ms for one row of 177 features, 50x the model itself); a tensor is checked
    once. The names and their order travel in the model's feature spec (extra_files).
    """
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, n_features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), OUTPUT_NAMES[task])]),
    )


def onnx_session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    """A session on `threads` threads: one for a few rows (serving), more for whole tables
    (a tree ensemble splits a large batch's rows between them)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def onnx_predict(session: ort.InferenceSession, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    values = np.asarray(X, dtype=np.float32)
    return session.run(None, {INPUT_NAME: values})[0]


def float32_exact_forest(forest: Any) -> Any:
    """A deep copy of a fitted scikit-learn forest whose split thresholds are all float32 values.

    scikit-learn compares float32 inputs against float64 thresholds; ONNX stores float32
    thresholds. Rounding a threshold up onto a float32 value that occurs in the data flips that
    value's branch. Each threshold moves down to the largest float32 not above it: no float32
    lies in between, so every float32 input takes the same branch and predictions are unchanged.
    """
    exact = copy.deepcopy(forest)
    for tree in exact.estimators_:
        thresholds = tree.tree_.threshold  # a writable view on the tree's nodes
        split = tree.tree_.children_left != -1
        rounded = thresholds[split].astype(np.float32)
        up = rounded.astype(np.float64) > thresholds[split]
        rounded[up] = np.nextafter(rounded[up], np.float32(-np.inf))
        thresholds[split] = rounded.astype(np.float64)
    return exact


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers that no graph output depends on (e.g. converters' `label`).

    ONNX Runtime warns about unused initializers, and dead nodes only cost time.
    """
    graph = model.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [info for info in graph.value_info if info.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def set_single_output(
    model: onnx.ModelProto, source: str, output_name: str, flatten: bool = True
) -> None:
    """Make `output_name` [N] float32 the graph's only output, computed from `source` (flattened
    from [N, 1] when `flatten`); the input gets the batch dimension `N`; unused parts go."""
    graph = model.graph
    if flatten:
        shape_name = f"{output_name}_flat_shape"
        graph.initializer.append(helper.make_tensor(shape_name, TensorProto.INT64, [1], [-1]))
        graph.node.append(
            helper.make_node(
                "Reshape", [source, shape_name], [output_name], name=f"{output_name}_flat"
            )
        )
    else:
        rename_value(graph, source, output_name)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N"]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    prune_unused(model)
    # skl2onnx lists the default domain twice; one entry per domain is what ONNX specifies.
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())


def rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it is produced or consumed in the graph."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for values in (graph.input, graph.output, graph.value_info):
        for info in values:
            if info.name == old:
                info.name = new


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def with_default_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """The model at default-domain opset `version` (converted up when lower, else unchanged)."""
    if default_opset(model) >= version:
        return model
    return version_converter.convert_version(model, version)


def _input_width(model: onnx.ModelProto) -> int | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else None


def _check_part(model: onnx.ModelProto, role: str, width: int, outputs: set[str]) -> str:
    """Validate a part's contract at the door; returns its output name."""
    if [i.name for i in model.graph.input] != [INPUT_NAME]:
        raise ValueError(f"{role} model: expected one input '{INPUT_NAME}'")
    if _input_width(model) != width:
        raise ValueError(
            f"{role} model: input '{INPUT_NAME}' has {_input_width(model)} columns, expected "
            f"{width}"
        )
    names = [o.name for o in model.graph.output]
    if len(names) != 1 or names[0] not in outputs:
        raise ValueError(f"{role} model: expected one output among {sorted(outputs)}, got {names}")
    return names[0]


class ProbabilityMap(Protocol):
    """What `compose` appends after the estimator (models/calibration.py's `Calibrator`):
    declared here so this module, which owns the graph names, imports no model of its own."""

    def append_to_onnx(self, model: onnx.ModelProto) -> onnx.ModelProto: ...


def compose(
    estimator: onnx.ModelProto,
    n_features: int,
    anomaly: onnx.ModelProto | None = None,
    calibrator: ProbabilityMap | None = None,
) -> onnx.ModelProto:
    """One graph: `features` [N, n_features] float32 in, the estimator's output [N] out.

    With `anomaly`, its `anomaly_score` is computed from the n_features columns and appended as
    the estimator's last column (the estimator must take n_features + 1 columns). With
    `calibrator`, the estimator's `failure_probability` goes through the calibration map.
    The result passes `onnx.checker.check_model(full_check=True)`.
    """
    width = n_features + (1 if anomaly is not None else 0)
    output = _check_part(estimator, "estimator", width, set(OUTPUT_NAMES.values()))
    if calibrator is not None and output != OUTPUT_NAMES["classification"]:
        raise ValueError(f"calibration applies to '{OUTPUT_NAMES['classification']}', not {output}")
    if anomaly is None:
        composed = copy.deepcopy(estimator)
    else:
        _check_part(anomaly, "anomaly", n_features, {ANOMALY_OUTPUT})
        composed = _feed_anomaly_score(estimator, anomaly, n_features, output)
    if calibrator is not None:
        composed = calibrator.append_to_onnx(composed)
    onnx.checker.check_model(composed, full_check=True)
    return composed


def _feed_anomaly_score(
    estimator: onnx.ModelProto, anomaly: onnx.ModelProto, n_features: int, output: str
) -> onnx.ModelProto:
    # One graph holds one opset per domain: bring both parts to the higher default opset.
    opset = max(default_opset(estimator), default_opset(anomaly))
    parts = [
        onnx.compose.add_prefix(with_default_opset(part, opset), prefix)
        for part, prefix in ((anomaly, "anomaly_"), (estimator, "estimator_"))
    ]
    anomaly_part, estimator_part = parts
    rename_value(anomaly_part.graph, "anomaly_" + INPUT_NAME, INPUT_NAME)
    rename_value(estimator_part.graph, "estimator_" + output, output)
    score = "anomaly_" + ANOMALY_OUTPUT
    glue = [
        helper.make_node("Reshape", [score, "anomaly_column_shape"], ["anomaly_column"]),
        helper.make_node(
            "Concat", [INPUT_NAME, "anomaly_column"], ["estimator_" + INPUT_NAME], axis=1
        ),
    ]
    graph = helper.make_graph(
        [*anomaly_part.graph.node, *glue, *estimator_part.graph.node],
        estimator.graph.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"])],
        [
            *anomaly_part.graph.initializer,
            *estimator_part.graph.initializer,
            helper.make_tensor("anomaly_column_shape", TensorProto.INT64, [2], [-1, 1]),
        ],
        value_info=[*anomaly_part.graph.value_info, *estimator_part.graph.value_info],
    )
    versions: dict[str, int] = {}
    for part in parts:
        for entry in part.opset_import:
            versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in versions.items()],
        ir_version=max(part.ir_version for part in parts),
        producer_name="pdmflow",
    )
