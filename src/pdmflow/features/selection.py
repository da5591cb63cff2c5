"""Feature selection inside train (and tune): constant, near-duplicate, then top k by gain.

Hundreds of correlated window statistics on a few thousand rows let trees chase noise; dropping
what carries no extra information is cheap and keeps serving to the columns the model reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.split import learning_folds
from pdmflow.models import lightgbm

# Correlations are estimated on at most this many rows (a seeded sample).
CORRELATION_SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class Selection:
    kept: list[str]
    dropped: dict[str, str]  # feature -> why

    def as_dict(self) -> dict[str, object]:
        return {"kept": self.kept, "dropped": self.dropped}


def drop_constant_and_duplicates(
    X: pd.DataFrame, threshold: float, seed: int
) -> tuple[list[str], dict[str, str]]:
    """Columns left after dropping constants and near-duplicates (|r| > threshold, first kept)."""
    dropped: dict[str, str] = {}
    # Column by column (NaN skipped): a float64 copy of a million training rows is a gigabyte.
    constant = (X.max() == X.min()).to_numpy()
    for name in X.columns[constant]:
        dropped[name] = "constant on the training rows"
    candidates = [
        name for name, is_constant in zip(X.columns, constant, strict=True) if not is_constant
    ]
    if len(X) > CORRELATION_SAMPLE_ROWS:
        rows = np.random.default_rng(seed).choice(len(X), CORRELATION_SAMPLE_ROWS, replace=False)
        sample = X.iloc[np.sort(rows)][candidates]
    else:
        sample = X[candidates]
    correlation = np.abs(np.corrcoef(sample.to_numpy(dtype=np.float64), rowvar=False))
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
    settings = config.features
    kept, dropped = drop_constant_and_duplicates(
        train[feature_names], settings.drop_correlated_above, config.training.seed
    )
    k = settings.select_top_k
    if k is not None and len(kept) > k:
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
        for rank, i in enumerate(order[k:], start=k + 1):
            dropped[kept[i]] = f"gain rank {rank} of {len(kept)} (select_top_k {k})"
        kept = [name for name in kept if name in top]
    return Selection(kept, dropped)


@dataclass(frozen=True)
class LearningSet:
    """What tune and train learn from: the selection, train + validation rows, their folds."""

    selection: Selection
    rows: pd.DataFrame  # the train table, then the validation table
    train_rows: int
    folds: list[tuple[np.ndarray, np.ndarray]]


def learning_set(
    tables: dict[str, pd.DataFrame], spec: FeatureSpec, label: str, config: TenantConfig
) -> LearningSet:
    """The same selection, rows and folds for tune and train (test rows play no part)."""
    train, validation = tables["train"], tables["validation"]
    selection = select_features(train, validation, spec.feature_names, label, config)
    rows = pd.concat([train, validation], ignore_index=True)
    folds = learning_folds(rows, len(train), config, spec.device_column, spec.time_column, label)
    return LearningSet(selection, rows, len(train), folds)
