"""Feature selection inside train (and tune): constant, near-duplicate, then top k by gain.

Hundreds of correlated window statistics on a few thousand rows let trees chase noise; dropping
what carries no extra information is cheap and keeps serving to the columns the model reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.split import learning_folds
from pdmflow.models import lightgbm
from pdmflow.models.sampling import Folds, Sample, draw_learning_rows, subset_folds

# Correlations are estimated on at most this many rows (a seeded sample).
CORRELATION_SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class Selection:
    kept: list[str]
    dropped: dict[str, str]  # feature -> why

    def as_dict(self) -> dict[str, object]:
        return {"kept": self.kept, "dropped": self.dropped}


def correlation_rows(rows: int, seed: int) -> np.ndarray:
    """Positions of the train rows correlations are estimated on: at most
    CORRELATION_SAMPLE_ROWS of them, a seeded draw in row order."""
    if rows > CORRELATION_SAMPLE_ROWS:
        return np.sort(
            np.random.default_rng(seed).choice(rows, CORRELATION_SAMPLE_ROWS, replace=False)
        )
    return np.arange(rows)


# (columns, row positions) -> those rows' values of those columns.
SampleReader = Callable[[list[str], np.ndarray], pd.DataFrame]


def drop_constant_and_duplicates(
    X: pd.DataFrame, threshold: float, seed: int
) -> tuple[list[str], dict[str, str]]:
    """Columns left after dropping constants and near-duplicates (|r| > threshold, first kept)."""
    # Column by column (NaN skipped): a float64 copy of a million training rows is a gigabyte.
    return screen_columns(
        X.min(),
        X.max(),
        lambda columns, positions: X[columns].iloc[positions],
        len(X),
        threshold,
        seed,
    )


def screen_columns(
    low: pd.Series,
    high: pd.Series,
    sample: SampleReader,
    rows: int,
    threshold: float,
    seed: int,
) -> tuple[list[str], dict[str, str]]:
    """`drop_constant_and_duplicates` from each column's lowest and highest value over the
    `rows` train rows (NaN skipped; the columns in order) and a reader of the correlation
    sample's rows (`correlation_rows`): no table of every row needed."""
    dropped: dict[str, str] = {}
    constant = (high == low).to_numpy()
    for name in low.index[constant]:
        dropped[name] = "constant on the training rows"
    candidates = [
        name for name, is_constant in zip(low.index, constant, strict=True) if not is_constant
    ]
    values = sample(candidates, correlation_rows(rows, seed))
    correlation = np.abs(np.corrcoef(values.to_numpy(dtype=np.float64), rowvar=False))
    correlation = np.nan_to_num(np.atleast_2d(correlation))
    kept_positions: list[int] = []
    for i, name in enumerate(candidates):
        twins = [j for j in kept_positions if correlation[i, j] > threshold]
        if twins:
            j = twins[0]
            dropped[name] = f"near-duplicate of {candidates[j]} (|r| = {correlation[i, j]:.4f})"
        else:
            kept_positions.append(i)
    return [candidates[i] for i in kept_positions], dropped


# hours_since_failure is kept only when at least this share of the failing training rows
# follow an earlier failure of their device.
MIN_REPEAT_FAILURE_SHARE = 0.5
TIME_SINCE_FAILURE = "hours_since_failure"


def censored_time_since_failure(
    train: pd.DataFrame, feature_names: list[str], label: str, config: TenantConfig
) -> str | None:
    """Why hours_since_failure cannot be learned from these rows, or None when it can.

    Before a device's first known failure the feature sits at its cap, whatever the device's
    real age: on a short history most failures are first failures, so the feature learns "no
    failure seen yet" (when observation began) rather than how failures space out, and a later
    period, full of second failures, reverses it. It is kept when at least
    MIN_REPEAT_FAILURE_SHARE of the failing rows (label 1; RUL: below its cap) follow an earlier
    failure of their device.
    """
    if TIME_SINCE_FAILURE not in feature_names:
        return None
    y = train[label].to_numpy(dtype=float)
    failing = y == 1 if config.task == "classification" else y < config.labels.rul_cap_hours
    if not failing.any():
        return None
    hours = train[TIME_SINCE_FAILURE].to_numpy(dtype=float)[failing]
    share = float(np.mean(hours < config.features.time_since_cap_hours))
    if share >= MIN_REPEAT_FAILURE_SHARE:
        return None
    return (
        f"{share:.0%} of the failing training rows follow an earlier failure of their device "
        f"(needs {MIN_REPEAT_FAILURE_SHARE:.0%}): on first failures it would learn when "
        "observation began, not how failures space out"
    )


def select_features(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_names: list[str],
    label: str,
    config: TenantConfig,
) -> Selection:
    """The features the model will read, in the spec's order, and why the others were dropped.

    Top k (features.select_top_k) ranks by LightGBM gain of a model fitted on the train rows,
    stopped early on the validation rows: the test rows play no part.
    """
    X = train[feature_names]
    kept, dropped = screen_features(
        train,
        X.min(),
        X.max(),
        lambda columns, positions: X[columns].iloc[positions],
        label,
        config,
    )
    return top_k_features(kept, dropped, lambda: (train, validation), label, config)


def screen_features(
    train_keys: pd.DataFrame,
    low: pd.Series,
    high: pd.Series,
    sample: SampleReader,
    label: str,
    config: TenantConfig,
) -> tuple[list[str], dict[str, str]]:
    """(kept, dropped) by the censoring check of hours_since_failure, then constants and
    near-duplicates: from the train rows' label and hours_since_failure (`train_keys`), each
    feature's lowest and highest train value (`low`, `high`, the spec's features in order) and
    a reader of the correlation sample."""
    feature_names = list(low.index)
    censored = censored_time_since_failure(train_keys, feature_names, label, config)
    if censored is not None:
        feature_names = [name for name in feature_names if name != TIME_SINCE_FAILURE]
    kept, dropped = screen_columns(
        low[feature_names],
        high[feature_names],
        sample,
        len(train_keys),
        config.features.drop_correlated_above,
        config.training.seed,
    )
    if censored is not None:
        dropped[TIME_SINCE_FAILURE] = censored
    return kept, dropped


def top_k_features(
    kept: list[str],
    dropped: dict[str, str],
    tables: Callable[[], tuple[pd.DataFrame, pd.DataFrame]],
    label: str,
    config: TenantConfig,
) -> Selection:
    """The screened features cut to features.select_top_k by gain, when set and exceeded
    (`tables`: the train and validation tables, read only then)."""
    k = config.features.select_top_k
    if k is not None and len(kept) > k:
        train, validation = tables()
        model = lightgbm.fit_model(
            config.task,
            train[kept],
            train[label].to_numpy(),
            dict(config.training.params),
            config.training.seed,
            eval_set=(validation[kept], validation[label].to_numpy()),
            early_stopping_rounds=config.training.early_stopping_rounds,
            rul_objective=config.training.rul_objective,
            max_bin=config.training.max_bin,
        )
        gain = model.booster_.feature_importance("gain", iteration=lightgbm.tree_count(model))
        order = np.argsort(-gain, kind="stable")
        top = {kept[i] for i in order[:k]}
        dropped = dict(dropped)
        for rank, i in enumerate(order[k:], start=k + 1):
            dropped[kept[i]] = f"gain rank {rank} of {len(kept)} (select_top_k {k})"
        kept = [name for name in kept if name in top]
    return Selection(kept, dropped)


@dataclass(frozen=True)
class LearningSet:
    """What tune and train learn from: the selection, train + validation rows, their folds.

    `rows` may be a sample of the learning rows (`sample`; `total_rows` of them in all);
    `train_rows` and `folds` then count the sampled rows."""

    selection: Selection
    rows: pd.DataFrame  # the train table, then the validation table
    train_rows: int
    folds: Folds
    total_rows: int = -1
    sample: Sample | None = None

    def sampled(self, max_rows: int | None, seed: int, task: str, label: str) -> LearningSet:
        """These rows cut to `draw_learning_rows`' draw (itself when every row is kept)."""
        sample = draw_learning_rows(
            self.rows[label].to_numpy(float), self.folds, max_rows, seed, task
        )
        if sample.how != "random":
            return replace(self, sample=sample)
        positions = sample.positions
        return LearningSet(
            self.selection,
            self.rows.iloc[positions].reset_index(drop=True),
            int(np.searchsorted(positions, self.train_rows)),
            subset_folds(self.folds, positions, len(self.rows)),
            self.total_rows,
            sample,
        )


def learning_set(
    tables: dict[str, pd.DataFrame], spec: FeatureSpec, label: str, config: TenantConfig
) -> LearningSet:
    """The same selection, rows and folds for tune and train (test rows play no part)."""
    train, validation = tables["train"], tables["validation"]
    selection = select_features(train, validation, spec.feature_names, label, config)
    rows = pd.concat([train, validation], ignore_index=True)
    folds = learning_folds(rows, len(train), config, spec.device_column, spec.time_column, label)
    return LearningSet(selection, rows, len(train), folds, len(rows))
