"""The Optuna study that `tune` creates and `tune-worker`s join: its plan, the workers and the
trial budget they share.

A study lives in tuning.storage under `{tenant_id}-{tune run id}`. Its user attrs (a
`StudyPlan`) hold what a worker on another machine needs to join it. Workers register in a
companion study `<name>.workers`: the storage numbers its trials atomically, so a trial's number
is a unique worker index, which seeds that worker's sampler.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna
from optuna.trial import TrialState

from pdmflow.config import TenantConfig
from pdmflow.errors import ConfigError, PdmflowError, StepInputError
from pdmflow.evaluation.catalog import LOWER_IS_BETTER, TUNING_OBJECTIVES
from pdmflow.models.threads import share_of_cores

WORKERS_SUFFIX = ".workers"


# Trials that use up the budget. RUNNING counts too: counting only finished trials, each of N
# workers would start one more trial while the last ones run (up to N - 1 over budget).
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def objective_of(config: TenantConfig) -> tuple[str, str]:
    """(metric name on the validation rows, direction) a study of this config optimises:
    tuning.objective, or the task's default (TUNING_OBJECTIVES)."""
    name = config.tuning.objective or TUNING_OBJECTIVES[config.task][0]
    return f"validation_{name}", "minimize" if name in LOWER_IS_BETTER else "maximize"


def families(config: TenantConfig) -> list[str]:
    return list(config.tuning.families) or [config.training.family]


def trial_patience(config: TenantConfig) -> int:
    """Early-stopping rounds of a trial's folds: tuning's, else training's."""
    return config.tuning.early_stopping_rounds or config.training.early_stopping_rounds


def trial_bins(config: TenantConfig) -> int:
    """LightGBM's histogram bins per feature in a trial: tuning's, else training's."""
    return config.tuning.max_bin or config.training.max_bin


def threads_per_worker(workers: int) -> int:
    """Estimator threads for each of `workers` processes sharing this machine's cores."""
    return share_of_cores(workers)


@dataclass(frozen=True)
class StudyPlan:
    """What a joining worker needs, kept in the study's user attrs."""

    tune_run_id: str
    experiment_id: str
    features_uri: str
    n_trials: int  # the budget shared by all workers
    metric: str
    direction: str
    task: str
    families: list[str]
    learning_rate: float | None  # LightGBM's rate in every trial; None: searched
    early_stopping_rounds: int  # each fold's patience in a trial
    max_rows: int | None  # the rows the trials tune on (see `sampled`); None: all
    max_bin: int  # LightGBM's histogram bins per feature in every trial
    feature_groups: bool  # trials choose the feature groups they read
    seed: int
    host: str  # the machine the tune run started its workers on ...
    threads_per_worker: int  # ... and the threads each of them uses there

    @classmethod
    def for_tune_run(
        cls, run: Any, features_uri: str, n_trials: int, config: TenantConfig, workers: int
    ) -> StudyPlan:
        """The plan of the study a tune run (an MLflow Run) creates for `workers` workers."""
        metric, direction = objective_of(config)
        return cls(
            tune_run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            features_uri=features_uri,
            n_trials=n_trials,
            metric=metric,
            direction=direction,
            task=config.task,
            families=families(config),
            learning_rate=config.tuning.learning_rate,
            early_stopping_rounds=trial_patience(config),
            max_rows=config.tuning.max_rows,
            max_bin=trial_bins(config),
            feature_groups=config.tuning.feature_groups,
            seed=config.training.seed,
            host=socket.gethostname(),
            threads_per_worker=threads_per_worker(workers),
        )

    def threads(self) -> int:
        """A worker on the tune run's machine shares its cores; elsewhere it uses all of its own."""
        if socket.gethostname() == self.host:
            return self.threads_per_worker
        return threads_per_worker(1)


@dataclass
class Worker:
    """This process's place in a study: the study with its own sampler, and its index."""

    study: optuna.Study
    plan: StudyPlan
    index: int
    registry: optuna.Study
    registration: optuna.Trial

    def joined(self) -> int:
        """Workers registered in the study so far (this one included)."""
        return len(self.registry.get_trials(deepcopy=False))


def create_study(
    name: str,
    storage: str | optuna.storages.BaseStorage,
    plan: StudyPlan,
    first_trials: list[dict[str, Any]] | None = None,
) -> None:
    """Create the study and its worker registry; store the plan in the study's user attrs;
    queue `first_trials` (e.g. `baseline_trials`) to run before the sampler's own."""
    study = optuna.create_study(study_name=name, storage=storage, direction=plan.direction)
    for key, value in asdict(plan).items():
        study.set_user_attr(key, value)
    for params in first_trials or []:
        study.enqueue_trial(params, skip_if_exists=True)
    optuna.create_study(study_name=name + WORKERS_SUFFIX, storage=storage)


def read_plan(
    name: str, storage: str | optuna.storages.BaseStorage, config: TenantConfig
) -> StudyPlan:
    """The plan of study `name`; a one-line error when there is no such tune study."""
    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        raise StepInputError(
            f"study '{name}' does not exist in tuning.storage: pass the name the tune run "
            "printed (its param study_name)"
        ) from None
    # A study from before these settings searched the rate (learning_rate None), tuned on
    # every row with training's patience and LightGBM's own 255 bins.
    older = {
        "learning_rate": None,
        "max_rows": None,
        "early_stopping_rounds": config.training.early_stopping_rounds,
        "max_bin": 255,
        "feature_groups": False,
    }
    attrs = {**older, **attrs}
    missing = [f.name for f in fields(StudyPlan) if f.name not in attrs]
    if missing:
        raise StepInputError(
            f"study '{name}' was not created by `tune` (no user attr {missing[0]})"
        )
    plan = StudyPlan(**{f.name: attrs[f.name] for f in fields(StudyPlan)})
    if plan.task != config.task:
        raise ConfigError(
            f"task is {config.task} in this config, but study '{name}' tunes {plan.task}: "
            "pass the config the tune run used"
        )
    return plan


def join_study(name: str, storage: str | optuna.storages.BaseStorage, plan: StudyPlan) -> Worker:
    """Register in study `name` and load it with a sampler seeded by the worker index."""
    registry = optuna.load_study(
        study_name=name + WORKERS_SUFFIX, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    registration = registry.ask()
    registration.set_user_attr("host", socket.gethostname())
    registration.set_user_attr("pid", os.getpid())
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        # Distinct seeds: workers must not propose the same startup trials.
        sampler=optuna.samplers.TPESampler(seed=plan.seed + registration.number),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    return Worker(study, plan, registration.number, registry, registration)


@contextmanager
def worker_processes(
    command: list[str], count: int, worker: Worker, timeout: float, env: dict[str, str]
) -> Iterator[None]:
    """`count` worker processes running `command`: started, and joined in the study, on entry;
    awaited on exit (a failed one is an error once the others are done)."""
    if count == 0:
        yield
        return
    # Their stdout (a summary line) goes to stderr: tune's stdout is its run id alone.
    processes = [subprocess.Popen(command, env=env, stdout=2) for _ in range(count)]
    try:
        # Start together: alone on the cores, this worker would use only its share of them
        # and could take a small study's whole budget before the others have loaded.
        deadline = time.monotonic() + timeout
        while worker.joined() <= count and time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(0.2)
        yield
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    finally:
        failed = [code for code in (p.wait() for p in processes) if code != 0]
    if failed:
        raise PdmflowError(
            f"tune: {len(failed)} of {count} tune-worker processes failed (exit status "
            f"{failed[0]}, output above); the study keeps their finished trials"
        )


def summary(study: optuna.Study, metric: str, cross_validated: bool) -> dict[str, float]:
    """The tune run's metrics: best score (and its CV spread, rounds), trial counts, and
    `trial_log_share`: the share of the finished trials' time spent in the trial log."""
    best = study.best_trial.user_attrs
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    timed = [t for t in finished if "log_seconds" in t.user_attrs and t.duration]
    trial_seconds = sum(t.duration.total_seconds() for t in timed)
    log_seconds = sum(t.user_attrs["log_seconds"] for t in timed)
    states = [t.state for t in finished]
    return {
        f"best_{metric}": float(study.best_value),
        **({"best_cv_std": best["cv_std"]} if cross_validated else {}),
        **({"best_iteration": best["best_iteration"]} if "best_iteration" in best else {}),
        "trials_complete": states.count(TrialState.COMPLETE),
        "trials_pruned": states.count(TrialState.PRUNED),
        "trial_log_share": log_seconds / trial_seconds if trial_seconds else 0.0,
    }
