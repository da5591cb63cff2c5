"""Which learning rows a fit sees when not all of them: a seeded sample that keeps every fold
(tuning.max_rows, training.max_rows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Sample:
    """Which learning rows a step fits on (tuning.max_rows, training.max_rows): their
    positions, and how they were chosen ("all", "random", or "all: <why the random rows were
    not used>")."""

    positions: np.ndarray
    how: str


def subset_folds(folds: Folds, positions: np.ndarray, rows: int) -> Folds:
    """Each fold's rows among `positions` (ascending, of `rows` rows), renumbered to them."""
    kept = np.zeros(rows, dtype=bool)
    kept[positions] = True
    renumbered = np.cumsum(kept) - 1
    return [(renumbered[fit[kept[fit]]], renumbered[valid[kept[valid]]]) for fit, valid in folds]


def draw_learning_rows(
    y: np.ndarray, folds: Folds, max_rows: int | None, seed: int, task: str
) -> Sample:
    """At most `max_rows` of the learning rows (labels `y`), drawn at random (seeded).

    The rows are features already built from each device's history, so any of them can go:
    every fold keeps its share of its fit and validation rows, in their time order (a time
    fold stays purged, a device fold keeps its devices apart). Where the draw would leave a
    fold without rows, or a classification fold with one label value, every row is used.
    """
    n = len(y)
    if max_rows is None or n <= max_rows:
        return Sample(np.arange(n), "all")
    positions = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    for k, fold in enumerate(subset_folds(folds, positions, n), start=1):
        for rows, role in zip(fold, ("fit on", "validate on"), strict=True):
            if len(rows) == 0 or (
                task == "classification" and len(np.unique(y[positions][rows])) < 2
            ):
                return Sample(
                    np.arange(n),
                    f"all: {max_rows:,} random rows leave fold {k} one label "
                    f"value or none to {role}",
                )
    return Sample(positions, "random")
