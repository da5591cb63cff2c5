"""Optuna trials shared by `tune` and `tune-worker`: search space, objective, the rows they fit.

Each trial picks a model family and its parameters (the family's `search_space`) and fits the
folds; the study it runs in (models/study.py) holds the plan and the shared budget. MLflow stays
out of this module: the objective reports each trial to a `TrialLog` the step provides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from pdmflow.models import families as model_families
from pdmflow.models.reference import (
    ALWAYS_READ,
    REFERENCE_FAMILY,
    REFERENCE_GROUPS,
    REFERENCE_PARAMS,
    REFERENCE_TRIAL,
    features_in,
)
from pdmflow.models.study import (
    BUDGET_STATES,
    FINISHED,
    WORKERS_SUFFIX,
    StudyPlan,
    Worker,
    create_study,
    families,
    join_study,
    objective_of,
    read_plan,
    summary,
    threads_per_worker,
    trial_bins,
    trial_patience,
    worker_processes,
)
from pdmflow.models.training import Folds, fold_predictions

# The study's names too: `tune` and its tests reach both through this module.
__all__ = [
    "BUDGET_STATES",
    "FINISHED",
    "Objective",
    "OverBudget",
    "StudyPlan",
    "TrialLog",
    "TuningData",
    "WORKERS_SUFFIX",
    "Worker",
    "baseline_trials",
    "best_choice",
    "choose_family",
    "choose_groups",
    "create_study",
    "families",
    "join_study",
    "objective_of",
    "read_plan",
    "run_trials",
    "search_space",
    "summary",
    "threads_per_worker",
    "trial_bins",
    "trial_patience",
    "worker_processes",
]


def search_space(trial: optuna.Trial, family: str, learning_rate: float | None) -> dict[str, Any]:
    """The brief's parameters of `family` (its `search_space`), in the estimators'
    scikit-learn names; `learning_rate`: tuning.learning_rate (None: searched, if the family
    has one)."""
    return model_families.family(family).search_space(trial, learning_rate)


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


@dataclass
class TuningData:
    """The rows every trial fits and scores: selected features, label, folds."""

    X: pd.DataFrame
    y: np.ndarray
    folds: Folds
    # Feature group -> its columns of X (features/groups.py), for trials that choose groups.
    groups: dict[str, list[str]] = field(default_factory=dict)


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
