"""Release decisions against a real SQLite tracking store and registry."""

import mlflow
import pytest
from conftest import SMOKE
from mlflow import MlflowClient

from pdmflow.config import load_config
from pdmflow.errors import GateFailure
from pdmflow.registry import CHAMPION_ALIAS
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.pipeline import run_pipeline
from pdmflow.steps.promote import run_promote
from pdmflow.steps.train import run_train

MODEL = "pdmflow-smoke-failure"


def versions(client):
    return {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}


def test_passing_candidate_replaces_the_champion(tracking_store):
    config = load_config(SMOKE)
    assert run_pipeline(config, n_trials=2) == "1"
    assert run_pipeline(config, n_trials=2) == "2"
    client = MlflowClient()
    by_version = versions(client)
    assert by_version["1"].current_stage == "Archived"
    assert by_version["2"].current_stage == "Production"
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "2"
    assert by_version["2"].tags["gates_passed"] == "true"
    assert "pass" in by_version["2"].tags["gate.not_worse_than_champion"]
    assert by_version["2"].description.startswith("Released: every gate passed")

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


def test_candidate_failing_a_gate_is_registered_but_not_released(tracking_store, write_config):
    assert run_pipeline(load_config(SMOKE), n_trials=2) == "1"
    strict = load_config(write_config({"gates": {"min_auc": 0.9999, "min_precision": 0.999}}))
    with pytest.raises(GateFailure, match=r"version 2 not promoted: failed gates auc, precision"):
        run_pipeline(strict, n_trials=2)
    client = MlflowClient()
    rejected = versions(client)["2"]
    assert rejected.current_stage == "None"
    assert rejected.tags["gates_passed"] == "false"
    assert "FAIL" in rejected.tags["gate.auc"] and "pass" in rejected.tags["gate.recall"]
    assert rejected.description.startswith("Not released: failed auc, precision")
    assert versions(client)["1"].current_stage == "Production"
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "1"


def test_candidate_worse_than_the_champion_is_not_released(tracking_store, write_config):
    assert run_pipeline(load_config(SMOKE), n_trials=2) == "1"
    weak = load_config(
        write_config(
            {
                "training": {"params": {"n_estimators": 2, "num_leaves": 2, "is_unbalance": True}},
                "gates": {"min_auc": 0.5, "min_precision": 0.0, "min_recall": 0.0},
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


def test_promote_refuses_an_evaluation_against_a_stale_champion(tracking_store):
    config = load_config(SMOKE)
    run_pipeline(config, n_trials=2)
    stale = run_evaluate(config, "latest")  # compared against version 1
    run_pipeline(config, n_trials=2)  # version 2 is now Production
    with pytest.raises(Exception, match="Production is now 2: run evaluate again"):
        run_promote(config, stale)
