"""Fit a candidate model: folds with early stopping, out-of-fold predictions, the final fit,
an optional anomaly-score feature, calibration and the decision threshold.

Pure functions over frames: the train and tune steps call them and log what they return.
A `Candidate` is what gets released: one native `predict` and one ONNX graph computing the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pandas as pd
from sklearn.metrics import roc_auc_score

from pdmflow.config import TenantConfig
from pdmflow.engine.base import Engine
from pdmflow.errors import DataValidationError
from pdmflow.evaluation.metrics import classification_metrics, regression_metrics
from pdmflow.evaluation.thresholds import describe_fixed_threshold, describe_threshold
from pdmflow.models import anomaly as anomaly_model
from pdmflow.models import families as model_families
from pdmflow.models.calibration import Calibrator
from pdmflow.models.onnx import compose
from pdmflow.models.sampling import Folds

ANOMALY_FEATURE = "anomaly_score"
FAMILIES = tuple(model_families.FAMILIES)


def fit_family(
    family: str,
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: dict[str, Any],
    config: TenantConfig,
    eval_set: tuple[pd.DataFrame, np.ndarray] | None = None,
    callbacks: list[Any] | None = None,
    early_stopping_rounds: int | None = None,
) -> Any:
    """One fitted estimator of `family`; a family that can (LightGBM) stops early on
    `eval_set` when given, after `early_stopping_rounds` (default
    training.early_stopping_rounds) rounds without gain."""
    return model_families.family(family).fit(
        task, X, y, params, config.training, eval_set, callbacks, early_stopping_rounds
    )


def final_fit(
    family: str,
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    devices: pd.Series,
    params: dict[str, Any],
    config: TenantConfig,
    engine: Engine | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[Any, str]:
    """(the released estimator fitted on every row of X, where it was fitted).

    On an engine with workers and a family that fits on them (LightGBM), one model trained by
    the workers on partitions of whole devices (`devices`: each row's device): "dask". Else
    in this process: "local". No early stopping either way (params set the rounds).
    """
    chosen = model_families.family(family)
    if engine is not None and engine.kind != "local" and chosen.fits_on_cluster:
        estimator = chosen.fit_on_cluster(
            engine,
            task,
            X,
            y,
            devices,
            params,
            config.training,
            config.engine.partition_rows,
            sample_weight,
        )
        return estimator, engine.kind
    estimator = chosen.fit(task, X, y, params, config.training, sample_weight=sample_weight)
    return estimator, "local"


def predict_family(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Failure probability (or RUL hours) from the estimator itself, float64."""
    return model_families.family_of(model).predict(model, X)


def float32_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame[columns]` as float32, built column by column: every estimator fits float32 (as the
    ONNX graph computes), and a float64 copy of a million learning rows is a gigabyte."""
    return pd.DataFrame(
        {c: frame[c].to_numpy(np.float32) for c in columns}, index=frame.index, copy=False
    )


@dataclass
class FoldResult:
    """Out-of-fold predictions (NaN where a row was never validated) and per-fold facts."""

    predictions: np.ndarray
    best_iterations: list[int]
    scores: list[float]
    models: list[Any]
    rounds: list[int]  # the rounds each LightGBM fit boosted (its best iteration + patience)


class _RoundCounter:
    """A LightGBM callback: how many rounds a fit boosted."""

    def __init__(self) -> None:
        self.rounds = 0

    def __call__(self, env: Any) -> None:
        self.rounds += 1


def fold_predictions(
    family: str,
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    folds: Folds,
    params: dict[str, Any],
    config: TenantConfig,
    score: Callable[[np.ndarray, np.ndarray], float],
    after_fold: Callable[[int, list[float]], None] | None = None,
    callbacks: list[Any] | None = None,
    datasets: list[Any] | None = None,
    early_stopping_rounds: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> FoldResult:
    """Fit on each fold's fit rows, stop early and predict on its validation rows.

    `after_fold(k, scores so far)` runs after each fold (tuning prunes there). With
    `datasets` (the family's `fold_datasets` of these folds), the family trains on those
    (LightGBM: prebuilt bins) instead of preparing the rows again: the same models.
    `early_stopping_rounds`: the patience of each fold's fit (default
    training.early_stopping_rounds). `sample_weight`: each row's weight in the fits (not with
    `datasets`); the validation rows stop and score unweighted.
    """
    chosen = model_families.family(family)
    if datasets is not None and sample_weight is not None:
        raise ValueError("fold_predictions: prepared datasets carry no sample weights")
    patience = early_stopping_rounds or config.training.early_stopping_rounds
    predictions = np.full(len(X), np.nan)
    best_iterations, scores, models, rounds = [], [], [], []
    for k, (fit_rows, valid_rows) in enumerate(folds):
        counter = _RoundCounter()
        fold_callbacks = [*(callbacks or []), counter]
        if datasets is not None:
            model, predicted, trees = chosen.fit_fold(
                task, datasets[k], params, config.training, patience, fold_callbacks
            )
            rounds.append(counter.rounds)
            models.append(model)
            predictions[valid_rows] = predicted
            best_iterations.append(trees)
            scores.append(score(y[valid_rows], predicted))
            if after_fold is not None:
                after_fold(k, scores)
            continue
        X_valid, y_valid = X.iloc[valid_rows], y[valid_rows]
        model = chosen.fit(
            task,
            X.iloc[fit_rows],
            y[fit_rows],
            params,
            config.training,
            eval_set=(X_valid, y_valid),
            callbacks=fold_callbacks,
            early_stopping_rounds=patience,
            sample_weight=None if sample_weight is None else sample_weight[fit_rows],
        )
        models.append(model)
        predicted = chosen.predict(model, X_valid)
        predictions[valid_rows] = predicted
        trees = chosen.tree_count(model)
        if trees is not None:  # a family that stops early
            best_iterations.append(trees)
            rounds.append(counter.rounds)
        scores.append(score(y_valid, predicted))
        if after_fold is not None:
            after_fold(k, scores)
    return FoldResult(predictions, best_iterations, scores, models, rounds)


def healthy_rows(y: np.ndarray, config: TenantConfig) -> np.ndarray:
    """Rows far from any failure: label 0, or RUL at its cap."""
    if config.task == "classification":
        return y == 0
    return y >= config.labels.rul_cap_hours


def negative_sample_weights(
    healthy: np.ndarray, rate: float | None, seed: int
) -> np.ndarray | None:
    """Each row's weight in the fits under training.negative_sample_rate: a healthy row is
    kept with probability `rate` (drawn per row from `seed`) and then weighs 1/rate, dropped
    rows weigh 0, every other row 1. None when `rate` is None (every row, unweighted)."""
    if rate is None:
        return None
    kept = np.random.default_rng(seed).random(len(healthy)) < rate
    weights = np.ones(len(healthy))
    weights[healthy] = np.where(kept[healthy], 1.0 / rate, 0.0)
    return weights


# Healthy training rows are scored by forests that did not see them (cross-fitting).
ANOMALY_CROSS_FIT_FOLDS = 5


def anomaly_feature(
    X: pd.DataFrame, y: np.ndarray, train_rows: int, config: TenantConfig
) -> tuple[onnx.ModelProto, np.ndarray]:
    """The Isolation Forest graph that serving runs, and the anomaly score of every row.

    The forest is fitted on the healthy rows of the train table only. Scored by that forest,
    those very rows would look more normal than any row it never saw, and the model would
    learn the difference; so each healthy training row gets the score of a forest fitted on
    the other healthy rows (5 folds), and every other row the released forest's score.
    """
    seed = config.training.seed
    healthy = np.flatnonzero(healthy_rows(y[:train_rows], config))
    if len(healthy) < 2 * ANOMALY_CROSS_FIT_FOLDS:
        raise DataValidationError(
            f"features.anomaly_score: {len(healthy)} healthy training rows (label 0, or RUL "
            f"at labels.rul_cap_hours) to fit the Isolation Forest on; need at least "
            f"{2 * ANOMALY_CROSS_FIT_FOLDS}"
        )
    forest = anomaly_model.fit_isolation_forest(X.iloc[healthy], seed)
    graph = anomaly_model.anomaly_onnx(forest, X.shape[1])
    scores = anomaly_model.anomaly_scores(graph, X)
    chunks = np.array_split(
        np.random.default_rng(seed).permutation(healthy), ANOMALY_CROSS_FIT_FOLDS
    )
    for k, held in enumerate(chunks):
        others = np.setdiff1d(healthy, held)
        fold_forest = anomaly_model.fit_isolation_forest(X.iloc[others], seed + k + 1)
        # Training-only values, never served: the forest's own score is enough here.
        held_rows = X.iloc[held].to_numpy(np.float32)
        scores[held] = -fold_forest.score_samples(held_rows).astype(np.float32)
    return graph, scores


@dataclass
class Candidate:
    """A fitted model as it is released: anomaly feature, estimator, calibration, threshold."""

    family: str
    task: str
    feature_names: list[str]  # the model's input columns, in order
    estimator: Any
    params: dict[str, Any]
    anomaly: onnx.ModelProto | None = None
    calibrator: Calibrator | None = None
    threshold: float | None = None
    trees: int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def estimator_input(self, X: pd.DataFrame) -> pd.DataFrame:
        """The estimator's columns: the input features, plus the anomaly score when used."""
        X = X[self.feature_names]
        if self.anomaly is None:
            return X
        scores = anomaly_model.anomaly_scores(self.anomaly, X)
        return X.assign(**{ANOMALY_FEATURE: scores})

    def predict_uncalibrated(self, X: pd.DataFrame) -> np.ndarray:
        return model_families.family(self.family).predict(self.estimator, self.estimator_input(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The released prediction, natively: calibrated probability or RUL hours."""
        predicted = self.predict_uncalibrated(X)
        return self.calibrator.transform(predicted) if self.calibrator else predicted

    def to_onnx(self) -> onnx.ModelProto:
        """One graph, input `features` [N, len(feature_names)], computing `predict`."""
        n = len(self.feature_names)
        estimator = model_families.family(self.family).to_onnx(
            self.estimator, n + (self.anomaly is not None)
        )
        return compose(estimator, n, anomaly=self.anomaly, calibrator=self.calibrator)


def fold_spread(
    task: str, y: np.ndarray, predictions: np.ndarray, folds: Folds
) -> dict[str, float]:
    """Mean and standard deviation over the folds of each fold's own validation score.

    `cv_auc_mean`/`cv_auc_std` (classification; a fold with one class is left out) or
    `cv_mae_mean`/`cv_mae_std` (regression), from the out-of-fold `predictions`; empty with
    fewer than two folds, where no spread exists.
    """
    if len(folds) < 2:
        return {}
    scores = []
    for _, held in folds:
        truth, predicted = y[held], predictions[held]
        if task == "classification":
            if len(np.unique(truth)) == 2:
                scores.append(roc_auc_score(truth.astype(int), predicted))
        else:
            scores.append(float(np.mean(np.abs(predicted - truth))))
    if len(scores) < 2:
        return {}
    key = "auc" if task == "classification" else "mae"
    return {f"cv_{key}_mean": float(np.mean(scores)), f"cv_{key}_std": float(np.std(scores))}


def threshold_rule(config: TenantConfig) -> str:
    """The rule the threshold is chosen by: training.threshold.rule, except that meet_gates
    with no precision gate (gates.min_precision 0) has nothing to aim at and is the F1 rule."""
    rule = config.training.threshold.rule
    if rule == "meet_gates" and config.gates.min_precision <= 0:
        return "f1"
    return rule


def threshold_recall_target(config: TenantConfig) -> float | None:
    """The recall the threshold rule is given: the recall gate (meet_gates, which falls back
    to F1 when its precision floor leaves less than half of it), or
    training.threshold.recall."""
    if threshold_rule(config) == "meet_gates":
        return config.gates.min_recall
    return config.training.threshold.recall


def threshold_precision_floor(config: TenantConfig) -> float | None:
    """The precision the threshold rule must reach: the gate's plus a margin for the gap
    between out-of-fold and test precision (meet_gates), or training.threshold.precision."""
    rule = config.training.threshold
    if threshold_rule(config) == "meet_gates":
        return min(0.999, config.gates.min_precision + rule.precision_margin)
    return rule.precision


@dataclass(frozen=True)
class Refit:
    """The released model's fit: how many rows it fits (negative sampling applied), and the
    fit itself (params -> (estimator, where it ran: "local" or the engine's kind)). Given to
    `fit_candidate` when the final fit reads other rows than the folds (every learning row,
    where the folds fit a sample of them)."""

    rows: int
    fit: Callable[[dict[str, Any]], tuple[Any, str]]


def rows_refit(
    family: str,
    X: pd.DataFrame,
    y: np.ndarray,
    devices: pd.Series,
    config: TenantConfig,
    engine: Engine | None = None,
) -> Refit:
    """The final fit on these rows (`final_fit`: on the engine's workers where it can), each
    healthy row kept at training.negative_sample_rate and weighted back."""
    training = config.training
    weights = negative_sample_weights(
        healthy_rows(y, config), training.negative_sample_rate, training.seed
    )
    if weights is None:
        fit_X, fit_y, fit_devices, fit_weights = X, y, devices, None
    else:
        rows = np.flatnonzero(weights > 0)
        fit_X, fit_y, fit_devices = X.iloc[rows], y[rows], devices.iloc[rows]
        fit_weights = weights[rows]

    def fit(params: dict[str, Any]) -> tuple[Any, str]:
        return final_fit(
            family, config.task, fit_X, fit_y, fit_devices, params, config, engine, fit_weights
        )

    return Refit(len(fit_y), fit)


def fit_candidate(
    learning: pd.DataFrame,
    train_rows: int,
    folds: Folds,
    feature_names: list[str],
    label: str,
    config: TenantConfig,
    family: str,
    params: dict[str, Any],
    anomaly: bool | None = None,
    engine: Engine | None = None,
    refit: Refit | None = None,
) -> Candidate:
    """Fit the released model on `learning` (the train table, then the validation table).

    `anomaly`: add the Isolation Forest's score as a feature (default features.anomaly_score).

    The out-of-fold predictions (the validation rows, with one fold) fit the calibration and
    choose the threshold. The released model is then refitted on every learning row with the
    folds' median best iteration, scaled by the rows it sees (training.refit); without refit
    and with one fold, the fold's own model (trained on the train rows) is released.
    With training.negative_sample_rate, every fit sees the sampled rows, weighted
    (`negative_sample_weights`). `engine`: where the refit runs (`final_fit`); the fold fits
    run in this process. `refit`: the final fit on other rows than `learning` (every learning
    row, where `learning` is a sample of them; not with the anomaly feature, which the fits
    compute here). The report says where (`training_engine`) and on how many rows.
    """
    task = config.task
    y = learning[label].to_numpy(dtype=float)
    X = float32_columns(learning, feature_names)
    with_anomaly = config.features.anomaly_score if anomaly is None else anomaly
    anomaly_graph = None
    if with_anomaly:
        anomaly_graph, scores = anomaly_feature(X, y, train_rows, config)
        X = X.assign(**{ANOMALY_FEATURE: scores})

    training = config.training
    weights = negative_sample_weights(
        healthy_rows(y, config), training.negative_sample_rate, training.seed
    )
    fit_folds = folds
    if weights is not None:  # each fold fits its sampled rows; every validation row scores
        fit_folds = [(fit_rows[weights[fit_rows] > 0], valid) for fit_rows, valid in folds]
    result = fold_predictions(
        family, task, X, y, fit_folds, params, config, lambda a, b: 0.0, sample_weight=weights
    )
    final_params = dict(params)
    training_engine = "local"
    final_rows = len(fit_folds[0][0])
    if len(folds) == 1 and not training.refit:
        estimator = result.models[0]
    else:
        if refit is None:
            refit = rows_refit(family, X, y, learning[config.schema_.device_column], config, engine)
        elif with_anomaly:
            raise ValueError("fit_candidate: a refit on other rows has no anomaly feature")
        final_rows = refit.rows
        if result.best_iterations:
            # Rounds grow with the rows they fit: scale each fold's best iteration by the
            # share of rows the final fit sees.
            scaled = [
                best * final_rows / len(fit_rows)
                for best, (fit_rows, _) in zip(result.best_iterations, fit_folds, strict=True)
            ]
            ceiling = int(params.get("n_estimators", 100))
            final_params["n_estimators"] = max(1, min(ceiling, round(float(np.median(scaled)))))
        estimator, training_engine = refit.fit(final_params)
    trees = model_families.family(family).tree_count(estimator)

    validated = ~np.isnan(result.predictions)
    oof_y, oof_raw = y[validated], result.predictions[validated]
    candidate = Candidate(
        family=family,
        task=task,
        feature_names=list(feature_names),
        estimator=estimator,
        params=final_params,
        anomaly=anomaly_graph,
        trees=trees,
    )
    report: dict[str, Any] = {
        "training_engine": training_engine,
        "fitted_rows": final_rows,
        "out_of_fold_rows": int(validated.sum()),
        "fold_best_iterations": result.best_iterations,
        "cv": fold_spread(task, y, result.predictions, folds),
    }
    if task == "classification":
        oof_y = oof_y.astype(int)
        method = config.training.calibration
        if method != "none":
            candidate.calibrator = Calibrator(method).fit(oof_raw, oof_y)
            oof_probability = candidate.calibrator.transform(oof_raw)
        else:
            oof_probability = oof_raw
        rule = config.training.threshold
        if config.training.decision_threshold is not None:
            chosen = describe_fixed_threshold(
                oof_y, oof_probability, config.training.decision_threshold
            )
        else:
            chosen = describe_threshold(
                oof_y,
                oof_probability,
                threshold_rule(config),
                precision=threshold_precision_floor(config),
                recall=threshold_recall_target(config),
                missed_failure_cost=rule.missed_failure_cost,
                false_alarm_cost=rule.false_alarm_cost,
            )
        candidate.threshold = float(chosen["decision_threshold"])
        before = classification_metrics(oof_y, oof_raw, candidate.threshold)
        after = classification_metrics(oof_y, oof_probability, candidate.threshold)
        report.update(
            threshold=chosen,
            metrics=after,
            uncalibrated={"brier_score": before["brier_score"], "ece": before["ece"]},
            oof_labels=oof_y,
            oof_uncalibrated=oof_raw,
            oof_probability=oof_probability,
        )
    else:
        labels = config.labels
        report["metrics"] = regression_metrics(
            oof_y, oof_raw, labels.rul_tolerance_hours, labels.critical_hours
        )
    candidate.report = report
    return candidate
