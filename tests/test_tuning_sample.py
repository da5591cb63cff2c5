"""tuning.max_rows and training.max_rows: the learning rows a study tunes on and the folds
fit (`LearningSet.sampled`, models/sampling.py `draw_learning_rows`)."""

import numpy as np
import pandas as pd

from pdmflow.features.selection import LearningSet, Selection


def data(n: int, folds, y=None) -> LearningSet:
    labels = np.arange(n) % 2 if y is None else np.asarray(y)
    rows = pd.DataFrame({"f": np.arange(n, dtype=float), "label": labels.astype(float)})
    return LearningSet(Selection(["f"], {}), rows, int(folds[0][0].max()) + 1, folds, n)


def sampled(whole: LearningSet, max_rows, seed, task):
    """(the sampled rows as the old TuningData-like view, the sample)."""
    kept = whole.sampled(max_rows, seed, task, "label")
    return kept, kept.sample


def test_each_fold_keeps_its_share_of_rows_in_their_order():
    # Two expanding folds over 10,000 rows, purged: fit 0-3999 / valid 4100-5999, fit 0-5999 /
    # valid 6100-9999.
    folds = [
        (np.arange(4000), np.arange(4100, 6000)),
        (np.arange(6000), np.arange(6100, 10000)),
    ]
    whole = data(10_000, folds)
    subset, sample = sampled(whole, 2000, seed=1, task="classification")
    assert sample.how == "random" and len(sample.positions) == 2000 == len(subset.rows)
    assert np.all(np.diff(sample.positions) > 0)
    for (fit, valid), (fit_kept, valid_kept) in zip(folds, subset.folds, strict=True):
        # The same rows of X, renumbered into the subset, still in order and apart.
        original = subset.rows.f.to_numpy()
        assert set(original[fit_kept]) <= set(fit) and set(original[valid_kept]) <= set(valid)
        assert original[fit_kept].max() < original[valid_kept].min()
        assert np.all(np.diff(original[valid_kept]) > 0)
        # About the fold's share of the 2,000 rows (binomial spread).
        assert abs(len(fit_kept) - len(fit) / 5) < 100
        assert abs(len(valid_kept) - len(valid) / 5) < 100
    np.testing.assert_array_equal(subset.rows.label, whole.rows.label[sample.positions])
    assert subset.total_rows == 10_000
    # Seeded: the same draw again, another one with another seed.
    np.testing.assert_array_equal(sampled(whole, 2000, 1, "classification")[1].positions,
                                  sample.positions)  # fmt: skip
    assert not np.array_equal(sampled(whole, 2000, 2, "classification")[1].positions,
                              sample.positions)  # fmt: skip


def test_data_within_max_rows_or_without_a_cap_is_kept_whole():
    whole = data(1500, [(np.arange(1000), np.arange(1000, 1500))])
    for max_rows in (1500, None):
        kept, sample = sampled(whole, max_rows, seed=1, task="classification")
        assert kept.rows is whole.rows and sample.how == "all"


def test_a_draw_that_empties_a_fold_or_loses_its_label_value_is_not_used():
    # The second fold validates on two failures only (rows 9000 and 9001): a draw of 10 % of
    # the rows often keeps neither, and classification then tunes on every row.
    y = np.zeros(10_000)
    y[:6000:2] = 1
    y[9000:9002] = 1
    folds = [(np.arange(3000), np.arange(3000, 6000)), (np.arange(6000), np.arange(6000, 10000))]
    whole = data(10_000, folds, y)
    outcomes = set()
    for seed in range(30):
        # Remaining useful life has no label values to lose: its draw always stands.
        drawn = sampled(whole, 1000, seed, "regression")[1]
        assert drawn.how == "random"
        kept, sample = sampled(whole, 1000, seed, "classification")
        if {9000, 9001} & set(drawn.positions.tolist()):
            assert sample.how == "random" and len(kept.rows) == 1000
        else:
            assert kept.rows is whole.rows
            assert (
                sample.how
                == "all: 1,000 random rows leave fold 2 one label value or none to validate on"
            )
        outcomes.add(sample.how == "random")
    assert outcomes == {True, False}  # both cases were drawn
    # A fold left with no rows at all: every row, whatever the task. (The draw depends on the
    # row count, max_rows and seed alone: the same rows as above.)
    tiny = [(np.arange(9990), np.arange(9990, 9992)), (np.arange(9992), np.arange(9992, 10000))]
    for seed in range(10):
        drawn = set(sampled(whole, 1000, seed, "regression")[1].positions.tolist())
        kept, sample = sampled(data(10_000, tiny), 1000, seed, "regression")
        emptied = not drawn & {9990, 9991} or not drawn & set(range(9992, 10_000))
        assert (len(kept.rows) == 10_000) == emptied
        assert sample.how.endswith("or none to validate on") == emptied
