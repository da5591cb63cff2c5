"""tune --workers N: several processes share one Optuna study in PostgreSQL and its budget."""

import json

import mlflow
import optuna
import pytest
from conftest import cli
from mlflow import MlflowClient
from servers import new_database

from pdmflow.cli import run as run_cli
from pdmflow.config import load_config
from pdmflow.models.lightgbm import at_learning_rate
from pdmflow.models.tuning import WORKERS_SUFFIX, search_space
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train

pytestmark = pytest.mark.slow


def test_two_workers_share_one_study_and_train_takes_its_best(tracking_store, write_config, capsys):
    with new_database("pdmflow_tune") as storage:
        path = write_config({"tuning": {"storage": storage, "timeout_seconds": 600}})
        config = load_config(path)
        features_uri = run_features(config, run_ingest(config))

        done = cli("tune", "--config", str(path), "--workers", "2", "--n-trials", "6")
        assert done.returncode == 0, done.stderr[-3000:]
        tune_run_id = done.stdout.strip()
        tune_run = mlflow.get_run(tune_run_id)
        study_name = tune_run.data.params["study_name"]
        assert study_name == f"smoke-{tune_run_id}"
        study = optuna.load_study(study_name=study_name, storage=storage)
        finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(finished) == 6  # smoke: one validation split, nothing to prune between
        assert study.user_attrs["tune_run_id"] == tune_run_id
        assert study.user_attrs["n_trials"] == 6
        assert study.user_attrs["features_uri"] == features_uri
        # Both workers registered, with their own indexes (hence TPE seeds) and processes.
        registry = optuna.load_study(study_name=study_name + WORKERS_SUFFIX, storage=storage)
        assert sorted(t.number for t in registry.trials) == [0, 1]
        assert len({t.user_attrs["pid"] for t in registry.trials}) == 2

        trials = MlflowClient().search_runs(
            [tune_run.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_run_id}'"
        )
        assert len(trials) == 6
        assert {t.data.tags["pdmflow.tune_worker"] for t in trials} == {"0", "1"}
        assert len({t.data.tags["pdmflow.tune_worker_pid"] for t in trials}) == 2
        assert all(t.data.tags["optuna.trial_state"] == "COMPLETE" for t in trials)
        assert all({"fit_seconds", "log_seconds"} <= set(t.data.metrics) for t in trials)
        assert 0 < tune_run.data.metrics["trial_log_share"] < 1
        assert tune_run.data.params["workers"] == "2"
        # The first trials of the two workers differ: distinct seeds.
        first = {}
        for trial in sorted(trials, key=lambda t: int(t.data.tags["optuna.trial_number"])):
            first.setdefault(trial.data.tags["pdmflow.tune_worker"], trial.data.params)
        assert first["0"] != first["1"]

        # train takes the study's best, through the tune run's best_params.json
        expected = search_space(
            optuna.trial.FixedTrial(study.best_params), "lightgbm", config.tuning.learning_rate
        )
        best = json.loads(mlflow.artifacts.load_text(f"runs:/{tune_run_id}/best_params.json"))
        # The best trial's feature groups: raw values always, the others it switched on.
        switched_on = {k.removeprefix("group_") for k, v in study.best_params.items() if v is True}
        assert set(best.pop("feature_groups")) == {"raw", *switched_on}
        assert best == {
            "family": "lightgbm",
            "params": expected,
            "release_learning_rate": config.tuning.release_learning_rate,
        }
        train_run = mlflow.get_run(run_train(config, features_uri, "latest"))
        assert train_run.data.params["params_source"] == f"tune run {tune_run_id}"
        released = at_learning_rate(expected, config.tuning.release_learning_rate)
        for key, value in released.items():
            assert train_run.data.params[f"lgbm_{key}"] == str(value)

        # The command's own error handling, in this process (a process start is seconds here).
        capsys.readouterr()
        code = run_cli(["tune-worker", "--study", "smoke-no-such-run", "--config", str(path)])
        message = capsys.readouterr().err.strip()
        assert code == 2
        assert "\n" not in message and "study 'smoke-no-such-run' does not exist" in message


def test_several_workers_need_a_shared_storage(tracking_store, write_config, capsys):
    assert run_cli(["tune", "--config", str(write_config()), "--workers", "2"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "tuning.storage" in message


def test_on_dask_the_trials_are_tasks_on_the_workers_sharing_the_study(
    tracking_store, write_config
):
    """engine.kind dask (a LocalCluster of two workers): no tuning.storage needed (the study
    lives on the scheduler); every trial runs in a worker process, none in the tune run's,
    from a task per worker, and train takes the study's best."""
    path = write_config(
        {
            "engine": {"kind": "dask", "n_workers": 2, "threads_per_worker": 1},
            "tuning": {"timeout_seconds": 600},
        }
    )
    config = load_config(path)
    features_uri = run_features(config, run_ingest(config))
    done = cli("tune", "--config", str(path), "--n-trials", "6")
    assert done.returncode == 0, done.stderr[-3000:]
    tune_run_id = done.stdout.strip()
    tune_run = mlflow.get_run(tune_run_id)
    params = tune_run.data.params
    assert params["engine_kind"] == "dask" and params["engine_workers"] == "2"
    assert (params["trials_on"], params["workers"], params["storage"]) == (
        "dask tasks",
        "2",
        "memory",
    )
    assert tune_run.data.tags["pdmflow.engine.dashboard"].startswith("http://")
    trials = MlflowClient().search_runs(
        [tune_run.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_run_id}'"
    )
    assert len(trials) == 6
    assert all(t.data.tags["optuna.trial_state"] == "COMPLETE" for t in trials)
    # Two tasks, each its own worker index and process.
    assert {t.data.tags["pdmflow.tune_worker"] for t in trials} == {"0", "1"}
    pids = {t.data.tags["pdmflow.tune_worker_pid"] for t in trials}
    assert len(pids) == 2
    assert tune_run.data.metrics["trials_complete"] == 6
    assert tune_run.data.metrics["dataset_seconds"] > 0
    # train reads the best trial as with local tuning.
    best_value = max(float(t.data.metrics["validation_average_precision"]) for t in trials)
    assert tune_run.data.metrics["best_validation_average_precision"] == pytest.approx(best_value)
    train_run = mlflow.get_run(
        run_train(load_config(write_config({}, "local.yaml")), features_uri, "latest")
    )
    assert train_run.data.params["params_source"] == f"tune run {tune_run_id}"
