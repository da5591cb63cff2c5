"""Split feature rows by time so that nothing from the future reaches training.

The fleet's time range is cut into train, validation and test periods. Labels look ahead by the
horizon H, so the last H of each period before a boundary is purged: a training row's label
must not depend on failures that happen in the validation period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TimeSplit:
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    purge: pd.Timedelta

    def as_params(self) -> dict[str, str]:
        return {
            "split_validation_start": str(self.validation_start),
            "split_test_start": str(self.test_start),
            "split_purge_hours": str(self.purge / pd.Timedelta(hours=1)),
        }


def time_split(
    times: pd.Series, validation_fraction: float, test_fraction: float, horizon_hours: float
) -> TimeSplit:
    """Boundaries at fractions of the observed time range (not of rows)."""
    start, end = times.min(), times.max()
    span = end - start
    test_start = start + span * (1 - test_fraction)
    validation_start = start + span * (1 - test_fraction - validation_fraction)
    return TimeSplit(validation_start, test_start, pd.Timedelta(hours=horizon_hours))


def assign_split(times: pd.Series, split: TimeSplit) -> pd.Series:
    """'train' / 'validation' / 'test', or 'purged' for rows whose label crosses a boundary."""
    labels = pd.Series("train", index=times.index, dtype="object")
    labels[times >= split.validation_start] = "validation"
    labels[times >= split.test_start] = "test"
    crosses_validation = (times < split.validation_start) & (
        times + split.purge >= split.validation_start
    )
    crosses_test = (times < split.test_start) & (times + split.purge >= split.test_start)
    labels[crosses_validation | crosses_test] = "purged"
    return labels


def time_folds(
    times: pd.Series, n_folds: int, purge: pd.Timedelta
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds in time order: (train rows, validation rows) positions.

    The time range is cut into n_folds + 1 equal periods; fold k validates on period k + 1 and
    trains on everything before it, less the `purge` just before the validation period (labels
    there look into it).
    """
    start, end = times.min(), times.max()
    edges = [start + (end - start) * i / (n_folds + 1) for i in range(n_folds + 2)]
    folds = []
    for k in range(1, n_folds + 1):
        validation = (times >= edges[k]) & (times < edges[k + 1] if k < n_folds else times <= end)
        train = times < edges[k] - purge
        folds.append((np.flatnonzero(train.to_numpy()), np.flatnonzero(validation.to_numpy())))
    return folds
