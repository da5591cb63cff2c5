"""Learning rows read from features in storage, part by part, and training.max_rows: the same
selection, folds and sample as from whole tables, and a final fit that reads every learning
row on the workers (issue 26)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SMOKE, deep_merge, tracking_store_at
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from pdmflow.artifacts import (
    LABELS,
    MODEL_URI_TAG,
    read_features,
    read_reference,
    stored_locations,
)
from pdmflow.config import TenantConfig
from pdmflow.engine.base import in_this_process
from pdmflow.engine.storage import part_name, write_part
from pdmflow.evaluation.test_rows import (
    PREDICTION,
    REFERENCE_PREDICTION,
    diagnostic_devices,
    evaluated_rows,
)
from pdmflow.features import selection
from pdmflow.features.selection import learning_set
from pdmflow.features.stored_learning import (
    LearningPart,
    StoredLearning,
    key_columns,
    load_parts,
    stored_learning_set,
    training_items,
)
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train

LABEL = LABELS["classification"]


def smoke_config(**overrides) -> TenantConfig:
    raw = deep_merge(yaml.safe_load(SMOKE.read_text()), overrides)
    return TenantConfig.model_validate(raw)


@pytest.fixture(scope="module")
def module_tracking(tmp_path_factory):
    """One SQLite tracking store (artifacts beside it) for the features runs the module's
    comparisons share, built once: `tracking_store`'s set-up at module scope."""
    root = tmp_path_factory.mktemp("tracking")
    with tracking_store_at(root):
        yield root


# Time folds, and device folds (whose parts are empty in the splits their devices are not in);
# one validation split runs through tests/test_storage.py's pipeline.
SPLITS = {
    "time-2-folds": {"by": "time", "cv_folds": 2},
    "device-2-folds": {"by": "device", "cv_folds": 2},
}


def build_both_forms(root, name: str):
    """(config, features URI in storage, the same features as run artifacts)."""
    split = SPLITS[name]
    # Parts of about 1,000 rows: a few devices each.
    engine = {"partition_rows": 1000}
    stored = smoke_config(split=split, storage={"uri": str(root / f"store-{name}")}, engine=engine)
    plain = smoke_config(split=split)
    return (
        stored,
        run_features(stored, run_ingest(stored)),
        run_features(plain, run_ingest(plain)),
    )


_built: dict[str, tuple] = {}


@pytest.fixture(scope="module", params=list(SPLITS))
def both_forms(request, module_tracking):
    if request.param not in _built:
        _built[request.param] = build_both_forms(module_tracking, request.param)
    return _built[request.param]


@pytest.fixture(scope="module")
def device_forms(module_tracking):
    """The device-folds features (built once for the module, shared with `both_forms`)."""
    if "device-2-folds" not in _built:
        _built["device-2-folds"] = build_both_forms(module_tracking, "device-2-folds")
    return _built["device-2-folds"]


def assert_same_learning(stored_set, memory_set, columns):
    assert stored_set.selection == memory_set.selection
    assert stored_set.train_rows == memory_set.train_rows
    assert stored_set.total_rows == memory_set.total_rows
    assert len(stored_set.folds) == len(memory_set.folds)
    for (fit, valid), (fit_memory, valid_memory) in zip(
        stored_set.folds, memory_set.folds, strict=True
    ):
        np.testing.assert_array_equal(fit, fit_memory)
        np.testing.assert_array_equal(valid, valid_memory)
    pd.testing.assert_frame_equal(
        stored_set.rows[columns].reset_index(drop=True),
        memory_set.rows[columns].reset_index(drop=True),
    )


@pytest.mark.slow
@pytest.mark.cost(seconds=5)
@pytest.mark.parametrize("max_rows", [None, 2000], ids=["every-row", "max-rows-2000"])
def test_learning_rows_from_parts_equal_the_whole_tables(both_forms, max_rows, monkeypatch):
    """Selection (with its correlation sample drawn, not every row), folds and the training
    sample from parts equal those from the whole tables."""
    config, stored_uri, plain_uri = both_forms
    monkeypatch.setattr(selection, "CORRELATION_SAMPLE_ROWS", 1500)
    tables, spec = read_features(plain_uri)
    memory = learning_set(tables, spec, LABEL, config).sampled(
        max_rows, config.training.seed, config.task, LABEL
    )
    locations = stored_locations(stored_uri)
    assert locations is not None
    stored, where = stored_learning_set(
        locations, spec, LABEL, config, in_this_process, max_rows, []
    )
    assert len(where.parts) > 4  # the learning rows came from many parts
    assert memory.sample is not None and stored.sample is not None
    np.testing.assert_array_equal(stored.sample.positions, memory.sample.positions)
    assert stored.sample.how == memory.sample.how == ("all" if max_rows is None else "random")
    columns = [*key_columns(spec, LABEL), *memory.selection.kept]
    assert set(stored.rows.columns) == set(columns)
    assert_same_learning(stored, memory, columns)
    if max_rows is not None:
        assert len(stored.rows) == max_rows < stored.total_rows
        # The folds keep both label values, and count the sampled rows.
        for fit, valid in stored.folds:
            assert fit.max() < max_rows and valid.max() < max_rows


@pytest.mark.slow
@pytest.mark.cost(seconds=10)
def test_top_k_from_parts_equals_the_whole_tables(module_tracking):
    config = smoke_config(
        storage={"uri": str(module_tracking / "store-top-k")},
        engine={"partition_rows": 1000},
        features={"select_top_k": 12},
    )
    stored_uri = run_features(config, run_ingest(config))
    tables, spec = read_features(stored_uri)  # the same tables, read whole
    memory = learning_set(tables, spec, LABEL, config)
    stored, _ = stored_learning_set(
        stored_locations(stored_uri), spec, LABEL, config, in_this_process, None, []
    )
    assert len(stored.selection.kept) == 12
    assert_same_learning(stored, memory, [*key_columns(spec, LABEL), *memory.selection.kept])


def train_facts(run_id: str) -> tuple[dict, dict]:
    run = MlflowClient().get_run(run_id)
    return run.data.params, run.data.metrics


def released_auc(run_id: str, test: pd.DataFrame) -> float:
    """The test AUC of the ONNX model a train run logged (it reads the selected features)."""
    graph = mlflow.onnx.load_model(MlflowClient().get_run(run_id).data.tags[MODEL_URI_TAG])
    names = mlflow.artifacts.load_dict(f"runs:/{run_id}/feature_selection.json")["kept"]
    return float(roc_auc_score(test[LABEL], onnx_predict(onnx_session(graph), test[names])))


@pytest.mark.slow
@pytest.mark.cost(seconds=45)
def test_train_on_a_sample_releases_a_model_fitted_on_every_row_by_the_workers(
    tracking_store, tmp_path
):
    """training.max_rows on features in storage with a Dask engine: the folds, calibration
    and threshold see the same sample as in memory (the same out-of-fold metrics), and the
    final fit reads every learning row from storage on the workers, negative sampling drawn
    as in memory; its model ranks the test rows as the in-memory one does."""
    overrides = {
        "split": {"by": "time", "cv_folds": 2},
        "training": {"max_rows": 2000, "negative_sample_rate": 0.5},
    }
    engine = {"kind": "dask", "n_workers": 2, "threads_per_worker": 1, "partition_rows": 1000}
    stored = smoke_config(**overrides, storage={"uri": str(tmp_path / "store")}, engine=engine)
    plain = smoke_config(**overrides)
    stored_uri = run_features(stored, run_ingest(stored))
    stored_run = run_train(stored, stored_uri, "none")
    plain_uri = run_features(plain, run_ingest(plain))
    plain_run = run_train(plain, plain_uri, "none")

    params, metrics = train_facts(stored_run)
    plain_params, plain_metrics = train_facts(plain_run)
    assert params["training_engine"] == "dask" and plain_params["training_engine"] == "local"
    assert params["max_rows"] == "2000"
    assert metrics["sampled_learning_rows"] == 2000 < metrics["learning_rows"]
    # Every learning row is fitted (less the healthy rows negative sampling leaves out).
    assert metrics["learning_rows"] / 2 < metrics["fitted_rows"] < metrics["learning_rows"]
    for key in ("learning_rows", "sampled_learning_rows", "fitted_rows", "trees"):
        assert metrics[key] == plain_metrics[key], key
    out_of_fold = {k: v for k, v in plain_metrics.items() if k.startswith("validation_")}
    assert out_of_fold and {k: metrics[k] for k in out_of_fold} == pytest.approx(
        out_of_fold, rel=1e-9
    )
    assert metrics["onnx_max_abs_difference"] < 1e-4
    test = read_features(plain_uri, splits=("test",))[0]["test"]
    assert abs(released_auc(stored_run, test) - released_auc(plain_run, test)) < 0.01

    # Evaluate scores every test row part by part on the workers; the checks that rebuild
    # rows from readings run on a sample of whole devices (evaluation.diagnostic_rows).
    judged = stored.model_copy(update={"evaluation": stored.evaluation.model_copy(
        update={"diagnostic_rows": 1000})})  # fmt: skip
    _, evaluated = train_facts(run_evaluate(judged, stored_run))
    assert evaluated["test_rows"] == len(test)
    assert evaluated["diagnostic_rows"] <= 1000 < evaluated["test_rows"]
    assert evaluated["diagnostic_devices"] < evaluated["test_devices"]
    stored_test = read_features(stored_uri, splits=("test",))[0]["test"]
    assert evaluated["auc"] == pytest.approx(released_auc(stored_run, stored_test), abs=1e-4)
    assert "robustness_noise_10pct_auc_drop" in evaluated and "reference_auc" in evaluated


def test_diagnostic_devices_are_whole_devices_within_the_rows_seeded():
    devices = pd.Series(np.repeat([f"d{i:02d}" for i in range(20)], np.arange(1, 21) * 10))
    assert diagnostic_devices(devices, None, seed=0) is None
    assert diagnostic_devices(devices, len(devices), seed=0) is None
    chosen = diagnostic_devices(devices, 500, seed=3)
    assert chosen is not None and 1 < len(chosen) < 20
    rows = devices.isin(chosen).sum()
    assert rows <= 500
    assert diagnostic_devices(devices, 500, seed=3) == chosen  # seeded
    assert diagnostic_devices(devices, 500, seed=4) != chosen
    # At least one device, even when each holds more than max_rows.
    assert len(diagnostic_devices(devices, 1, seed=0)) == 1


@pytest.mark.slow
@pytest.mark.cost(seconds=10)
def test_test_rows_scored_from_parts_equal_the_whole_table(device_forms):
    """Every test row scored part by part (candidate and reference; parts without test
    devices among them) equals scoring the whole table, and the diagnostic sample reads the
    same devices' rows from storage."""
    config, stored_uri, _ = device_forms
    train_run = run_train(config, stored_uri, "none")
    graph = mlflow.onnx.load_model(MlflowClient().get_run(train_run).data.tags[MODEL_URI_TAG])
    names = mlflow.artifacts.load_dict(f"runs:/{train_run}/feature_selection.json")["kept"]
    reference = read_reference(train_run)
    assert reference is not None
    # The same table read whole (a 1e-9 difference in a feature can flip a tree's split).
    tables, spec = read_features(stored_uri, splits=("test",))
    keys = [spec.device_column, spec.time_column, LABEL]
    common = (graph, names, reference, keys, 600, 0, in_this_process, 1)
    whole = evaluated_rows(tables["test"], *common)
    parts = evaluated_rows(stored_locations(stored_uri)["test"], *common)
    pd.testing.assert_frame_equal(parts.scored, whole.scored)
    assert set(parts.scored.columns) == {*keys, PREDICTION, REFERENCE_PREDICTION}
    pd.testing.assert_frame_equal(parts.sample, whole.sample)
    np.testing.assert_array_equal(parts.sample_prediction, whole.sample_prediction)
    assert 0 < len(whole.sample) <= 600 < len(whole.scored)
    sampled = whole.scored[spec.device_column].isin(whole.sample[spec.device_column].unique())
    assert sampled.sum() == len(whole.sample)  # whole devices


def test_training_partitions_leave_out_zero_weights_and_join_a_part_without_healthy_rows(
    tmp_path,
):
    """What each worker loads for the final fit: its parts' rows of non-zero weight, typed as
    LightGBM expects; a part whose kept rows all fail joins its neighbour (each worker's
    LightGBM encodes the labels it holds), and a part with no row kept is left out."""
    frames = [
        pd.DataFrame({"f": [1.0, 2.0, 3.0], LABEL: [0, 1, 0]}),
        pd.DataFrame({"f": [4.0, 5.0], LABEL: [1, 1]}),  # failing rows only
        pd.DataFrame({"f": [6.0, 7.0], LABEL: [0, 0]}),  # every row weighted 0 below
        pd.DataFrame({"f": [8.0, 9.0], LABEL: [0, 1]}),
    ]
    parts, start = [], 0
    for k, frame in enumerate(frames):
        write_part(frame, str(tmp_path), k)
        parts.append(LearningPart(f"{tmp_path}/{part_name(k)}", start, len(frame)))
        start += len(frame)
    y = pd.concat(frames)[LABEL].to_numpy(float)
    stored = StoredLearning(parts, pd.DataFrame({LABEL: y}), 5)
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 1.0])
    items = training_items(stored, y, weights, classification=True)
    assert [urls for urls, _ in items] == [
        [parts[0].url, parts[1].url],
        [parts[3].url],
    ]
    X, labels, kept_weights = load_parts(items[0], ["f"], LABEL, classification=True)
    assert X["f"].dtype == np.float32 and X["f"].tolist() == [1.0, 2.0, 4.0, 5.0]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1, 1]
    assert kept_weights.tolist() == [1.0, 1.0, 1.0, 1.0]
    # Unweighted regression: every part its own partition, every row, float labels.
    items = training_items(stored, y, None, classification=False)
    assert len(items) == 4
    X, labels, none = load_parts(items[2], ["f"], LABEL, classification=False)
    assert labels.dtype == np.float64 and len(X) == 2 and none is None
