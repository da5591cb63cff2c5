"""Statistical champion/challenger comparison: a paired bootstrap over device blocks.

Rows of one device are not independent (consecutive readings share the device's state), so a
row-level bootstrap would understate the uncertainty. Here whole devices are resampled: each
resample draws as many devices as there are, with replacement, and every row of a drawn device
enters once per draw. Both models are scored on the same resampled rows (paired), and the
statistic is the difference candidate - champion of the task's metric:

- AUC: candidate AUC - champion AUC (positive: the candidate ranks better);
- MAE: candidate MAE - champion MAE (negative: the candidate errs less).

The interval is the percentile interval of the resampled differences. For AUC, a resample
whose rows hold a single class has no AUC: it is skipped (not redrawn) and counted, so
`resamples_used` can be below `n_resamples`.

Fast: a resample is a vector of device multiplicities (how often each device was drawn), so a
metric on it is a weighted metric over the original rows, and no rows are copied. The AUC of
every resample is a quadratic form in those multiplicities over a (device x device) matrix of
correctly ordered positive-negative pairs, counted once (ties one half, as in
`sklearn.metrics.roc_auc_score`); the MAE a ratio of two matrix-vector products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Metric = Literal["auc", "mae"]


@dataclass(frozen=True)
class BootstrapResult:
    """A paired device-block bootstrap of candidate - champion (see the module docstring).

    `difference`: the metric difference on all rows; `low`, `high`: the percentile interval of
    the resampled differences at `confidence` (NaN when no resample was usable); `samples`: the
    resampled differences (`resamples_used` of them); `skipped`: AUC resamples with one class;
    `groups`: the number of devices.
    """

    difference: float
    low: float
    high: float
    samples: np.ndarray
    resamples_used: int
    groups: int
    metric: str
    confidence: float = 0.95
    skipped: int = 0


def _group_codes(groups: np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(np.asarray(groups), sort=False)
    if (codes < 0).any():
        raise ValueError("groups must not be missing")
    return codes, len(uniques)


def _draws(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_groups) group codes drawn with replacement: the resamples."""
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_resamples, n_groups))


def block_resample_indices(
    groups: np.ndarray | pd.Series, n_resamples: int = 1000, seed: int = 0
) -> list[np.ndarray]:
    """The row indices of each resample `paired_bootstrap` scores, made of whole groups.

    Resample r holds, for each group drawn (in drawing order), all of that group's rows; a group
    drawn twice appears twice. `paired_bootstrap` computes the same resamples from multiplicities
    without building these arrays; this exists to inspect and test them.
    """
    codes, n_groups = _group_codes(groups)
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    return [
        np.concatenate([members[g] for g in drawn]) for drawn in _draws(n_groups, n_resamples, seed)
    ]


def _multiplicities(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_groups): how often each group was drawn in each resample."""
    drawn = _draws(n_groups, n_resamples, seed)
    offsets = np.arange(n_resamples)[:, None] * n_groups
    counts = np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n_groups)
    return counts.reshape(n_resamples, n_groups).astype(np.float64)


def _weighted_auc(
    y_true: np.ndarray, score: np.ndarray, codes: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """AUC per row of `weights` (group multiplicities); NaN where a class has no weight.

    With row weights w (its group's multiplicity), AUC = sum over positive i, negative j of
    w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (positive weight * negative weight): exactly
    `roc_auc_score` on the rows repeated as often as their group was drawn. Since weights are
    per group, the numerator is w' C w with C[g, h] the (tie-halved) count of pairs of a
    positive of group g scored above a negative of group h, computed once.
    """
    n_groups = weights.shape[1]
    _, level = np.unique(score, return_inverse=True)
    n_levels = int(level.max()) + 1
    positive = y_true.astype(bool)

    def counts(rows: np.ndarray) -> np.ndarray:
        """(distinct score, group) row counts."""
        cells = np.bincount(level[rows] * n_groups + codes[rows], minlength=n_levels * n_groups)
        return cells.reshape(n_levels, n_groups).astype(np.float64)

    pos, neg = counts(positive), counts(~positive)
    neg_below = np.cumsum(neg, axis=0) - neg  # negatives strictly below each score, per group
    pairs = pos.T @ (neg_below + 0.5 * neg)  # C[g, h]
    numerator = np.einsum("rg,gh,rh->r", weights, pairs, weights)
    denominator = (weights @ pos.sum(axis=0)) * (weights @ neg.sum(axis=0))
    auc = np.full(len(weights), np.nan)
    usable = denominator > 0
    auc[usable] = numerator[usable] / denominator[usable]
    return auc


def _weighted_mae(
    y_true: np.ndarray, predicted: np.ndarray, codes: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """MAE per row of `weights` (group multiplicities)."""
    n_groups = weights.shape[1]
    error = np.bincount(codes, weights=np.abs(predicted - y_true), minlength=n_groups)
    size = np.bincount(codes, minlength=n_groups).astype(np.float64)
    return (weights @ error) / (weights @ size)


def paired_bootstrap(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray | pd.Series,
    metric: Metric,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired device-block bootstrap of metric(candidate) - metric(champion) on the same rows.

    `y_true`, `candidate`, `champion` (scores or predicted values) and `groups` (the device of
    each row) are aligned arrays. Resampling, skipping and the sign convention are described in
    the module docstring; the same `seed` gives the same result. Raises ValueError on misaligned
    inputs, an unknown metric, or (AUC) a single class over all rows.
    """
    if metric not in ("auc", "mae"):
        raise ValueError(f"metric must be 'auc' or 'mae', got {metric!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    candidate = np.asarray(candidate, dtype=np.float64).ravel()
    champion = np.asarray(champion, dtype=np.float64).ravel()
    codes, n_groups = _group_codes(groups)
    if not len(y_true) == len(candidate) == len(champion) == len(codes) > 0:
        raise ValueError(
            f"y_true, candidate, champion and groups must be non-empty and aligned; got "
            f"{len(y_true)}, {len(candidate)}, {len(champion)} and {len(codes)} rows"
        )
    if metric == "auc" and len(np.unique(y_true)) != 2:
        raise ValueError("AUC needs both classes among the rows compared")
    compute = _weighted_auc if metric == "auc" else _weighted_mae
    everything = np.ones((1, n_groups))
    difference = float(
        compute(y_true, candidate, codes, everything)[0]
        - compute(y_true, champion, codes, everything)[0]
    )
    weights = _multiplicities(n_groups, n_resamples, seed)
    samples = compute(y_true, candidate, codes, weights) - compute(y_true, champion, codes, weights)
    usable = ~np.isnan(samples)
    samples = samples[usable]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail]) if len(samples) else (np.nan, np.nan)
    return BootstrapResult(
        difference=difference,
        low=float(low),
        high=float(high),
        samples=samples,
        resamples_used=int(usable.sum()),
        groups=n_groups,
        metric=metric,
        confidence=confidence,
        skipped=int((~usable).sum()),
    )


def _label(result: BootstrapResult) -> str:
    if result.metric == "auc":
        return "candidate AUC - champion AUC (positive: candidate better)"
    return "candidate MAE - champion MAE (negative: candidate better)"


def bootstrap_histogram(result: BootstrapResult) -> Figure:
    """Histogram of the resampled differences, with lines at 0, the difference and the bounds."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(result.samples):
        ax.hist(result.samples, bins=40, color="tab:blue", alpha=0.7)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1, label="no difference")
    ax.axvline(
        result.difference, color="tab:red", linewidth=2, label=f"difference {result.difference:.4g}"
    )
    percent = f"{result.confidence * 100:g} %"
    for bound, name in ((result.low, "low"), (result.high, "high")):
        if np.isfinite(bound):
            ax.axvline(
                bound,
                color="tab:orange",
                linestyle=":",
                linewidth=2,
                label=f"{percent} interval" if name == "low" else None,
            )
    ax.set_xlabel(_label(result))
    ax.set_ylabel("resamples")
    ax.set_title(
        f"Paired bootstrap: {result.resamples_used:,} resamples of {result.groups} devices"
    )
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _number(value: float) -> str:
    return f"{value:.3f}".replace("-", "\u2212")


def describe(result: BootstrapResult, champion_version: str | int) -> str:
    """One sentence, e.g. 'AUC 0.012 higher than Production version 3 (95 % interval −0.004
    to 0.028, 1,000 device-block resamples over 40 devices)'."""
    name = result.metric.upper()
    if result.difference > 0:
        head = f"{name} {_number(result.difference)} higher than"
    elif result.difference < 0:
        head = f"{name} {_number(-result.difference)} lower than"
    else:
        head = f"{name} equal to that of"
    resamples = f"{result.resamples_used:,} device-block resamples over {result.groups} devices"
    if result.skipped:
        resamples += f", {result.skipped:,} single-class resample(s) skipped"
    if not result.resamples_used:
        interval = "no usable resample"
    else:
        interval = (
            f"{result.confidence * 100:g} % interval {_number(result.low)} to "
            f"{_number(result.high)}"
        )
    return f"{head} Production version {champion_version} ({interval}, {resamples})"


def unseen_rows(
    membership: dict | None, test: pd.DataFrame, device_column: str, time_column: str
) -> tuple[np.ndarray, str]:
    """Test rows a champion never learned from, and a sentence saying how that was decided.

    `membership` is the champion's split membership (features/split_membership.json): with a
    device split, rows of devices it trained or validated on are left out; with a time split,
    rows before the end of its learning period, except on devices it held out. None (not on
    record): every row. Judged in-sample, a champion would look better than it is and block
    every fair candidate, so the champion comparison uses only these rows.
    """
    device = test[device_column].astype(str)
    if membership is None:
        return np.ones(len(test), bool), "the champion's split is not on record: every test row"
    if membership["by"] == "device":
        learned = {*membership["devices"]["train"], *membership["devices"]["validation"]}
        unseen = ~device.isin(learned).to_numpy()
        return unseen, (
            f"{len(learned & set(device))} test device(s) the champion trained or validated "
            f"on are left out; {int(unseen.sum())} of {len(test)} test rows compared"
        )
    learned_until = pd.Timestamp(membership["learned_until"])
    held_out = set(membership["held_out_devices"])
    unseen = ((test[time_column] >= learned_until) | device.isin(held_out)).to_numpy()
    if unseen.all():
        return unseen, (
            f"the champion learned until {learned_until:%Y-%m-%d %H:%M}, before every test "
            f"row: all {len(test):,} test rows compared"
        )
    return unseen, (
        f"rows before {learned_until:%Y-%m-%d %H:%M} (the champion's learning period) are left "
        f"out; {int(unseen.sum()):,} of {len(test):,} test rows compared"
    )
