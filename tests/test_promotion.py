"""Release decisions against a real SQLite tracking store and registry."""

import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import LENIENT_GATES, SMOKE, forget_experiment
from mlflow import MlflowClient

from pdmflow.config import load_config
from pdmflow.errors import GateFailure
from pdmflow.registry import CHAMPION_ALIAS
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.monitor import run_monitor
from pdmflow.steps.pipeline import run_pipeline
from pdmflow.steps.promote import run_promote
from pdmflow.steps.score import run_score
from pdmflow.steps.train import run_train

pytestmark = pytest.mark.cost(seconds=230)
MODEL = "pdmflow-smoke-failure"


def tracking_store_dir(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///")).parent


def versions(client):
    return {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}


@pytest.fixture(scope="module")
def released_once(tmp_path_factory):
    """A store where the smoke config's first pipeline released version 1, built once for the
    file (a pipeline is the costly part of these tests)."""
    root = tmp_path_factory.mktemp("released")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.chdir(root)  # the artifact root ./mlruns, absolute in the store
        mlflow.set_tracking_uri(uri)
        try:
            assert run_pipeline(load_config(SMOKE), n_trials=2) == "1"
        finally:
            mlflow.set_tracking_uri(None)
            forget_experiment()
    return root / "mlflow.db"


@pytest.fixture
def champion_store(released_once, tracking_store):
    """This test's own copy of `released_once`'s store: version 1 released from the smoke
    config. Its runs' artifacts stay where that pipeline wrote them (read here, never
    changed); new runs write theirs beside them under their own run ids."""
    shutil.copyfile(released_once, tracking_store_dir(tracking_store) / "mlflow.db")
    assert versions(MlflowClient())["1"].current_stage == "Production"
    return tracking_store


@pytest.mark.parametrize("mode", ["stages", "aliases"])
def test_passing_candidate_replaces_the_champion(request, write_config, mode):
    config = load_config(write_config({"registry": {"mode": mode}}))
    if mode == "stages":  # the smoke config's own mode: its version 1 is the shared one
        tracking_store = request.getfixturevalue("champion_store")
    else:
        tracking_store = request.getfixturevalue("tracking_store")
        assert run_pipeline(config, n_trials=2) == "1"
    assert run_pipeline(config, n_trials=2) == "2"
    client = MlflowClient()
    by_version = versions(client)
    if mode == "aliases":  # no stage ever; @production moved, the old one tagged archived
        assert {v.current_stage for v in by_version.values()} == {"None"}
        assert str(client.get_model_version_by_alias(MODEL, "production").version) == "2"
        assert "pdmflow.archived_at" in by_version["1"].tags
        assert "pdmflow.archived_at" not in by_version["2"].tags
        assert "staging" not in client.get_registered_model(MODEL).aliases
        # Serving, batch scoring and monitoring find the release by @production.
        scored = run_score(config, str(tracking_store_dir(tracking_store) / "scores.csv"))
        assert scored.model_version == "2" and scored.metrics["devices_scored"] > 0
        assert run_monitor(config).model_version == "2"
    else:
        assert by_version["1"].current_stage == "Archived"
        assert by_version["2"].current_stage == "Production"
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "2"
    assert by_version["2"].tags["gates_passed"] == "true"
    assert "pass" in by_version["2"].tags["gate.not_worse_than_champion"]
    card = by_version["2"].description
    where = "@production" if mode == "aliases" else "Production"
    assert card.startswith(f"# {MODEL} version 2\n\n**Released** to {where}: every gate passed")
    for section in ("## Data", "## Features and model", "## Gates", "## Robustness"):
        assert section in card
    # Same models, same rows: the bootstrap interval of the AUC difference sits around 0.
    assert "Champion comparison: AUC " in card and "Production version 1" in card

    # One parent per pipeline with the six steps as children.
    experiment = client.get_experiment_by_name(config.experiment_name)
    runs = client.search_runs([experiment.experiment_id], "tags.`pdmflow.step` = 'main'")
    assert len(runs) == 2
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'"
    )
    assert sorted(r.data.tags["pdmflow.step"] for r in children) == sorted(
        ["ingest", "features", "tune", "train", "evaluate", "promote"]
    )


def test_candidate_failing_a_gate_is_registered_but_not_released(champion_store, write_config):
    # AUC 0.9999 no model here reaches; a precision gate of 0.999 is paid for in recall
    # (meet_gates aims at it) or, past its reach, missed itself (the F1 fallback).
    strict = load_config(write_config({"gates": {"min_auc": 0.9999, "min_precision": 0.999}}))
    with pytest.raises(GateFailure, match=r"version 2 not promoted: failed gates auc") as failure:
        run_pipeline(strict, n_trials=2)
    failed = str(failure.value).split("failed gates ")[1].split(", ")
    client = MlflowClient()
    rejected = versions(client)["2"]
    assert rejected.current_stage == "None"
    assert rejected.tags["gates_passed"] == "false"
    # The message names exactly the gates the version's tags mark FAIL.
    gates = {k.removeprefix("gate."): v for k, v in rejected.tags.items() if k.startswith("gate.")}
    assert sorted(g for g, verdict in gates.items() if "FAIL" in verdict) == sorted(failed)
    assert {"recall", "precision"} & set(failed)
    assert rejected.description.startswith(
        f"# {MODEL} version 2\n\n**Not released**: failed auc, recall"
    )
    assert "## Known limitations" in rejected.description
    assert versions(client)["1"].current_stage == "Production"
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "1"


def test_candidate_worse_than_the_champion_is_not_released(champion_store, write_config):
    weak = load_config(
        write_config(
            {
                "training": {"params": {"n_estimators": 2, "num_leaves": 2, "is_unbalance": True}},
                "gates": {
                    "min_auc": 0.5,
                    "min_precision": 0.0,
                    "min_recall": 0.0,
                    "max_noise_auc_drop": None,
                },
            }
        )
    )
    train_run_id = run_train(weak, "latest", "none")
    evaluate_run_id = run_evaluate(weak, train_run_id)
    metrics = mlflow.get_run(evaluate_run_id).data.metrics
    assert metrics["auc"] < metrics["champion_auc"]
    with pytest.raises(GateFailure, match=r"failed gates not_worse_than_champion$"):
        run_promote(weak, evaluate_run_id)
    by_version = versions(MlflowClient())
    assert by_version["2"].current_stage == "None"
    assert by_version["1"].current_stage == "Production"


def test_promote_refuses_an_evaluation_against_a_stale_champion(champion_store):
    config = load_config(SMOKE)
    stale = run_evaluate(config, "latest")  # compared against version 1
    run_pipeline(config, n_trials=2)  # version 2 is now Production
    with pytest.raises(
        Exception,
        match="Production changed since evaluation: run evaluate again .*Production is now 2",
    ):
        run_promote(config, stale)


def test_champion_is_compared_only_on_devices_it_never_learned_from(tracking_store, write_config):
    from pdmflow.artifacts import read_features, read_split_membership
    from pdmflow.steps.features import run_features

    relaxed = {
        "min_auc": 0.5,
        "min_precision": 0.0,
        "min_recall": 0.0,
        "max_noise_auc_drop": None,
    }
    split = {"by": "device", "test_fraction": 0.3, "cv_folds": 0}
    first = load_config(write_config({"split": split, "gates": relaxed}, name="first.yaml"))
    assert run_pipeline(first, n_trials=1) == "1"
    champion_features = mlflow.get_run(versions(MlflowClient())["1"].run_id).data.tags[
        "pdmflow.features_uri"
    ]
    learned = read_split_membership(champion_features)["devices"]
    champion_learned = {*learned["train"], *learned["validation"]}

    # Another split seed: some of the new test devices are ones the champion learned from.
    reseeded = load_config(
        write_config({"split": {**split, "seed": 5}, "gates": relaxed}, name="second.yaml")
    )
    features_uri = run_features(reseeded, "latest")
    evaluate_run = mlflow.get_run(run_evaluate(reseeded, run_train(reseeded, features_uri, "none")))
    test = read_features(features_uri)[0]["test"]
    seen = set(test["device_id"]) & champion_learned
    assert seen and set(test["device_id"]) - champion_learned  # both kinds are present
    unseen_rows = int((~test["device_id"].isin(champion_learned)).sum())
    metrics = evaluate_run.data.metrics
    assert metrics["champion_comparison_rows"] == unseen_rows < len(test)
    assert "candidate_auc_on_champion_rows" in metrics and "champion_auc" in metrics
    how = evaluate_run.data.tags["pdmflow.champion_rows"]
    assert how.startswith(f"{len(seen)} test device(s) the champion trained or validated on")
    report = mlflow.artifacts.load_dict(f"runs:/{evaluate_run.info.run_id}/evaluation_report.json")
    assert report["champion"]["rows"] == how


def test_latency_gate_reads_one_device_scored_from_raw_readings(tracking_store, write_config):
    """evaluate times the serving path on the model as serving loads it; the gate reads the
    one-device figure: a bound under it fails the candidate on that gate alone."""
    from pdmflow.steps.features import run_features
    from pdmflow.steps.ingest import run_ingest

    quick = {"evaluation": {"robustness": False}, "gates": LENIENT_GATES}
    config = load_config(write_config(quick))
    run_ingest(config)
    run_features(config, "latest")
    evaluate_run_id = run_evaluate(config, run_train(config, "latest", "none"))
    metrics = mlflow.get_run(evaluate_run_id).data.metrics
    for name in ("onnx", "pyfunc", "device", "batch"):
        assert 0 < metrics[f"latency_{name}_p50_ms"] <= metrics[f"latency_{name}_p99_ms"]
    assert metrics["latency_batch_devices"] == config.evaluation.latency_batch_devices
    assert metrics["throughput_devices_per_s"] > 0
    # The device path (validation, features, model) costs more than one model call.
    assert metrics["latency_device_p50_ms"] > metrics["latency_pyfunc_p50_ms"]
    bound = metrics["latency_device_p99_ms"] / 2
    tight = {**quick, "gates": {**LENIENT_GATES, "max_latency_p99_ms": bound}}
    with pytest.raises(GateFailure, match=r"failed gates latency_device_p99_ms$"):
        run_promote(load_config(write_config(tight, name="tight.yaml")), evaluate_run_id)
    rejected = versions(MlflowClient())["1"]
    assert rejected.current_stage == "None"
    assert "FAIL" in rejected.tags["gate.latency_device_p99_ms"]
