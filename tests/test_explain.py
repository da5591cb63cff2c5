"""SHAP explanations: additivity to the native margin for every family and task (with and
without the anomaly-score input), the explainer's files, plots, and reasons in serving."""

from __future__ import annotations

import functools

import lightgbm as lgb
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
import shap
import yaml
from conftest import SMOKE, deep_merge, forget_experiment

from pdmflow.artifacts import MODEL_URI_TAG, read_dataset
from pdmflow.config import load_config
from pdmflow.errors import PdmflowError
from pdmflow.evaluation.explain import (
    ANOMALY_FILE,
    EXTRA_FILES_DIR,
    LIGHTGBM_FILE,
    META_FILE,
    Explainer,
    gain_importance_figure,
    sample_rows,
    shap_figures,
    shap_importance,
    top_features,
)
from pdmflow.features.builder import build_features
from pdmflow.models import anomaly, random_forest
from pdmflow.models.lightgbm import fit_model, tree_count
from pdmflow.models.training import ANOMALY_FEATURE, Candidate
from pdmflow.serving import FailureScorer
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train
from pdmflow.tracking import downloaded

FEATURES = [f"f{i}" for i in range(6)]
CASES = [
    (family, task, with_anomaly)
    for family in ("lightgbm", "random_forest")
    for task in ("classification", "regression")
    for with_anomaly in (False, True)
]
CASE_IDS = [f"{f}-{t}-{'anomaly' if a else 'plain'}" for f, t, a in CASES]


@functools.cache
def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(1600, len(FEATURES))), columns=FEATURES)
    noise = rng.normal(0, 1.0, len(X))
    failure = (X["f0"] + 0.5 * X["f1"] + noise > 1.0).astype(int).to_numpy()
    rul = np.clip(100 - 30 * X["f0"] + 10 * X["f2"] + 5 * noise, 0, 168).to_numpy()
    return X.iloc[:1200], failure, rul, X.iloc[1200:]


@functools.cache
def _anomaly_graph() -> onnx.ModelProto:
    """One small Isolation Forest on the healthy training rows, shared by every case."""
    X, failure, _, _ = _data()
    forest = anomaly.fit_isolation_forest(X[failure[: len(X)] == 0], seed=4, n_estimators=30)
    return anomaly.anomaly_onnx(forest, len(FEATURES))


@functools.cache
def _candidate(family: str, task: str, with_anomaly: bool) -> Candidate:
    """A real fitted estimator, as fit_candidate releases it (no calibration needed here)."""
    X, failure, rul, _ = _data()
    y = (failure if task == "classification" else rul)[: len(X)]
    graph = None
    inputs = X
    if with_anomaly:
        graph = _anomaly_graph()
        inputs = X.assign(**{ANOMALY_FEATURE: anomaly.anomaly_scores(graph, X)})
    if family == "lightgbm":
        fit, valid = inputs.iloc[:900], inputs.iloc[900:]
        estimator = fit_model(
            task,
            fit,
            y[:900],
            {"n_estimators": 300, "learning_rate": 0.1, "num_leaves": 15},
            seed=0,
            eval_set=(valid, y[900:]),
            early_stopping_rounds=10,
        )
    else:
        estimator = random_forest.fit(task, inputs, y, {"n_estimators": 40}, seed=0)
    return Candidate(family, task, list(FEATURES), estimator, {}, anomaly=graph)


def _native_margin(candidate: Candidate, X: pd.DataFrame) -> np.ndarray:
    inputs = candidate.estimator_input(X).astype(np.float32)
    if candidate.family == "lightgbm":
        return candidate.estimator.predict(inputs, raw_score=True)
    return random_forest.predict(candidate.estimator, inputs)


@pytest.mark.parametrize(("family", "task", "with_anomaly"), CASES, ids=CASE_IDS)
def test_shap_values_add_up_to_the_native_margin(family, task, with_anomaly):
    candidate = _candidate(family, task, with_anomaly)
    X_test = _data()[3]
    explainer = Explainer.from_candidate(candidate)
    explanation = explainer.explain(X_test)

    columns = FEATURES + ([ANOMALY_FEATURE] if with_anomaly else [])
    assert list(explanation.values.columns) == columns == list(explanation.data.columns)
    assert explanation.values.index.equals(X_test.index)
    total = explanation.values.sum(axis=1).to_numpy() + explanation.base_value
    np.testing.assert_allclose(total, explanation.margin, rtol=1e-4, atol=1e-6)
    native = _native_margin(candidate, X_test)
    np.testing.assert_allclose(explanation.margin, native, rtol=1e-6, atol=1e-9)
    uncalibrated = candidate.predict_uncalibrated(X_test)
    if family == "lightgbm" and task == "classification":
        # Early stopping: SHAP sees the trees the model predicts with, as the ONNX graph does.
        assert tree_count(candidate.estimator) < 300
        assert explainer.estimator.num_trees() == tree_count(candidate.estimator)
        assert "log-odds" in explanation.margin_name
        np.testing.assert_allclose(1 / (1 + np.exp(-total)), uncalibrated, atol=1e-6)
    else:
        np.testing.assert_allclose(total, uncalibrated, rtol=1e-4, atol=1e-6)
    if with_anomaly:
        scores = anomaly.anomaly_scores(candidate.anomaly, X_test)
        np.testing.assert_array_equal(explanation.data[ANOMALY_FEATURE].to_numpy(), scores)
        assert explanation.values[ANOMALY_FEATURE].abs().sum() > 0  # the model reads it


@pytest.mark.parametrize(("family", "task", "with_anomaly"), CASES, ids=CASE_IDS)
def test_saved_explainer_gives_identical_values(family, task, with_anomaly, tmp_path):
    explainer = Explainer.from_candidate(_candidate(family, task, with_anomaly))
    written = explainer.save(tmp_path / EXTRA_FILES_DIR)
    assert all(path.name.startswith("explainer_") for path in written)
    assert (ANOMALY_FILE in {p.name for p in written}) == with_anomaly
    loaded = Explainer.load_from_model_dir(tmp_path)
    assert loaded is not None and loaded.columns == explainer.columns
    X_test = _data()[3]
    before, after = explainer.explain(X_test), loaded.explain(X_test)
    pd.testing.assert_frame_equal(after.values, before.values, check_exact=True)
    # (a forest's predict_proba sums its trees over threads, in no fixed order)
    np.testing.assert_allclose(after.margin, before.margin, rtol=1e-12)
    assert after.base_value == before.base_value
    assert after.margin_name == before.margin_name


def test_a_model_directory_without_explainer_files_has_none(tmp_path):
    assert Explainer.load_from_model_dir(tmp_path) is None


def test_top_features_rank_by_absolute_contribution():
    explanation = Explainer.from_candidate(_candidate("random_forest", "regression", True))
    explanation = explanation.explain(_data()[3].head(25))
    tops = top_features(explanation, 3)
    assert len(tops) == 25
    for (_, row), (_, values), top in zip(
        explanation.data.iterrows(), explanation.values.iterrows(), tops, strict=True
    ):
        expected = values.abs().sort_values(ascending=False, kind="stable").index[:3]
        assert [name for name, _, _ in top] == list(expected)
        for name, value, contribution in top:
            assert value == row[name] and contribution == values[name]
    assert len(top_features(explanation, 50)[0]) == len(FEATURES) + 1


def test_plots_and_importance_for_both_families():
    X_test = _data()[3]
    big = pd.concat([X_test] * 6, ignore_index=True)
    assert len(sample_rows(big, 1000)) == 1000 and sample_rows(X_test, 1000) is X_test
    for family in ("lightgbm", "random_forest"):
        candidate = _candidate(family, "classification", True)
        explainer = Explainer.from_candidate(candidate)
        explanation = explainer.explain(big, max_rows=500)
        assert len(explanation.values) == 500
        importance = shap_importance(explanation)
        mean_abs = list(importance["mean_abs_shap"].values())
        assert mean_abs == sorted(mean_abs, reverse=True)
        assert set(importance["mean_abs_shap"]) == set(explainer.columns)
        assert importance["base_value"] == explanation.base_value
        assert importance["margin"] == explanation.margin_name
        figures = shap_figures(explanation, max_display=5)
        assert set(figures) == {"shap_summary.png", "shap_importance_bar.png"}
        gain = gain_importance_figure(candidate, top=4)
        label = gain.axes[0].get_xlabel()
        assert ("gain" in label) if family == "lightgbm" else ("impurity" in label)
        assert len(gain.axes[0].patches) == 4
        for figure in [*figures.values(), gain]:
            assert figure.axes
            plt.close(figure)


# --- serving -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ingest, features and train (smoke config, no tuning, no calibration) into a temp
    SQLite store, once for this module."""
    root = tmp_path_factory.mktemp("explain")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.chdir(root)  # the default artifact root ./mlruns lands in root
        mlflow.set_tracking_uri(uri)
        try:
            path = root / "tenant.yaml"
            data = deep_merge(
                yaml.safe_load(SMOKE.read_text()), {"training": {"calibration": "none"}}
            )
            path.write_text(yaml.safe_dump(data))
            config = load_config(path)
            dataset_uri = run_ingest(config)
            train_run_id = run_train(config, run_features(config, dataset_uri), "none")
            telemetry, events = read_dataset(dataset_uri)
            yield mlflow.get_run(train_run_id), telemetry, events
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            forget_experiment()


def test_scorer_explains_each_device_with_its_top_three_shap_features(trained):
    train_run, telemetry, events = trained
    model_uri = train_run.data.tags[MODEL_URI_TAG]
    plots = mlflow.MlflowClient().list_artifacts(train_run.info.run_id, "plots")
    artifacts = {a.path for a in plots}
    assert "plots/gain_importance.png" in artifacts

    scorer = FailureScorer.load(model_uri)
    plain = scorer.score_telemetry(telemetry, events)
    scored = scorer.score_telemetry(telemetry, events, explain=3)
    reasons = [f"reason_{i}_{part}" for i in (1, 2, 3) for part in ("feature", "value",
               "contribution")]  # fmt: skip
    assert list(scored.columns) == [*plain.columns, *reasons]
    pd.testing.assert_frame_equal(scored[plain.columns], plain)

    # shap.TreeExplainer itself, on the booster logged with the model and the devices' latest
    # feature rows built independently of the scorer.
    with downloaded(model_uri) as local:
        booster = lgb.Booster(model_file=str(local / EXTRA_FILES_DIR / LIGHTGBM_FILE))
        assert (local / EXTRA_FILES_DIR / META_FILE).is_file()
    names = scorer.spec.feature_names
    latest = build_features(telemetry, scorer.spec, events).groupby("device_id").tail(1)
    latest = latest.set_index("device_id").loc[scored["device_id"]]
    tree_explainer = shap.TreeExplainer(booster)
    values = np.asarray(tree_explainer.shap_values(latest[names].astype(np.float32)))
    assert values.shape == (len(scored), len(names))
    for row, device_values, (_, features) in zip(
        scored.itertuples(index=False), values, latest.iterrows(), strict=True
    ):
        top = np.argsort(-np.abs(device_values), kind="stable")[:3]
        for i, j in enumerate(top, start=1):
            assert getattr(row, f"reason_{i}_feature") == names[j]
            assert getattr(row, f"reason_{i}_value") == pytest.approx(features[names[j]])
            assert getattr(row, f"reason_{i}_contribution") == pytest.approx(
                device_values[j], abs=1e-9
            )
    # Without calibration, the served probability is the sigmoid of base value + SHAP values.
    margin = values.sum(axis=1) + float(np.atleast_1d(tree_explainer.expected_value)[-1])
    np.testing.assert_allclose(
        scored["failure_probability"].to_numpy(), 1 / (1 + np.exp(-margin)), atol=1e-5
    )


def test_a_model_released_without_explainer_says_so(trained):
    train_run, telemetry, events = trained
    model_uri = train_run.data.tags[MODEL_URI_TAG]
    with downloaded(model_uri) as local:
        for path in (local / EXTRA_FILES_DIR).glob("explainer_*"):
            path.unlink()
        scorer = FailureScorer(local, "models:/old-model/1")
    assert scorer.explainer is None
    assert len(scorer.score_telemetry(telemetry, events)) == telemetry["device_id"].nunique()
    with pytest.raises(PdmflowError, match=r"^model models:/old-model/1 carries no SHAP"):
        scorer.score_telemetry(telemetry, events, explain=3)
    with pytest.raises(ValueError, match="explain"):
        scorer.score_telemetry(telemetry, events, explain=-1)
