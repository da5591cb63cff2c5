"""Random Forest, Isolation Forest, calibration and composed ONNX graphs, run by ONNX Runtime."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pandas as pd
import pytest

from pdmflow.errors import ConfigError
from pdmflow.models import anomaly, random_forest
from pdmflow.models.calibration import Calibrator
from pdmflow.models.lightgbm import fit_model, native_predict, to_onnx
from pdmflow.models.onnx import (
    OUTPUT_NAMES,
    compose,
    float32_exact_forest,
    onnx_predict,
    onnx_session,
)
from pdmflow.models.threads import estimator_threads

N_FEATURES = 6


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.normal(size=(rows, N_FEATURES)), columns=[f"f{i}" for i in range(N_FEATURES)]
    )


@pytest.fixture(scope="module")
def data():
    X = _frame(3000, seed=0)
    rng = np.random.default_rng(1)
    failure = pd.Series((X["f0"] + 0.5 * X["f1"] + rng.normal(0, 0.5, len(X)) > 1.2).astype(int))
    rul = pd.Series(np.clip(100 - 30 * X["f0"] + rng.normal(0, 5, len(X)), 0, 168))
    return X, failure, rul


@pytest.fixture(scope="module")
def forest_classifier(data):
    X, failure, _ = data
    model = random_forest.fit("classification", X, failure, {}, seed=3)
    return model, random_forest.to_onnx(model, N_FEATURES)


@pytest.fixture(scope="module")
def isolation_forest(data):
    X, failure, _ = data
    model = anomaly.fit_isolation_forest(X[failure == 0], seed=4)
    return model, anomaly.anomaly_onnx(model, N_FEATURES)


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _assert_contract(model: onnx.ModelProto, output: str, width: int) -> None:
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, _dims(graph_input)) == ("features", ["N", width])
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert (graph_output.name, _dims(graph_output)) == (output, ["N"])
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def _ort_stderr(model: onnx.ModelProto, width: int, tmp_path) -> str:
    """What ONNX Runtime prints while loading the model and scoring a batch of 5 rows."""
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    script = textwrap.dedent(f"""
        import numpy as np, onnxruntime as ort
        session = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        session.run(None, {{"features": np.zeros((5, {width}), dtype=np.float32)}})
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stderr


def _ece(probability: np.ndarray, y: np.ndarray) -> float:
    """Expected calibration error over 10 equal-width bins."""
    bins = np.minimum((probability * 10).astype(int), 9)
    return sum(
        abs(probability[bins == b].mean() - y[bins == b].mean()) * np.mean(bins == b)
        for b in np.unique(bins)
    )


# --- Random Forest -----------------------------------------------------------------------


def test_forest_defaults_can_be_overridden_with_sklearn_names(data):
    X, failure, rul = data
    small = random_forest.fit("classification", X, failure, {"n_estimators": 7}, seed=0)
    assert small.n_estimators == 7 and len(small.estimators_) == 7
    assert (small.min_samples_leaf, small.max_features) == (5, "sqrt")
    assert small.n_jobs == estimator_threads()
    regressor = random_forest.fit("regression", X, rul, {"n_estimators": 5}, seed=0)
    assert regressor.min_samples_leaf == 5
    with pytest.raises(ConfigError, match="training.random_forest_params: unknown num_leaves"):
        random_forest.fit("classification", X, failure, {"num_leaves": 31}, seed=0)


def test_forest_classifier_exports_the_lightgbm_contract(forest_classifier, data):
    model, onnx_model = forest_classifier
    X, _, _ = data
    assert model.n_estimators == 300  # the default, which the parity figure below is for
    _assert_contract(onnx_model, OUTPUT_NAMES["classification"], N_FEATURES)
    probability = onnx_predict(onnx_session(onnx_model), X)
    assert probability.shape == (len(X),) and probability.dtype == np.float32
    difference = np.max(np.abs(probability - random_forest.predict(model, X)))
    assert difference <= 1e-6, difference  # measured ~5e-8


def test_forest_regressor_exports_one_flat_output_that_agrees(data):
    X, _, rul = data
    model = random_forest.fit("regression", X, rul, {"n_estimators": 100}, seed=2)
    onnx_model = random_forest.to_onnx(model, N_FEATURES)
    _assert_contract(onnx_model, OUTPUT_NAMES["regression"], N_FEATURES)
    hours = onnx_predict(onnx_session(onnx_model), X)
    native = random_forest.predict(model, X.to_numpy())
    # Float32 output: the bound is relative to the hours' magnitude (~1e2 here).
    assert np.max(np.abs(hours - native)) <= 1e-6 * np.max(np.abs(native))


def _rounded_to_nearest_float32(forest):
    """The naive export: every threshold rounded to the nearest float32 (as a plain cast)."""
    naive = float32_exact_forest(forest)  # a deep copy; its thresholds are overwritten below
    for tree, original in zip(naive.estimators_, forest.estimators_, strict=True):
        tree.tree_.threshold[:] = original.tree_.threshold.astype(np.float32)
    return naive


def test_float32_floor_keeps_a_branch_that_rounding_to_nearest_flips():
    # Two adjacent float32 values; the double midpoint between them rounds up onto the upper.
    lower = np.nextafter(np.float32(1000.0), np.float32(2000.0))
    upper = np.nextafter(lower, np.float32(2000.0))
    assert np.float32((np.float64(lower) + np.float64(upper)) / 2) == upper
    X = pd.DataFrame({"f0": np.repeat([lower, upper], 20)})
    y = pd.Series(np.repeat([0, 1], 20))
    params = {"n_estimators": 3, "bootstrap": False, "min_samples_leaf": 1}
    model = random_forest.fit("classification", X, y, params, seed=0)
    native = random_forest.predict(model, X)
    assert np.array_equal(native, y.to_numpy())

    naive = onnx_predict(
        onnx_session(random_forest.to_onnx(_rounded_to_nearest_float32(model), 1)), X
    )
    assert np.max(np.abs(naive - native)) == 1.0  # the upper rows fall on the wrong side
    ours = onnx_predict(onnx_session(random_forest.to_onnx(model, 1)), X)
    assert np.max(np.abs(ours - native)) == 0.0


@pytest.mark.parametrize("family", ["forest", "isolation"])
def test_floored_thresholds_are_float32_and_change_no_prediction(
    family, forest_classifier, isolation_forest, data
):
    model = forest_classifier[0] if family == "forest" else isolation_forest[0]
    exact = float32_exact_forest(model)
    values = _frame(2000, seed=9).to_numpy(np.float32)
    for tree, original in zip(exact.estimators_, model.estimators_, strict=True):
        split = tree.tree_.children_left != -1
        floored, before = tree.tree_.threshold[split], original.tree_.threshold[split]
        assert np.array_equal(floored, floored.astype(np.float32).astype(np.float64))
        assert np.all(floored <= before)
    if family == "forest":
        # Same leaf in every tree (probabilities are summed over threads in varying order).
        frame = pd.DataFrame(values, columns=data[0].columns)
        assert np.array_equal(exact.apply(frame), model.apply(frame))
    else:
        assert np.array_equal(exact.score_samples(values), model.score_samples(values))


# --- Isolation Forest ----------------------------------------------------------------------


def test_isolation_forest_is_fitted_on_the_given_rows_only():
    model = anomaly.fit_isolation_forest(_frame(100, seed=5), seed=0, n_estimators=10)
    assert model.max_samples_ == 100  # all of them, nothing else
    assert model.n_estimators == 10


def test_anomaly_score_through_onnx_is_minus_score_samples(isolation_forest, data):
    model, onnx_model = isolation_forest
    X, failure, _ = data
    _assert_contract(onnx_model, "anomaly_score", N_FEATURES)
    far = X * 4  # mostly outside the healthy cloud
    for rows in (X, far):
        scores = anomaly.anomaly_scores(onnx_model, rows)
        assert scores.dtype == np.float32 and scores.shape == (len(rows),)
        difference = np.max(np.abs(scores + model.score_samples(rows.to_numpy(np.float32))))
        assert difference <= 1e-6, difference  # measured ~2e-7: float32 path lengths
    assert (
        anomaly.anomaly_scores(onnx_model, far).mean()
        > anomaly.anomaly_scores(onnx_model, X[failure == 0]).mean()
    )


def test_a_rows_anomaly_score_does_not_depend_on_other_rows(isolation_forest):
    _, onnx_model = isolation_forest
    batch = _frame(50, seed=6).to_numpy(np.float32)
    changed = batch.copy()
    changed[1:] = _frame(49, seed=7).to_numpy(np.float32) * 3
    first = anomaly.anomaly_scores(onnx_model, batch)[0]
    assert anomaly.anomaly_scores(onnx_model, changed)[0] == first
    assert anomaly.anomaly_scores(onnx_model, batch[:1])[0] == first


# --- Calibration ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def miscalibrated():
    """True probability expit(z); the model reports expit(3 z) (overconfident) or
    expit(z + 1.5) (too high)."""
    rng = np.random.default_rng(8)
    z = rng.normal(-1.5, 1.5, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    return z, y


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("distortion", ["squashed", "shifted"])
def test_calibration_lowers_expected_calibration_error(method, distortion, miscalibrated):
    z, y = miscalibrated
    logit = 3 * z if distortion == "squashed" else z + 1.5
    probability = 1 / (1 + np.exp(-logit))
    half = len(y) // 2  # fit on one half, judge on the other
    calibrator = Calibrator(method).fit(probability[:half], y[:half])
    before = _ece(probability[half:], y[half:])
    after = _ece(calibrator.transform(probability[half:]), y[half:])
    assert before > 0.1 and after < 0.03, (before, after)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrator_describes_itself_as_json(method, miscalibrated):
    z, y = miscalibrated
    calibrator = Calibrator(method).fit(1 / (1 + np.exp(-z)), y)
    description = json.loads(json.dumps(calibrator.to_dict()))
    assert description["method"] == method
    assert len(description["values"]) == description["knots_logit"]["count"]
    expected = {"sigmoid": {"slope", "intercept"}, "isotonic": {"thresholds", "calibrated"}}
    assert set(description["parameters"]) == expected[method]
    with pytest.raises(ValueError, match="method"):
        Calibrator("beta")
    with pytest.raises(ValueError, match="both 0 and 1"):
        Calibrator(method).fit(np.array([0.1, 0.2]), np.array([0, 0]))


def test_calibration_slope_is_bounded_where_isotonic_would_jump():
    # Two training probabilities 1e-7 apart with opposite outcomes: isotonic jumps in between.
    probability = np.repeat([0.3, 0.3 + 1e-7], 500)
    y = np.repeat([0, 1], 500)
    grid = np.linspace(0.2, 0.4, 20001)
    for max_slope, bounded in ((25.0, True), (1e12, False)):
        calibrator = Calibrator("isotonic", max_slope=max_slope).fit(probability, y)
        calibrated = calibrator.transform(grid)
        assert calibrated[0] < 0.05 and calibrated[-1] > 0.95
        steepest = np.max(np.diff(calibrated) / np.diff(grid))
        assert (steepest <= 25.0 * (1 + 1e-9)) == bounded, steepest
        # A 3e-7 input difference (the ONNX base model's) moves the output this much at most:
        moved = np.max(np.abs(calibrator.transform(grid + 3e-7) - calibrated))
        assert (moved <= 1e-5) == bounded, moved


def test_max_bin_bounds_the_split_points_of_every_feature(data):
    """training.max_bin reaches LightGBM's histograms: a feature cut into 8 bins can be split at
    7 points at most, where LightGBM's own 255 bins give many more."""
    X, failure, _ = data

    def most_split_points(model) -> int:
        splits = model.booster_.trees_to_dataframe().dropna(subset=["threshold"])
        return int(splits.groupby("split_feature")["threshold"].nunique().max())

    params = {"n_estimators": 60, "num_leaves": 15}
    coarse = fit_model("classification", X, failure, params, seed=1, max_bin=8)
    fine = fit_model("classification", X, failure, params, seed=1)
    assert most_split_points(coarse) <= 7 < most_split_points(fine)
    # A max_bin in the params wins over the argument.
    overridden = fit_model("classification", X, failure, {**params, "max_bin": 255}, 1, max_bin=8)
    assert most_split_points(overridden) > 7


@pytest.fixture(scope="module")
def lightgbm_with_holdout(data):
    X, failure, _ = data
    model = fit_model(
        "classification", X[:2000], failure[:2000], {"n_estimators": 60, "is_unbalance": True}, 1
    )
    return model, X[2000:], failure[2000:].to_numpy()


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrated_lightgbm_onnx_matches_native(method, lightgbm_with_holdout, data):
    model, X_holdout, y_holdout = lightgbm_with_holdout
    X = data[0]
    calibrator = Calibrator(method).fit(native_predict(model, X_holdout), y_holdout)
    calibrated = calibrator.append_to_onnx(to_onnx(model, N_FEATURES))
    _assert_contract(calibrated, OUTPUT_NAMES["classification"], N_FEATURES)
    onnx_probability = onnx_predict(onnx_session(calibrated), X)
    native = calibrator.transform(native_predict(model, X))
    difference = np.max(np.abs(onnx_probability - native))
    assert difference <= 1e-5, difference  # measured ~1e-6
    # The calibration does something: the uncalibrated graph is further away.
    assert np.max(np.abs(onnx_predict(onnx_session(to_onnx(model, N_FEATURES)), X) - native)) > 0.01


# --- Composition ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_anomaly_column(data, isolation_forest):
    X, failure, rul = data
    _, anomaly_model = isolation_forest
    X_extended = X.assign(anomaly_score=anomaly.anomaly_scores(anomaly_model, X))
    return X_extended, failure, rul


def _family(name: str, task: str, X: pd.DataFrame, y: pd.Series):
    """(native predictions, ONNX estimator) for a family fitted on X."""
    if name == "lightgbm":
        model = fit_model(task, X, y, {"n_estimators": 60}, seed=1)
        return native_predict(model, X), to_onnx(model, X.shape[1])
    model = random_forest.fit(task, X, y, {"n_estimators": 100}, seed=1)
    return random_forest.predict(model, X), random_forest.to_onnx(model, X.shape[1])


@pytest.mark.parametrize("family", ["lightgbm", "random_forest"])
def test_composed_graph_equals_the_step_by_step_pipeline(
    family, data, isolation_forest, with_anomaly_column
):
    X = data[0]
    X_extended, failure, _ = with_anomaly_column
    _, anomaly_model = isolation_forest
    native, estimator = _family(family, "classification", X_extended, failure)
    calibrator = Calibrator("isotonic").fit(native, failure.to_numpy())

    composed = compose(estimator, N_FEATURES, anomaly=anomaly_model, calibrator=calibrator)
    _assert_contract(composed, OUTPUT_NAMES["classification"], N_FEATURES)
    difference = np.max(
        np.abs(onnx_predict(onnx_session(composed), X) - calibrator.transform(native))
    )
    assert difference <= 1e-5, difference  # measured ~2e-6 (LightGBM), ~3e-7 (forest)

    uncalibrated = compose(estimator, N_FEATURES, anomaly=anomaly_model)
    _assert_contract(uncalibrated, OUTPUT_NAMES["classification"], N_FEATURES)
    assert np.max(np.abs(onnx_predict(onnx_session(uncalibrated), X) - native)) <= 1e-6


@pytest.mark.parametrize("family", ["lightgbm", "random_forest"])
def test_composed_regressor_keeps_its_output(family, data, isolation_forest, with_anomaly_column):
    X = data[0]
    X_extended, _, rul = with_anomaly_column
    native, estimator = _family(family, "regression", X_extended, rul)
    composed = compose(estimator, N_FEATURES, anomaly=isolation_forest[1])
    _assert_contract(composed, OUTPUT_NAMES["regression"], N_FEATURES)
    hours = onnx_predict(onnx_session(composed), X)
    assert np.max(np.abs(hours - native)) <= 1e-6 * np.max(np.abs(native))


def test_compose_rejects_parts_that_do_not_fit(data, forest_classifier, isolation_forest):
    _, estimator = forest_classifier  # takes N_FEATURES columns, no anomaly column
    with pytest.raises(ValueError, match="columns"):
        compose(estimator, N_FEATURES, anomaly=isolation_forest[1])
    X, _, rul = data
    regressor = random_forest.to_onnx(
        random_forest.fit("regression", X, rul, {"n_estimators": 3}, 0), N_FEATURES
    )
    calibrator = Calibrator().fit(np.array([0.1, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="calibration"):
        compose(regressor, N_FEATURES, calibrator=calibrator)


def test_onnx_runtime_prints_no_shape_warnings(
    forest_classifier, isolation_forest, with_anomaly_column, tmp_path
):
    X_extended, _, rul = with_anomaly_column
    _, estimator = _family("random_forest", "regression", X_extended, rul)
    graphs = {
        "forest": (forest_classifier[1], N_FEATURES),
        "anomaly": (isolation_forest[1], N_FEATURES),
        "composed": (compose(estimator, N_FEATURES, anomaly=isolation_forest[1]), N_FEATURES),
    }
    for name, (model, width) in graphs.items():
        assert _ort_stderr(model, width, tmp_path) == "", name
