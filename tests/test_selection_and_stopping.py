"""Early stopping keeps the best iteration (and ONNX has that many trees); feature selection
drops constant and duplicated columns, and serving then builds only what the model reads."""

import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import SMOKE

from pdmflow.config import load_config
from pdmflow.data.sources import read_source
from pdmflow.data.validation import validate
from pdmflow.features.builder import FeatureSpec, build_features, latest_features
from pdmflow.features.selection import drop_constant_and_duplicates, select_features
from pdmflow.models.lightgbm import fit_model, onnx_max_difference, to_onnx, tree_count
from pdmflow.models.onnx import onnx_session


def _onnx_trees(model: onnx.ModelProto) -> int:
    (ensemble,) = [n for n in model.graph.node if n.op_type.startswith("TreeEnsemble")]
    tree_ids = next(a for a in ensemble.attribute if a.name == "nodes_treeids").ints
    return len(set(tree_ids))


@pytest.fixture(scope="module")
def noisy_task():
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(4000, 6)), columns=[f"f{i}" for i in range(6)])
    # Weak signal, lots of noise: boosting overfits long before 1000 rounds.
    y = (X["f0"] + rng.normal(0, 2.0, len(X)) > 1.5).astype(int).to_numpy()
    return X.iloc[:3000], y[:3000], X.iloc[3000:], y[3000:]


def test_early_stopping_keeps_the_best_iteration_and_onnx_has_that_many_trees(noisy_task):
    X, y, X_valid, y_valid = noisy_task
    params = {"n_estimators": 1000, "learning_rate": 0.1, "num_leaves": 31}
    model = fit_model(
        "classification",
        X,
        y,
        params,
        seed=0,
        eval_set=(X_valid, y_valid),
        early_stopping_rounds=20,
    )
    best = model.best_iteration_
    assert 1 <= best < 200  # stopped long before the ceiling
    losses = model.evals_result_["valid_0"]["binary_logloss"]
    assert len(losses) == best + 20  # boosting ran 20 rounds past the best, then stopped
    # The kept iteration is the one with the lowest validation loss.
    assert int(np.argmin(losses)) + 1 == best
    assert tree_count(model) == best == model.booster_.num_trees()
    exported = to_onnx(model, X.shape[1])
    assert _onnx_trees(exported) == best
    assert onnx_max_difference(model, onnx_session(exported), X_valid) <= 1e-5


def test_constant_and_duplicated_columns_are_dropped_first_one_kept():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    X["a_again"] = X["a"] * 2 + 1  # |r| = 1 with a
    X["flat"] = 3.0
    X["c"] = X["b"] + rng.normal(0, 1, 500)  # correlated, not a duplicate
    kept, dropped = drop_constant_and_duplicates(X, 0.99, seed=0)
    assert kept == ["a", "b", "c"]
    assert dropped["flat"] == "constant on the training rows"
    assert dropped["a_again"].startswith("near-duplicate of a (|r| = 1.0000)")


@pytest.fixture(scope="module")
def smoke_tables():
    config = load_config(SMOKE)
    telemetry, events = read_source(config)
    telemetry, events, _ = validate(telemetry, events, config, "test")
    return config, telemetry, events


def test_top_k_keeps_k_features_and_serving_builds_only_those(smoke_tables, write_config):
    config, telemetry, events = smoke_tables
    from pdmflow.artifacts import LABELS
    from pdmflow.features.split import label_and_split

    label = LABELS["classification"]
    config = load_config(write_config({"features": {"select_top_k": 12}}))
    tables, spec, _, _ = label_and_split(telemetry, events, config, label)
    selection = select_features(
        tables["train"], tables["validation"], spec.feature_names, label, config
    )
    assert len(selection.kept) == 12
    assert set(selection.kept) | set(selection.dropped) == set(spec.feature_names)
    assert any("gain rank" in why for why in selection.dropped.values())
    model_spec = spec.with_features(selection.kept)
    assert model_spec.feature_names == [n for n in spec.feature_names if n in selection.kept]
    restored = FeatureSpec.from_json(model_spec.to_json())
    assert restored.feature_names == model_spec.feature_names

    # Serving builds exactly the kept columns, equal to the full build's to 1e-9.
    full = build_features(telemetry, spec, events)
    served = latest_features(telemetry, restored, events)
    assert list(served.columns[2:]) == model_spec.feature_names
    last = full.groupby("device_id").tail(1).reset_index(drop=True)
    np.testing.assert_allclose(
        served[model_spec.feature_names].to_numpy(np.float64),
        last[model_spec.feature_names].to_numpy(np.float64),
        atol=1e-9,
    )


def test_time_since_failure_is_dropped_when_failures_are_mostly_first_ones(write_config):
    """On a short history most failures come before any earlier one of their device: the time
    since failure then sits at its cap for them and would learn when observation began."""
    config = load_config(write_config())
    cap = config.features.time_since_cap_hours
    label = "failure_within_horizon"
    rows = 100
    train = pd.DataFrame(
        {
            "temperature": np.linspace(0, 1, rows),
            "hours_since_failure": np.full(rows, cap),
            label: np.r_[np.ones(10), np.zeros(rows - 10)],
        }
    )
    # 3 of 10 failing rows follow an earlier failure of their device: 30 % < 50 %.
    train.loc[:2, "hours_since_failure"] = [12.0, 30.0, 200.0]
    names = ["temperature", "hours_since_failure"]
    selection = select_features(train, train, names, label, config)
    assert selection.kept == ["temperature"]
    assert selection.dropped["hours_since_failure"].startswith(
        "30% of the failing training rows follow an earlier failure"
    )
    # 6 of 10: the spacing of failures can be learned; the feature stays.
    train.loc[:5, "hours_since_failure"] = [12.0, 30.0, 200.0, 50.0, 60.0, 70.0]
    assert select_features(train, train, names, label, config).kept == names
