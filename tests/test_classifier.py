import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pandas as pd
import pytest

from pdmflow.models.lightgbm import fit_model, onnx_max_difference, to_onnx
from pdmflow.models.onnx import OUTPUT_NAMES, onnx_predict, onnx_session


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3000, 8)), columns=[f"f{i}" for i in range(8)])
    y = pd.Series((X["f0"] + 0.5 * X["f1"] + rng.normal(0, 0.5, 3000) > 1.2).astype(int))
    model = fit_model("classification", X, y, {"n_estimators": 60, "is_unbalance": True}, seed=1)
    return model, to_onnx(model, X.shape[1]), X


def test_one_float_output_with_a_batch_dimension(fitted):
    _, onnx_model, X = fitted
    (output,) = onnx_model.graph.output
    assert output.name == OUTPUT_NAMES["classification"]
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["N"]
    probabilities = onnx_predict(onnx_session(onnx_model), X.head(7))
    assert probabilities.shape == (7,) and probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_onnx_agrees_with_lightgbm(fitted):
    model, onnx_model, X = fitted
    difference = onnx_max_difference(model, onnx_session(onnx_model), X)
    assert difference <= 1e-5
    native = model.predict_proba(X.astype(np.float32))[:, 1]
    assert np.corrcoef(native, onnx_predict(onnx_session(onnx_model), X))[0, 1] > 0.9999


def _ort_stderr(model_path: str) -> str:
    script = textwrap.dedent(f"""
        import numpy as np, onnxruntime as ort
        session = ort.InferenceSession({model_path!r}, providers=["CPUExecutionProvider"])
        feed = {{session.get_inputs()[0].name: np.zeros((5, 8), dtype=np.float32)}}
        session.run(None, feed)
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stderr


def test_onnx_runtime_prints_no_shape_warnings(fitted, tmp_path):
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model, onnx_model, _ = fitted
    ours = tmp_path / "ours.onnx"
    onnx.save(onnx_model, ours)
    assert _ort_stderr(str(ours)) == ""
    # The converter's raw graph declares `label` as shape [1]: ONNX Runtime warns on a batch.
    raw = convert_lightgbm(
        model, initial_types=[("features", FloatTensorType([None, 8]))], zipmap=False
    )
    raw_path = tmp_path / "raw.onnx"
    onnx.save(raw, raw_path)
    assert "shape" in _ort_stderr(str(raw_path)).lower()


def test_regressor_exports_one_flat_output_that_agrees(tmp_path):
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(2000, 5)), columns=[f"f{i}" for i in range(5)])
    y = pd.Series(np.clip(100 - 30 * X["f0"] + rng.normal(0, 5, 2000), 0, 168))
    model = fit_model("regression", X, y, {"n_estimators": 50, "is_unbalance": True}, seed=1)
    onnx_model = to_onnx(model, 5)
    (output,) = onnx_model.graph.output
    assert output.name == OUTPUT_NAMES["regression"]
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["N"]
    assert onnx_predict(onnx_session(onnx_model), X.head(4)).shape == (4,)
    # Hours in the hundreds: float32 leaves about 1e-5 relative.
    assert onnx_max_difference(model, onnx_session(onnx_model), X) <= 1e-3
    path = tmp_path / "rul.onnx"
    onnx.save(onnx_model, path)
    assert _ort_stderr(str(path)).count("shape") == 0


def test_split_between_adjacent_float32_values_survives_export():
    """LightGBM splits at a double between two neighbouring float32 values; stored as float32
    that threshold rounds onto one of them. The raw export flips that branch, ours does not."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    low = np.float32(1.0)
    high = np.nextafter(low, np.float32(2.0))
    x = np.where(rng.random(2000) < 0.5, low, high).astype(np.float32)
    X = pd.DataFrame({"f": x, "g": rng.normal(size=2000).astype(np.float32)})
    y = pd.Series((x == high).astype(int))
    model = fit_model("classification", X, y, {"n_estimators": 5, "min_child_samples": 5}, 1)
    raw = convert_lightgbm(
        model, initial_types=[("features", FloatTensorType([None, 2]))], zipmap=False
    )
    raw_probability = onnx_session(raw).run(None, {"features": X.to_numpy()})[1][:, 1]
    native = model.predict_proba(X)[:, 1]
    assert np.abs(raw_probability - native).max() > 0.1  # the problem is real
    assert onnx_max_difference(model, onnx_session(to_onnx(model, 2)), X) <= 1e-6
