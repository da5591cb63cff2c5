"""`mlflow run` end to end on a temp SQLite store, then the released model in serving code."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import REPO, SMOKE, free_port, wait_for_http
from mlflow import MlflowClient

from pdmflow.artifacts import read_dataset, read_features
from pdmflow.config import load_config
from pdmflow.evaluation.catalog import evaluate_metric_names
from pdmflow.features.builder import build_features
from pdmflow.serving import FailureScorer, load_feature_spec

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=65)]
MODEL = "pdmflow-smoke-failure"
BIN = Path(sys.executable).parent


def mlflow_run(env, *args):
    return subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """One `mlflow run . -e main` with the smoke config into a fresh store."""
    root = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leftover, None)  # left by earlier in-process tests; mlflow run refuses both
    mlflow.set_tracking_uri(uri)
    config = load_config(SMOKE)
    MlflowClient().create_experiment(config.experiment_name, str(root / "artifacts"))
    result = mlflow_run(
        env, "-e", "main", "--experiment-name", config.experiment_name, "-P", f"config={SMOKE}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield config, env, root
    mlflow.set_tracking_uri(None)


def step_runs(config, step):
    experiment = MlflowClient().get_experiment_by_name(config.experiment_name)
    return MlflowClient().search_runs(
        [experiment.experiment_id],
        f"tags.`pdmflow.step` = '{step}'",
        order_by=["attributes.start_time DESC"],
    )


def test_main_logs_one_parent_with_six_children_and_releases(released):
    config, _, _ = released
    (parent,) = step_runs(config, "main")
    assert parent.data.tags["pdmflow.decision"] == "released"
    assert parent.data.tags.get("mlflow.source.type") == "PROJECT"  # the run mlflow run made
    children = MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["pdmflow.step"] for c in children) == sorted(
        ["ingest", "features", "tune", "train", "evaluate", "promote"]
    )
    (evaluate,) = step_runs(config, "evaluate")
    # Every metric the gates may name (gates.require) is logged, and nothing unlisted.
    logged = set(evaluate.data.metrics)
    assert logged == evaluate_metric_names("classification", champion=False, cv=False)
    assert evaluate.data.metrics["auc"] >= 0.8
    artifacts = {a.path for a in MlflowClient().list_artifacts(evaluate.info.run_id, "plots")}
    assert artifacts == {
        f"plots/{n}"
        for n in (
            "roc_curve.png",
            "precision_recall_curve.png",
            "calibration_curve.png",
            "confusion_matrix.png",
            "score_distribution.png",
            "shap_summary.png",
            "shap_importance_bar.png",
        )
    }
    top = {a.path for a in MlflowClient().list_artifacts(evaluate.info.run_id)}
    assert {"shap_importance.json", "per_device_metrics.csv", "robustness.json"} <= top
    assert evaluate.data.tags["pdmflow.robustness_worst"]

    # The parent tells the story: the evaluate metrics, the headline figures, decision, note.
    for name, value in evaluate.data.metrics.items():
        assert parent.data.metrics[name] == value
    for name in (
        "rows",
        "devices",
        "feature_count",
        "tune_best_validation_average_precision",
        "gates_passed",
    ):
        assert name in parent.data.metrics
    # The reference model beside the candidate, on the same test rows, and the lift.
    for name in ("auc", "average_precision", "f1", "brier_score"):
        lift = parent.data.metrics[name] - parent.data.metrics[f"reference_{name}"]
        assert parent.data.metrics[f"lift_{name}"] == pytest.approx(lift, abs=1e-12)
    assert parent.data.metrics["gates_passed"] == 1
    assert parent.data.tags["pdmflow.registered_version"] == "1"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"**Released**: version 1 of `{MODEL}` is in Production")
    assert "| metric | candidate | reference |" in note
    # The steps' runs and outputs: one tag (JSON) and the note's table, no tag per step.
    steps = json.loads(parent.data.tags["pdmflow.steps"])
    assert list(steps) == ["ingest", "features", "tune", "train", "evaluate", "promote"]
    assert {c.data.tags["pdmflow.step"]: c.info.run_id for c in children} == {
        step: entry["run_id"] for step, entry in steps.items()
    }
    assert steps["promote"]["output"] == "1"
    assert not [
        k for k in parent.data.tags if k.startswith(("pdmflow.step_run.", "pdmflow.output."))
    ]
    assert "| step | run | output |" in note
    for step, entry in steps.items():
        link = f"#/experiments/{parent.info.experiment_id}/runs/{entry['run_id']}"
        assert f"| {step} | [{entry['run_id']}]({link}) | `{entry['output']}` |" in note
    # MLflow 3's evidence: a model-training experiment; on the parent, the dataset it read and
    # the model it trained; the test metrics on that LoggedModel.
    experiment = MlflowClient().get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (ingest,) = step_runs(config, "ingest")
    (parent_dataset,) = parent.inputs.dataset_inputs
    assert parent_dataset.dataset == ingest.inputs.dataset_inputs[0].dataset
    (train,) = step_runs(config, "train")
    (trained,) = train.outputs.model_outputs
    assert [m.model_id for m in parent.outputs.model_outputs] == [trained.model_id]
    model = mlflow.get_logged_model(trained.model_id)
    on_model = {m.key: m.value for m in model.metrics if m.run_id == evaluate.info.run_id}
    assert on_model == evaluate.data.metrics
    # The model evaluate scored is its input (get_run: search_runs leaves model inputs out).
    scored = mlflow.get_run(evaluate.info.run_id).inputs.model_inputs
    assert [m.model_id for m in scored] == [trained.model_id]
    # The parent's own copies of those metrics are not credited to the model a second time.
    assert not [m for m in model.metrics if m.run_id == parent.info.run_id]
    assert "plots/gain_importance.png" in {
        a.path for a in MlflowClient().list_artifacts(train.info.run_id, "plots")
    }
    (promote,) = step_runs(config, "promote")
    card = mlflow.artifacts.load_text(f"runs:/{promote.info.run_id}/model_card.md")
    assert card == MlflowClient().get_model_version(MODEL, "1").description
    assert "| metric | candidate | reference |" in card
    dataset = ingest.inputs.dataset_inputs[0].dataset
    assert dataset.name == "smoke-telemetry" and dataset.digest
    assert dataset.source_type == "run_artifact"
    source = json.loads(dataset.source)
    assert source["uri"] == f"runs:/{ingest.info.run_id}/dataset/telemetry.parquet"
    assert source["origin"].startswith("synthetic://fleet?devices=16")
    (tune,) = step_runs(config, "tune")
    trials = MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{tune.info.run_id}'"
    )
    assert len(trials) == config.tuning.n_trials
    assert "best_validation_average_precision" in tune.data.metrics


def test_production_and_champion_score_the_same(released):
    config, _, _ = released
    (features_run,) = step_runs(config, "features")
    tables, _ = read_features(f"runs:/{features_run.info.run_id}/features")
    # The model's input: a float64 tensor (a pandas frame as pandas holds it) of the features
    # it kept, in its spec's order; pdmflow's feature tables are float32 to save memory.
    kept = load_feature_spec(f"models:/{MODEL}/Production").feature_names
    test = tables["test"][kept].astype("float64")
    production = mlflow.pyfunc.load_model(f"models:/{MODEL}/Production").predict(test)
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(test)
    # A tensor in, a tensor out: {"failure_probability": float32 [N]}.
    assert list(production) == ["failure_probability"]
    probability = production["failure_probability"]
    assert probability.dtype == np.float32 and len(probability) == len(test)
    assert ((probability >= 0) & (probability <= 1)).all()
    np.testing.assert_array_equal(probability, champion["failure_probability"])


def test_raw_telemetry_scorer_agrees_with_the_registered_model(released):
    config, _, _ = released
    (ingest,) = step_runs(config, "ingest")
    telemetry, events = read_dataset(f"runs:/{ingest.info.run_id}/dataset")
    scorer = FailureScorer.load(f"models:/{MODEL}/Production")
    shuffled = telemetry.sample(frac=1, random_state=2)  # any row order
    scored = scorer.score_telemetry(shuffled, events)
    assert len(scored) == telemetry["device_id"].nunique()
    latest = build_features(telemetry, scorer.spec, events).groupby("device_id").tail(1)
    direct = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(
        latest[scorer.spec.feature_names].astype("float64")
    )["failure_probability"]
    np.testing.assert_allclose(scored["failure_probability"].to_numpy(), direct, atol=1e-6)
    assert (scored["predicted_failure"] == (direct >= scorer.metadata["decision_threshold"])).all()


def test_a_step_runs_alone_from_a_given_input(released):
    config, env, _ = released
    (features_run,) = step_runs(config, "features")
    result = mlflow_run(
        env,
        "-e",
        "train",
        "--experiment-name",
        config.experiment_name,
        "-P",
        f"config={SMOKE}",
        "-P",
        "tune_run_id=none",
        "-P",
        f"features_uri=runs:/{features_run.info.run_id}/features",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    latest_train = step_runs(config, "train")[0]
    assert latest_train.data.params["params_source"] == "config"
    assert latest_train.data.tags.get("mlflow.parentRunId") is None


def test_mlflow_run_without_the_tenants_experiment_stops_at_once(released):
    """One place to look: without --experiment-name, mlflow run would leave its own run in
    Default; the step refuses before any work, naming the flag."""
    config, env, _ = released
    before = len(step_runs(config, "ingest"))
    result = mlflow_run(env, "-e", "ingest", "-P", f"config={SMOKE}")  # no --experiment-name
    assert result.returncode != 0
    assert (
        "pdmflow ingest: error: mlflow run logs into experiment 'Default', but tenant 'smoke' "
        "logs only in 'pdmflow-smoke': pass --experiment-name pdmflow-smoke to mlflow run"
    ) in result.stderr
    assert len(step_runs(config, "ingest")) == before  # nothing in the tenant's experiment
    (launcher,) = MlflowClient().search_runs(["0"])
    # Only what MLflow Projects itself logs (its entry-point parameters); nothing of pdmflow's.
    assert set(launcher.data.params) == {"config"} and not launcher.data.metrics
    assert launcher.data.tags["mlflow.note.content"].startswith("Nothing was logged here")
    assert not MlflowClient().list_artifacts(launcher.info.run_id)


def test_mlflow_models_serve_answers_invocations(released):
    config, env, root = released
    (features_run,) = step_runs(config, "features")
    tables, _ = read_features(f"runs:/{features_run.info.run_id}/features")
    kept = load_feature_spec(f"models:/{MODEL}/Production").feature_names
    rows = tables["test"][kept].head(3).astype("float64")
    port = free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/Production",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "serve.log", "w"),
    )

    def invoke(payload: dict) -> object:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["predictions"]

    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        # The README's form (a tensor, rows of numbers in the spec's order), and a frame.
        as_tensor = invoke({"inputs": rows.to_numpy().tolist()})
        as_frame = invoke({"dataframe_split": rows.to_dict(orient="split")})
    finally:
        server.terminate()
        server.wait(30)
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/Production").predict(rows)
    expected = np.asarray(expected["failure_probability"])
    # Either way the answer is {"predictions": {"failure_probability": [...]}}.
    for served in (as_tensor, as_frame):
        np.testing.assert_allclose(served["failure_probability"], expected, atol=1e-6)


def test_the_released_model_declares_its_pinned_requirements(released):
    """The requirements train declares (it no longer lets MLflow infer them) are what serving
    needs to install: MLflow, ONNX, ONNX Runtime and NumPy at this environment's versions."""
    from importlib.metadata import version

    path = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/Production/requirements.txt")
    declared = set(Path(path).read_text().split())
    expected = {f"{name}=={version(name)}" for name in ("mlflow", "numpy", "onnx", "onnxruntime")}
    assert declared == expected


def test_each_step_reruns_alone_on_its_default_latest_input(released):
    """`mlflow run -e <step>` logs the entry point's inputs as given ("latest") on the run the
    step adopts; the step logs what it resolved them to beside them (<name>_resolved), and the
    steps after it (promote's lineage) read that. Last in this file: it registers a version."""
    config, env, _ = released
    ingest = step_runs(config, "ingest")[0]
    for step, extra in (
        ("features", []),
        ("train", ["-P", "tune_run_id=none"]),  # the config's parameters: no tuning
        ("evaluate", []),
        ("promote", []),
    ):
        result = mlflow_run(
            env, "-e", step, "--experiment-name", config.experiment_name, "-P",
            f"config={SMOKE}", *extra,
        )  # fmt: skip
        # promote may reject the candidate (exit 3, which mlflow run reports as 1): its line.
        assert result.returncode == 0 or "not promoted" in result.stderr, result.stderr[-3000:]
    features, train, evaluate = (
        step_runs(config, step)[0] for step in ("features", "train", "evaluate")
    )
    assert features.data.params["data_uri"] == "latest"
    assert features.data.params["data_uri_resolved"] == f"runs:/{ingest.info.run_id}/dataset"
    assert train.data.params["features_uri_resolved"] == f"runs:/{features.info.run_id}/features"
    assert evaluate.data.params["train_run_id_resolved"] == train.info.run_id
    # promote registered the candidate with its lineage, read through the resolved inputs.
    newest = max(
        MlflowClient().search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version)
    )
    assert newest.run_id == train.info.run_id
    assert newest.tags["evaluate_run_id"] == evaluate.info.run_id
