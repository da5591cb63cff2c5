"""Rollback and the release history, on a real SQLite registry.

The versions are small pyfunc models registered and released exactly as promote does
(`register`, `release`): rollback is registry work, whatever the model inside.
"""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import REPO, SMOKE
from mlflow import MlflowClient

from pdmflow.cli import run
from pdmflow.config import load_config
from pdmflow.errors import StepInputError
from pdmflow.registry import (
    CHAMPION_ALIAS,
    production_version,
    register,
    release,
    release_history,
    rollback,
)

MODEL = load_config(SMOKE).registered_model_name


class Constant(mlflow.pyfunc.PythonModel):
    def __init__(self, value):
        self.value = value

    def predict(self, context, model_input):
        return [self.value] * len(model_input)


def add_version(passed: bool, value: float) -> str:
    # Named: an experiment id another test exported must not be reused in this fresh store.
    experiment = mlflow.set_experiment("pdmflow-rollback-versions")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        # Declared requirements: no environment inference, a second per version saved.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(value), pip_requirements=["mlflow"]
        )
    tags = {"gates_passed": str(passed).lower()}
    if not passed:
        tags["gate.auc"] = "auc: 0.5 >= 0.8 -> FAIL"
    version = str(register(MODEL, info.model_uri, tags, "test version").version)
    if passed:
        release(MODEL, version)
    return version


def stages():
    client = MlflowClient()
    return {
        str(v.version): v.current_stage for v in client.search_model_versions(f"name='{MODEL}'")
    }


def champion():
    return str(MlflowClient().get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version)


def predict_production():
    return mlflow.pyfunc.load_model(f"models:/{MODEL}/Production").predict([[0.0]])[0]


def test_rollback_restores_the_previous_release_and_records_why(tracking_store, monkeypatch):
    monkeypatch.setenv("PDMFLOW_USER", "alice")
    add_version(True, 1.0)
    add_version(False, 9.0)  # rejected: never released, never a rollback target
    add_version(True, 3.0)
    assert stages() == {"1": "Archived", "2": "None", "3": "Production"}

    assert rollback(MODEL, "false alarms on line 4") == ("1", "3")
    assert stages() == {"1": "Production", "2": "None", "3": "Archived"}
    assert champion() == "1" and predict_production() == 1.0
    client = MlflowClient()
    bad, good = client.get_model_version(MODEL, "3"), client.get_model_version(MODEL, "1")
    assert bad.tags["pdmflow.rollback_reason"] == "false alarms on line 4"
    assert bad.tags["pdmflow.rolled_back_by"] == "alice" and bad.tags["pdmflow.rolled_back_at"]
    assert good.tags["pdmflow.restore_reason"] == "false alarms on line 4"

    # Undo: the rolled-back version is only restored by name.
    with pytest.raises(StepInputError, match="no earlier Archived version"):
        rollback(MODEL, "again")
    assert rollback(MODEL, "fixed upstream", to_version="3") == ("3", "1")
    assert champion() == "3" and predict_production() == 3.0

    events = [(e["version"], e["event"]) for e in release_history(MODEL)]
    assert events == [
        ("1", "released"),
        ("2", "rejected"),
        ("3", "released"),
        ("3", "rolled back"),
        ("1", "restored"),
        ("1", "rolled back"),
        ("3", "restored"),
    ]
    rejected = next(e for e in release_history(MODEL) if e["event"] == "rejected")
    assert rejected["reason"] == "failed auc"


def test_rollback_refuses_what_it_cannot_do_and_changes_nothing(tracking_store):
    with pytest.raises(StepInputError, match="has no Production version to roll back"):
        rollback(MODEL, "why")
    add_version(True, 1.0)
    add_version(False, 2.0)
    before = stages()
    for to_version, message in (
        (None, "no earlier Archived version to put back"),
        ("2", "version 2 .* is in stage 'None', not Archived"),
        ("7", "has no version 7"),
        ("1", "version 1 .* is already Production"),
    ):
        with pytest.raises(StepInputError, match=message):
            rollback(MODEL, "why", to_version)
    with pytest.raises(StepInputError, match="--reason is required"):
        rollback(MODEL, "  ")
    assert stages() == before and champion() == "1"
    assert production_version(MODEL).version == 1


def test_cli_rollback_and_status_show_the_history(tracking_store, monkeypatch, capsys):
    add_version(True, 1.0)
    add_version(True, 2.0)
    monkeypatch.setenv("PDMFLOW_USER", "bob")
    assert run(["rollback", "--config", str(SMOKE), "--reason", "drift on pumps"]) == 0
    assert (
        "version 1 is Production again (@champion); version 2 archived" in capsys.readouterr().out
    )
    assert run(["status", "--config", str(SMOKE)]) == 0
    status = capsys.readouterr().out
    assert f"{MODEL}: Production version 1 (@champion -> 1)" in status
    lines = [line.split() for line in status.splitlines() if "bob" in line]
    assert [(line[0], line[2:4]) for line in lines] == [
        ("2", ["rolled", "back"]),
        ("1", ["restored", "bob"]),
    ]
    assert "drift on pumps" in status
    refused = run(["rollback", "--config", str(SMOKE), "--reason", "x", "--to-version", "9"])
    assert refused == 2
    error = capsys.readouterr().err
    assert error == f"pdmflow rollback: error: rollback: model {MODEL} has no version 9\n"
    assert stages() == {"1": "Production", "2": "Archived"}


@pytest.mark.slow
def test_rollback_entry_point_through_mlflow_run(tracking_store):
    add_version(True, 1.0)
    add_version(True, 2.0)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store}
    for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leftover, None)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "--env-manager", "local",
         "-e", "rollback", "--experiment-name", load_config(SMOKE).experiment_name,
         "-P", f"config={SMOKE}", "-P", "reason=bad release; alarms"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert champion() == "1"
    assert (
        MlflowClient().get_model_version(MODEL, "2").tags["pdmflow.rollback_reason"]
        == "bad release; alarms"
    )
    # The rollback is on record in the tenant's experiment: the run mlflow run made.
    experiment = MlflowClient().get_experiment_by_name(load_config(SMOKE).experiment_name)
    (record,) = MlflowClient().search_runs(
        [experiment.experiment_id], "tags.`pdmflow.step` = 'rollback'"
    )
    assert record.data.params["restored_version"] == "1"
    assert record.data.params["archived_version"] == "2"
    assert record.data.params["rollback_reason"] == "bad release; alarms"
    assert record.data.tags["mlflow.source.type"] == "PROJECT"
