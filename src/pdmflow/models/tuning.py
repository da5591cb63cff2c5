"""Optuna studies shared by `tune` and `tune-worker`: search space, objective, shared budget.

A study lives in tuning.storage under `{tenant_id}-{tune run id}`. Its user attrs (a
`StudyPlan`) hold what a worker on another machine needs to join it. Workers register in a
companion study `<name>.workers`: the storage numbers its trials atomically, so a trial's number
is a unique worker index, which seeds that worker's sampler. MLflow stays out of this module:
the objective reports each trial to a `TrialLog` the step provides.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sklearn.metrics import (
    average_precision_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from pdmflow.config import TenantConfig
from pdmflow.errors import ConfigError, PdmflowError, StepInputError
from pdmflow.evaluation.catalog import TUNING_OBJECTIVES
from pdmflow.models import families as model_families
from pdmflow.models.reference import (
    ALWAYS_READ,
    REFERENCE_FAMILY,
    REFERENCE_GROUPS,
    REFERENCE_PARAMS,
    REFERENCE_TRIAL,
    features_in,
)
from pdmflow.models.threads import share_of_cores
from pdmflow.models.training import Folds, fold_predictions

# Objectives where lower is better (tuning.objective); the others are maximised.
MINIMISED = ("log_loss", "mae", "rmse")
WORKERS_SUFFIX = ".workers"
# Trials that use up the budget. RUNNING counts too: counting only finished trials, each of N
# workers would start one more trial while the last ones run (up to N - 1 over budget).
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def search_space(trial: optuna.Trial, family: str, learning_rate: float | None) -> dict[str, Any]:
    """The brief's parameters of `family` (its `search_space`), in the estimators'
    scikit-learn names; `learning_rate`: tuning.learning_rate (None: searched, if the family
    has one)."""
    return model_families.family(family).search_space(trial, learning_rate)


def objective_of(config: TenantConfig) -> tuple[str, str]:
    """(metric name on the validation rows, direction) a study of this config optimises:
    tuning.objective, or the task's default (TUNING_OBJECTIVES)."""
    name = config.tuning.objective or TUNING_OBJECTIVES[config.task][0]
    return f"validation_{name}", "minimize" if name in MINIMISED else "maximize"


def choose_groups(trial: optuna.Trial, groups: dict[str, list[str]]) -> list[str]:
    """The feature groups a trial reads: each searchable group on or off, the always-read
    ones (raw values) with them."""
    chosen = [g for g in groups if g in ALWAYS_READ]
    for group in groups:
        if group not in ALWAYS_READ and trial.suggest_categorical(f"group_{group}", [True, False]):
            chosen.append(group)
    return chosen


def baseline_trials(plan: StudyPlan, groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The trials every study runs first: the reference model's recipe (its features and
    LightGBM's default shape) and the same shape on every feature group. The study's best is
    then never behind either on the objective. Empty when the reference's family (LightGBM)
    is not among the plan's."""
    if REFERENCE_FAMILY not in plan.families:
        return []
    shape = dict(REFERENCE_TRIAL)
    if len(plan.families) > 1:
        shape["family"] = REFERENCE_FAMILY
    if plan.learning_rate is None:
        shape["learning_rate"] = REFERENCE_PARAMS["learning_rate"]
    if not plan.feature_groups:
        return [shape]
    searched = [g for g in groups if g not in ALWAYS_READ]
    reference = {f"group_{g}": g in REFERENCE_GROUPS for g in searched}
    every = {f"group_{g}": True for g in searched}
    return [{**shape, **reference}, {**shape, **every}]


def families(config: TenantConfig) -> list[str]:
    return list(config.tuning.families) or [config.training.family]


def choose_family(trial: optuna.Trial, candidates: list[str]) -> str:
    if len(candidates) == 1:
        return candidates[0]
    return str(trial.suggest_categorical("family", candidates))


def best_choice(
    study: optuna.Study, plan: StudyPlan, groups: dict[str, list[str]]
) -> dict[str, Any]:
    """{"family": ..., "params": {...}, "feature_groups": [...]} of the study's best trial, as
    train reads it (no feature_groups: every group)."""
    fixed = optuna.trial.FixedTrial(study.best_params)
    family = choose_family(fixed, plan.families)
    best = {"family": family, "params": search_space(fixed, family, plan.learning_rate)}
    if plan.feature_groups:
        best["feature_groups"] = choose_groups(fixed, groups)
    return best


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


@dataclass
class TuningData:
    """The rows every trial fits and scores: selected features, label, folds."""

    X: pd.DataFrame
    y: np.ndarray
    folds: Folds
    # Feature group -> its columns of X (features/groups.py), for trials that choose groups.
    groups: dict[str, list[str]] = field(default_factory=dict)

    def subset(self, positions: np.ndarray) -> TuningData:
        """These rows only (positions ascending), each fold keeping its rows among them."""
        kept = np.zeros(len(self.y), dtype=bool)
        kept[positions] = True
        renumbered = np.cumsum(kept) - 1
        folds = [
            (renumbered[fit[kept[fit]]], renumbered[valid[kept[valid]]])
            for fit, valid in self.folds
        ]
        return TuningData(self.X.iloc[positions], self.y[positions], folds, self.groups)


@dataclass(frozen=True)
class Sample:
    """The learning rows a study tunes on (tuning.max_rows): their positions, and how they
    were chosen ("all", "random", or "all: <why the random rows were not used>")."""

    positions: np.ndarray
    how: str


def sampled(
    data: TuningData, max_rows: int | None, seed: int, task: str
) -> tuple[TuningData, Sample]:
    """`data` on at most `max_rows` of its rows, drawn at random (seeded); train still fits on
    all of them.

    The rows are features already built from each device's history, so any of them can go:
    every fold keeps its share of its fit and validation rows, in their time order (a time
    fold stays purged, a device fold keeps its devices apart). Where the draw would leave a
    fold without rows, or a classification fold with one label value, every row is used.
    """
    n = len(data.y)
    if max_rows is None or n <= max_rows:
        return data, Sample(np.arange(n), "all")
    positions = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    subset = data.subset(positions)
    for k, fold in enumerate(subset.folds, start=1):
        for rows, role in zip(fold, ("fit on", "validate on"), strict=True):
            if len(rows) == 0 or (task == "classification" and len(np.unique(subset.y[rows])) < 2):
                return data, Sample(
                    np.arange(n),
                    f"all: {max_rows:,} random rows leave fold {k} one label "
                    f"value or none to {role}",
                )
    return subset, Sample(positions, "random")


class TrialLog(Protocol):
    """Where each trial is recorded (the step: one MLflow run per trial)."""

    def start(self, number: int) -> str: ...

    def finish(
        self, handle: str, state: str, params: dict[str, Any], metrics: dict[str, float]
    ) -> None: ...


class OverBudget(Exception):
    """A trial another worker's trial already covered; it fails unrun and the worker stops."""


def _score(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The objective's score of one fold's validation rows (`metric`: validation_<name>)."""
    name = metric.removeprefix("validation_")
    if name == "auc":
        return lambda truth, predicted: float(roc_auc_score(truth.astype(int), predicted))
    if name == "average_precision":
        return lambda truth, predicted: float(average_precision_score(truth.astype(int), predicted))
    if name == "log_loss":
        return lambda truth, predicted: float(
            log_loss(truth.astype(int), np.clip(predicted, 1e-7, 1 - 1e-7), labels=[0, 1])
        )
    if name == "rmse":
        return lambda truth, predicted: float(np.sqrt(mean_squared_error(truth, predicted)))
    return lambda truth, predicted: float(mean_absolute_error(truth, predicted))


class Objective:
    """One trial: sample a family and its parameters, fit the folds (pruning between them),
    record it with `fit_seconds`, `log_seconds` (time in the trial log) and, for a family that
    stops early, `rounds_boosted` and `rounds_kept` (over its folds). A family's trials train
    on the fold datasets it prepares once (LightGBM: binned with the plan's `max_bin`), when
    the objective is made (`dataset_seconds`)."""

    def __init__(
        self, worker: Worker, data: TuningData, config: TenantConfig, trial_log: TrialLog
    ) -> None:
        self.worker, self.data, self.config, self.trial_log = worker, data, config, trial_log
        self.threads = worker.plan.threads()
        self.trials_run = 0
        # Each family's fold datasets (LightGBM's bins), built once for all of this worker's
        # trials; None for a family that fits the rows as they are.
        clock = time.perf_counter()
        self.prepared = {
            name: model_families.family(name).fold_datasets(
                config.task,
                data.X,
                data.y,
                data.folds,
                config.training.seed,
                worker.plan.max_bin,
            )
            for name in worker.plan.families
        }
        self.dataset_seconds = time.perf_counter() - clock

    @property
    def datasets(self) -> list[Any] | None:
        """The fold datasets of the first of the plan's families that prepares any (LightGBM's
        bins), None when none does."""
        return next((d for d in self.prepared.values() if d is not None), None)

    def __call__(self, trial: optuna.Trial) -> float:
        plan, folds = self.worker.plan, self.data.folds
        # Two workers may ask at the same moment for the last trial of the budget.
        ahead = self.worker.study.get_trials(deepcopy=False, states=BUDGET_STATES)
        if sum(t.number < trial.number for t in ahead) >= plan.n_trials:
            self.worker.study.stop()
            raise OverBudget(f"the study's {plan.n_trials} trials are taken by other workers")
        self.trials_run += 1
        family = choose_family(trial, plan.families)
        params = search_space(trial, family, plan.learning_rate)
        X = self.data.X
        if plan.feature_groups and self.data.groups:
            read = set(features_in(self.data.groups, choose_groups(trial, self.data.groups)))
            params, X = model_families.family(family).read_only(params, X, read)
        clock = time.perf_counter()
        handle = self.trial_log.start(trial.number)
        log_seconds = time.perf_counter() - clock

        def after_fold(k: int, scores: list[float]) -> None:
            # A trial whose running mean trails the others' stops between folds.
            trial.report(float(np.mean(scores)), k)
            if k < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()

        clock = time.perf_counter()
        metrics: dict[str, float] = {}
        state, pruned = "COMPLETE", None
        try:
            result = fold_predictions(
                family,
                self.config.task,
                X,
                self.data.y,
                folds,
                {**params, "n_jobs": self.threads},
                self.config,
                _score(plan.metric),
                after_fold,
                datasets=self.prepared[family],
                early_stopping_rounds=plan.early_stopping_rounds,
            )
        except optuna.TrialPruned as stopped:
            state, pruned = "PRUNED", stopped
        except Exception:
            self.trial_log.finish(handle, "FAIL", trial.params, {})
            raise
        else:
            value = float(np.mean(result.scores))
            metrics[plan.metric] = value
            if len(folds) > 1:
                metrics[f"cv_{plan.metric}_mean"] = value
                metrics[f"cv_{plan.metric}_std"] = float(np.std(result.scores))
                trial.set_user_attr("cv_std", float(np.std(result.scores)))
            if result.best_iterations:
                trial.set_user_attr("best_iteration", int(np.median(result.best_iterations)))
                # What the trial's fits cost: rounds boosted, of which the models kept.
                metrics["rounds_boosted"] = float(sum(result.rounds))
                metrics["rounds_kept"] = float(sum(result.best_iterations))
        fit_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        # The run's log_seconds cannot count the write that carries it; the trial's attr does.
        metrics.update(fit_seconds=fit_seconds, log_seconds=log_seconds)
        self.trial_log.finish(handle, state, trial.params, metrics)
        log_seconds += time.perf_counter() - clock
        trial.set_user_attr("fit_seconds", fit_seconds)
        trial.set_user_attr("log_seconds", log_seconds)
        if pruned is not None:
            raise pruned
        return value


def run_trials(
    objective: Objective, timeout_seconds: float | None, max_trials: int | None = None
) -> int:
    """Run trials until the study's shared budget is taken (or the timeout, or `max_trials` of
    this worker's own); return how many this worker ran."""
    worker = objective.worker
    budget = worker.plan.n_trials
    taken = len(worker.study.get_trials(deepcopy=False, states=BUDGET_STATES))
    try:
        if taken < budget:
            worker.study.optimize(
                objective,
                n_trials=max_trials,
                timeout=timeout_seconds,
                callbacks=[optuna.study.MaxTrialsCallback(budget, states=BUDGET_STATES)],
                catch=(OverBudget,),
            )
    except BaseException:
        worker.registry.tell(worker.registration, state=TrialState.FAIL)
        raise
    # The registration's value: the trials this worker ran.
    worker.registry.tell(worker.registration, objective.trials_run)
    return objective.trials_run


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
