"""tune: an Optuna TPE study over the model families' parameters, scored on the same folds
(or the one validation split) that train uses, with early stopping and pruning between folds.

With `workers` > 1 the study lives in tuning.storage: this process runs one worker and starts
the others as `tune-worker` processes; more can join from other machines (models/tuning.py).
With engine.kind dask the trials run as tasks on the cluster instead, one per worker (or
`workers`), sharing the study on the scheduler (Optuna's DaskStorage, over tuning.storage when
set); this process only creates the study and reads its best trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import optuna
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from optuna.visualization.matplotlib import plot_optimization_history

from pdmflow.artifacts import label_column, latest_input, read_features, stored_locations
from pdmflow.config import TenantConfig
from pdmflow.data.sources import redact_url
from pdmflow.engine import open_engine
from pdmflow.engine.base import MapTasks, in_this_process
from pdmflow.errors import ConfigError
from pdmflow.features.groups import feature_groups
from pdmflow.features.selection import learning_set
from pdmflow.features.stored_learning import stored_learning_set
from pdmflow.models import tuning
from pdmflow.models.families import DEFAULT_FAMILY
from pdmflow.tracking import log_engine, log_step_inputs, step_run

WORKER_TAG = "pdmflow.tune_worker"


def _tuning_data(
    config: TenantConfig,
    features_uri: str,
    max_rows: int | None,
    seed: int,
    map_tasks: MapTasks = in_this_process,
) -> tuple[tuning.TuningData, dict[str, Any]]:
    """The rows trials learn from (at most `max_rows` of the learning rows, drawn with
    `seed`), and the params that say which. Features in storage are read part by part
    (`map_tasks`: on an engine's workers), keeping only the sampled rows."""
    # The learning rows only: trials never see the test split (nor hold it in memory).
    label = label_column(config)
    stored = stored_locations(features_uri)
    if stored is None:
        tables, spec = read_features(features_uri, splits=("train", "validation"))
        every_row = learning_set(tables, spec, label, config)
        del tables
        learning = every_row.sampled(max_rows, seed, config.task, label)
    else:
        _, spec = read_features(features_uri, splits=())
        learning, _ = stored_learning_set(
            stored, spec, label, config, map_tasks, max_rows, [], seed=seed
        )
    kept = learning.selection.kept
    data = tuning.TuningData(
        learning.rows[kept],  # the selected features of the sampled rows alone
        learning.rows[label].to_numpy(float),
        learning.folds,
        feature_groups(spec, kept),
    )
    sample = learning.sample
    assert sample is not None
    if sample.how == "random":
        print(
            f"tune: trials use {len(data.y):,} random rows of {learning.total_rows:,} "
            "(tuning.max_rows); train fits on all of them",
            file=sys.stderr,
        )
    elif sample.how != "all":
        print(
            f"tune: tuning.max_rows {max_rows:,}: trials use every row ({sample.how})",
            file=sys.stderr,
        )
    described = {
        "features_selected": len(kept),
        "learning_rows": learning.total_rows,
        "tuning_rows": len(data.y),
        "tuning_sample": sample.how,
    }
    return data, described


class _TrialRuns:
    """Each trial one MLflow run under the tune run, tagged with the worker that ran it."""

    def __init__(self, worker: tuning.Worker, study_name: str) -> None:
        # The client, not the fluent API: a worker has no active tune run of its own.
        self.client = MlflowClient()
        self.experiment_id = worker.plan.experiment_id
        self.tags = {
            "mlflow.parentRunId": worker.plan.tune_run_id,
            "optuna.study_name": study_name,
            WORKER_TAG: str(worker.index),
            f"{WORKER_TAG}_host": socket.gethostname(),
            f"{WORKER_TAG}_pid": str(os.getpid()),
        }

    def start(self, number: int) -> str:
        tags = {**self.tags, "optuna.trial_number": str(number)}
        return self.client.create_run(
            self.experiment_id, tags=tags, run_name=f"trial-{number}"
        ).info.run_id

    def finish(
        self, run_id: str, state: str, params: dict[str, Any], metrics: dict[str, float]
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
            params=[Param(key, str(value)) for key, value in params.items()],
            tags=[RunTag("optuna.trial_state", state)],
        )
        self.client.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")


def _worker_command(
    config: TenantConfig, study_name: str, folder: str, timeout: float
) -> list[str]:
    """`tune-worker` on the study, with this config written to a file in `folder`."""
    path = Path(folder) / "tenant.yaml"  # the config in hand need not come from a file
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    command = [sys.executable, "-m", "pdmflow.cli", "tune-worker", "--study", study_name]
    return [*command, "--config", str(path), "--timeout", str(timeout)]


def _trials_here_and_in_processes(
    config: TenantConfig,
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    plan: tuning.StudyPlan,
    data: tuning.TuningData,
    workers: int,
    timeout_seconds: float,
) -> float:
    """This process's trials, beside workers - 1 `tune-worker` processes; the seconds its
    fold datasets took to build."""
    worker = tuning.join_study(study_name, storage, plan)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    env.pop("MLFLOW_RUN_ID", None)  # workers log into the tune run's experiment by id
    with (
        tempfile.TemporaryDirectory(prefix="pdmflow-tune-") as folder,
        tuning.worker_processes(
            _worker_command(config, study_name, folder, timeout_seconds),
            workers - 1,
            worker,
            timeout_seconds,
            env,
        ),
    ):
        objective = tuning.Objective(worker, data, config, _TrialRuns(worker, study_name))
        tuning.run_trials(objective, timeout_seconds)
    return objective.dataset_seconds


@dataclasses.dataclass(frozen=True)
class _TrialsOnAWorker:
    """A Dask task: join the study and run trials until its budget is taken, as `tune-worker`
    does, on the worker's own threads; (trials run, seconds to build the fold datasets)."""

    config: TenantConfig
    study_name: str
    storage: Any  # DaskStorage: the study on the scheduler
    tracking_uri: str  # where the trials are logged
    timeout_seconds: float
    data: tuning.TuningData  # the sampled rows the tune step read: no worker reads them again

    def __call__(self) -> tuple[int, float]:
        from distributed import get_worker

        mlflow.set_tracking_uri(self.tracking_uri)
        plan = tuning.read_plan(self.study_name, self.storage, self.config)
        # The worker's threads, whichever machine it is on (not the tune run's share).
        plan = dataclasses.replace(
            plan, host=socket.gethostname(), threads_per_worker=get_worker().state.nthreads
        )
        objective = _join(self.config, self.study_name, self.storage, plan, self.data)
        ran = tuning.run_trials(objective, self.timeout_seconds)
        return ran, objective.dataset_seconds


def _join(
    config: TenantConfig,
    study_name: str,
    storage: Any,
    plan: tuning.StudyPlan,
    data: tuning.TuningData | None = None,
) -> tuning.Objective:
    """A worker joining the study of a running tune run: the plan's rows (`data`, or read
    again here), its place in the study, and the objective its trials call."""
    if data is None:
        data, _ = _tuning_data(config, plan.features_uri, plan.max_rows, plan.seed)
    worker = tuning.join_study(study_name, storage, plan)  # once ready: tune waits for this
    return tuning.Objective(worker, data, config, _TrialRuns(worker, study_name))


def run_tune(
    config: TenantConfig,
    features_uri: str = "latest",
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    workers: int = 1,
) -> str:
    """Run the study; return the tune run id (its best_params.json is what train reads).

    With `workers` > 1, `workers` processes (this one and workers - 1 started here) share the
    study in tuning.storage, its `n_trials` budget and this machine's cores.
    """
    if workers < 1:
        raise ConfigError(f"tune --workers: expected 1 or more, got {workers}")
    on_cluster = config.engine.kind == "dask"  # the study on the scheduler: no storage needed
    if workers > 1 and config.tuning.storage is None and not on_cluster:
        raise ConfigError(
            f"tune --workers {workers}: workers share the study through tuning.storage, which "
            "is null: set it to a database URL (postgresql://...; sqlite:///optuna.db on one host)"
        )
    features_uri = latest_input(config, "features", features_uri)
    n_trials = n_trials or config.tuning.n_trials
    timeout_seconds = timeout_seconds or config.tuning.timeout_seconds
    with open_engine(config) as engine, ExitStack() as stack:
        # Read before the run starts: features that cannot be read leave no tune run.
        data, described = _tuning_data(
            config, features_uri, config.tuning.max_rows, config.training.seed, engine.map_tasks
        )
        run = stack.enter_context(step_run(config, "tune"))
        log_engine(engine)
        if on_cluster:
            # A task per worker (each runs trials until the budget is taken), or `workers`.
            tasks = workers if workers > 1 else int(engine.describe()["engine_workers"])
            storage = stack.enter_context(engine.study_storage(config.tuning.storage))
        else:
            # In memory: one storage object, shared by the study and its worker registry.
            tasks = 0
            storage = config.tuning.storage or optuna.storages.InMemoryStorage()
        study_name = f"{config.tenant_id}-{run.info.run_id}"
        plan = tuning.StudyPlan.for_tune_run(run, features_uri, n_trials, config, tasks or workers)
        log_step_inputs(
            {
                "features_uri": features_uri,
                "n_trials": n_trials,
                "timeout_seconds": timeout_seconds,
                "sampler": "TPE",
                "pruner": "MedianPruner",
                "objective": f"{plan.direction} {plan.metric}",
                "cv_folds": config.split.cv_folds,
                "early_stopping_rounds": tuning.trial_patience(config),
                "max_bin": plan.max_bin,
                "split_by": config.split.by,
                "families": ",".join(plan.families),
                "feature_groups_searched": (
                    ",".join(data.groups) if plan.feature_groups else "no (every group)"
                ),
                **described,
                "max_rows": config.tuning.max_rows,
                "study_name": study_name,
                "storage": redact_url(config.tuning.storage) if config.tuning.storage else "memory",
                "workers": tasks or workers,
                "threads_per_worker": plan.threads_per_worker,
                "trials_on": "dask tasks" if on_cluster else "processes",
            }
        )
        tuning.create_study(study_name, storage, plan, tuning.baseline_trials(plan, data.groups))
        if config.tuning.storage and not on_cluster:
            print(
                f"tune: study {study_name} (join: tune-worker --study {study_name})",
                file=sys.stderr,
            )
        clock = time.perf_counter()
        if on_cluster:
            task = _TrialsOnAWorker(
                config, study_name, storage, mlflow.get_tracking_uri(), timeout_seconds, data
            )
            dataset_seconds = max(seconds for _, seconds in engine.run_tasks(task, tasks))
        else:
            dataset_seconds = _trials_here_and_in_processes(
                config, study_name, storage, plan, data, workers, timeout_seconds
            )
        seconds = time.perf_counter() - clock
        mlflow.log_metric("dataset_seconds", dataset_seconds)

        study = optuna.load_study(study_name=study_name, storage=storage)
        best = tuning.best_choice(study, plan, data.groups)
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_param("best_family", best["family"])
        metrics = tuning.summary(study, plan.metric, cross_validated=len(data.folds) > 1)
        finished = metrics["trials_complete"] + metrics["trials_pruned"]
        metrics.update(tuning_seconds=seconds, trials_per_minute=60 * finished / seconds)
        mlflow.log_metrics(metrics)
        # The release rate is fixed with the tuning, so reproducing this run releases the same.
        best["release_learning_rate"] = config.tuning.release_learning_rate
        mlflow.log_text(json.dumps(best, indent=2), "best_params.json")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = plot_optimization_history(study)
        mlflow.log_figure(axes.figure, "optimization_history.png")
        plt.close(axes.figure)
        return run.info.run_id


def read_best_params(tune_run_id: str) -> dict[str, Any]:
    """{"family": ..., "params": {...}, "release_learning_rate": ...} chosen by a tune run."""
    best = json.loads(mlflow.artifacts.load_text(f"runs:/{tune_run_id}/best_params.json"))
    if "family" not in best:  # written before families existed: LightGBM parameters
        best = {"family": DEFAULT_FAMILY, "params": best}
    return best


def run_tune_worker(
    config: TenantConfig,
    study_name: str,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
) -> None:
    """Join the study of a running tune run (tuning.storage) and run trials until its budget
    is taken; `n_trials` caps this worker's own trials."""
    storage = config.tuning.storage
    if storage is None:
        raise ConfigError(
            "tune-worker joins a study in tuning.storage, which is null: set it to the URL "
            "the tune run uses"
        )
    plan = tuning.read_plan(study_name, storage, config)
    objective = _join(config, study_name, storage, plan)
    timeout_seconds = timeout_seconds or config.tuning.timeout_seconds
    ran = tuning.run_trials(objective, timeout_seconds, n_trials)
    print(f"tune-worker {objective.worker.index}: {ran} trials in study {study_name}")
