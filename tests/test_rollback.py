"""Rollback and the release history, on a real SQLite registry, in both registry modes.

The versions are small pyfunc models registered and released exactly as promote does
(`register`, `release`): rollback is registry work, whatever the model inside. In aliases mode
the same moves read from @production and the archived tag, and no version ever has a stage.
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
    ALIASES,
    CHAMPION_ALIAS,
    PRODUCTION_ALIAS,
    production_version,
    register,
    release,
    release_history,
    rollback,
    serving_uri,
)
from pdmflow.registry.versions import ARCHIVED_TAG

MODEL = load_config(SMOKE).registered_model_name


@pytest.fixture(params=["stages", "aliases"])
def mode(request):
    return request.param


@pytest.fixture
def tenant(mode, write_config):
    """The smoke tenant's config file in this registry mode."""
    return write_config({"registry": {"mode": mode}})


class Constant(mlflow.pyfunc.PythonModel):
    def __init__(self, value):
        self.value = value

    def predict(self, context, model_input):
        return [self.value] * len(model_input)


def add_version(passed: bool, value: float, mode: str) -> str:
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
        release(MODEL, version, mode)
    return version


def stages(mode: str) -> dict[str, str]:
    """Each version's place: its stage, or in aliases mode what @production and the archived
    tag say (where no version may have a stage)."""
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL}'")
    if mode != ALIASES:
        return {str(v.version): v.current_stage for v in versions}
    assert {v.current_stage for v in versions} == {"None"}
    production = str(client.get_model_version_by_alias(MODEL, PRODUCTION_ALIAS).version)
    return {
        str(v.version): "Production"
        if str(v.version) == production
        else ("Archived" if ARCHIVED_TAG in v.tags else "None")
        for v in versions
    }


def champion():
    return str(MlflowClient().get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version)


def predict_production(mode: str):
    return mlflow.pyfunc.load_model(serving_uri(MODEL, mode)).predict([[0.0]])[0]


def test_rollback_restores_the_previous_release_and_records_why(tracking_store, monkeypatch, mode):
    monkeypatch.setenv("PDMFLOW_USER", "alice")
    add_version(True, 1.0, mode)
    add_version(False, 9.0, mode)  # rejected: never released, never a rollback target
    add_version(True, 3.0, mode)
    assert stages(mode) == {"1": "Archived", "2": "None", "3": "Production"}

    assert rollback(MODEL, "false alarms on line 4", mode=mode) == ("1", "3")
    assert stages(mode) == {"1": "Production", "2": "None", "3": "Archived"}
    assert champion() == "1" and predict_production(mode) == 1.0
    client = MlflowClient()
    bad, good = client.get_model_version(MODEL, "3"), client.get_model_version(MODEL, "1")
    assert bad.tags["pdmflow.rollback_reason"] == "false alarms on line 4"
    assert bad.tags["pdmflow.rolled_back_by"] == "alice" and bad.tags["pdmflow.rolled_back_at"]
    assert good.tags["pdmflow.restore_reason"] == "false alarms on line 4"

    # Undo: the rolled-back version is only restored by name.
    with pytest.raises(StepInputError, match="no earlier archived version"):
        rollback(MODEL, "again", mode=mode)
    assert rollback(MODEL, "fixed upstream", to_version="3", mode=mode) == ("3", "1")
    assert champion() == "3" and predict_production(mode) == 3.0

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


def test_rollback_refuses_what_it_cannot_do_and_changes_nothing(tracking_store, mode):
    with pytest.raises(StepInputError, match="has no Production version to roll back"):
        rollback(MODEL, "why", mode=mode)
    add_version(True, 1.0, mode)
    add_version(False, 2.0, mode)
    before = stages(mode)
    never = "was never released" if mode == ALIASES else "is in stage 'None', not Archived"
    for to_version, message in (
        (None, "no earlier archived version to put back"),
        ("2", f"version 2 .* {never}"),
        ("7", "has no version 7"),
        ("1", "version 1 .* is already Production"),
    ):
        with pytest.raises(StepInputError, match=message):
            rollback(MODEL, "why", to_version, mode)
    with pytest.raises(StepInputError, match="--reason is required"):
        rollback(MODEL, "  ", mode=mode)
    assert stages(mode) == before and champion() == "1"
    assert production_version(MODEL, mode).version == 1


def test_cli_rollback_and_status_show_the_history(
    tracking_store, monkeypatch, capsys, tenant, mode
):
    add_version(True, 1.0, mode)
    add_version(True, 2.0, mode)
    monkeypatch.setenv("PDMFLOW_USER", "bob")
    assert run(["rollback", "--config", str(tenant), "--reason", "drift on pumps"]) == 0
    where = "@production" if mode == ALIASES else "Production"
    assert f"version 1 is {where} again (@champion); version 2 archived" in capsys.readouterr().out
    assert run(["status", "--config", str(tenant)]) == 0
    status = capsys.readouterr().out
    assert f"{MODEL}: {where} version 1 (@champion -> 1)" in status
    assert f"load it: mlflow.pyfunc.load_model('{serving_uri(MODEL, mode)}')" in status
    lines = [line.split() for line in status.splitlines() if "bob" in line]
    assert [(line[0], line[2:4]) for line in lines] == [
        ("2", ["rolled", "back"]),
        ("1", ["restored", "bob"]),
    ]
    assert "drift on pumps" in status
    refused = run(["rollback", "--config", str(tenant), "--reason", "x", "--to-version", "9"])
    assert refused == 2
    error = capsys.readouterr().err
    assert error == f"pdmflow rollback: error: rollback: model {MODEL} has no version 9\n"
    assert stages(mode) == {"1": "Production", "2": "Archived"}


@pytest.mark.slow
def test_rollback_entry_point_through_mlflow_run(tracking_store):
    add_version(True, 1.0, "stages")
    add_version(True, 2.0, "stages")
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
