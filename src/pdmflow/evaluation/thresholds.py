"""Choosing the decision threshold on the validation split, by a rule the tenant names.

A row raises an alert when probability >= threshold. The candidate thresholds are the distinct
predicted probabilities, so every choice is one a reviewer can reproduce from the rows. Rules:

- `f1`: the threshold with the highest F1.
- `precision_at_least`: of the thresholds whose precision >= `precision`, the one with the
  highest recall (fewest missed failures while keeping false alarms in bounds).
- `recall_at_least`: of the thresholds whose recall >= `recall`, the one with the highest
  precision (fewest false alarms while catching enough failures).
- `cost`: the threshold minimising missed_failure_cost * FN + false_alarm_cost * FP.
- `meet_gates`: `precision_at_least` with the floor the release gates set (the caller passes
  gates.min_precision plus training.threshold.precision_margin as `precision`, and
  gates.min_recall as `recall`). When that floor leaves less than half the recall the recall
  gate asks, the gates are out of this model's reach and the F1 threshold is used instead.

Every tie goes to the higher threshold (fewer alerts). When no threshold meets a precision or
recall floor, the F1 threshold is used instead and `describe_threshold` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("f1", "precision_at_least", "recall_at_least", "cost", "meet_gates")


@dataclass(frozen=True)
class _Curve:
    """Confusion counts at every candidate threshold, thresholds in decreasing order."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    positives: int

    @property
    def false_negatives(self) -> np.ndarray:
        return self.positives - self.true_positives

    @property
    def precision(self) -> np.ndarray:
        # Every candidate threshold alerts on at least the row that defines it: never 0 / 0.
        return self.true_positives / (self.true_positives + self.false_positives)

    @property
    def recall(self) -> np.ndarray:
        return self.true_positives / self.positives

    @property
    def f1(self) -> np.ndarray:
        # 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, without 0 / 0.
        doubled = 2 * self.true_positives
        return doubled / (doubled + self.false_positives + self.false_negatives)


def _curve(y_true: np.ndarray, probability: np.ndarray) -> _Curve:
    """Counts at each distinct probability, from one sort and a cumulative sum: O(n log n)."""
    y_true = np.asarray(y_true)
    probability = np.asarray(probability, dtype=float)
    if y_true.ndim != 1 or y_true.shape != probability.shape or y_true.size == 0:
        raise ValueError(
            "y_true and probability must be non-empty 1-D arrays of the same length; got shapes "
            f"{y_true.shape} and {probability.shape}"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1; got values {np.unique(y_true)[:10]}")
    if np.isnan(probability).any():
        raise ValueError("probability holds NaN; every row needs a score to choose a threshold")
    y_true = y_true.astype(np.int64)
    positives = int(y_true.sum())
    if positives == 0:
        raise ValueError(
            f"choosing a decision threshold needs at least one failing row (y_true == 1); "
            f"none among the {y_true.size} rows given"
        )
    order = np.argsort(-probability, kind="stable")
    descending = probability[order]
    # The last row of each run of equal probabilities: alerting at that value includes the run.
    run_ends = np.r_[np.flatnonzero(np.diff(descending)), descending.size - 1]
    true_positives = np.cumsum(y_true[order])[run_ends]
    return _Curve(
        thresholds=descending[run_ends],
        true_positives=true_positives,
        false_positives=run_ends + 1 - true_positives,
        positives=positives,
    )


def _required(value: float | None, name: str, rule: str) -> float:
    if value is None:
        raise ValueError(f"training.threshold.{name} is required for rule {rule}")
    return float(value)


def _check_rate(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"training.threshold.{name} must lie in [0, 1]; got {value}")
    return value


def _best(score: np.ndarray) -> int:
    """Index of the highest score; the first wins ties, which is the higher threshold."""
    return int(np.argmax(score))


def _choose(
    curve: _Curve,
    rule: str,
    precision: float | None,
    recall: float | None,
    missed_failure_cost: float | None,
    false_alarm_cost: float | None,
) -> tuple[int, str]:
    """(index into curve.thresholds, why the rule fell back to the F1 threshold: "" when its
    constraint was met)."""
    if rule == "f1":
        return _best(curve.f1), ""
    if rule in ("precision_at_least", "meet_gates"):
        floor = _check_rate(_required(precision, "precision", rule), "precision")
        feasible = curve.precision >= floor
        if not feasible.any():
            return _best(curve.f1), f"no threshold reaches precision {floor:.3f}"
        index = _best(np.where(feasible, curve.recall, -np.inf))
        if rule == "meet_gates" and recall is not None and curve.recall[index] < recall / 2:
            # Out of reach: a balanced point serves better.
            return _best(curve.f1), (
                f"at precision {floor:.3f} the recall is {curve.recall[index]:.3f}, under half "
                f"of the recall gate {recall:.3f}"
            )
        return index, ""
    if rule == "recall_at_least":
        floor = _check_rate(_required(recall, "recall", rule), "recall")
        feasible = curve.recall >= floor
        if not feasible.any():
            return _best(curve.f1), f"no threshold reaches recall {floor:.3f}"
        return _best(np.where(feasible, curve.precision, -np.inf)), ""
    if rule == "cost":
        missed = _required(missed_failure_cost, "missed_failure_cost", rule)
        alarm = _required(false_alarm_cost, "false_alarm_cost", rule)
        if missed < 0 or alarm < 0:
            raise ValueError(
                "training.threshold.missed_failure_cost and false_alarm_cost must be >= 0; "
                f"got {missed} and {alarm}"
            )
        cost = missed * curve.false_negatives + alarm * curve.false_positives
        return _best(-cost), ""
    raise ValueError(f"unknown threshold rule {rule!r}; expected one of {', '.join(RULES)}")


def choose_threshold(
    y_true: np.ndarray, probability: np.ndarray, rule: str = "f1", **arguments: float | None
) -> float:
    """The decision threshold the rule picks on these rows (one of the given probabilities).

    `arguments` are the rule's: precision, recall, missed_failure_cost, false_alarm_cost.
    Rules and tie-breaking as in the module docstring; a precision or recall floor that no
    threshold meets falls back to the F1 threshold (`describe_threshold` reports it).
    Raises ValueError for an unknown rule, a missing or out-of-range argument the rule needs
    (naming it as `training.threshold.<name>`), mismatched inputs, or no failing row.
    """
    return float(describe_threshold(y_true, probability, rule, **arguments)["decision_threshold"])


def describe_threshold(
    y_true: np.ndarray,
    probability: np.ndarray,
    rule: str = "f1",
    *,
    precision: float | None = None,
    recall: float | None = None,
    missed_failure_cost: float | None = None,
    false_alarm_cost: float | None = None,
) -> dict[str, float | int | str | bool]:
    """The threshold `choose_threshold` picks, with what it means on these rows.

    Keys: `threshold_rule` (as asked), `threshold_rule_applied` (`f1` after a fallback),
    `threshold_constraint_met` (False only when a precision/recall floor could not be met, or
    meet_gates' floor left under half the recall gate; `threshold_fallback` then says which),
    `decision_threshold`, and at that threshold `threshold_precision`, `threshold_recall`,
    `threshold_f1`, `threshold_alerts` (rows alerted) and `threshold_alert_rate`; plus the
    rule's arguments that were given (`threshold_target_precision`, `threshold_target_recall`,
    `threshold_missed_failure_cost`, `threshold_false_alarm_cost`) and, for `cost`,
    `threshold_total_cost`. Strings and booleans are parameters; the rest are metrics.
    """
    curve = _curve(y_true, probability)
    index, fallback = _choose(curve, rule, precision, recall, missed_failure_cost, false_alarm_cost)
    met = not fallback
    alerts = int(curve.true_positives[index] + curve.false_positives[index])
    description: dict[str, float | int | str | bool] = {
        "threshold_rule": rule,
        "threshold_rule_applied": rule if met else "f1",
        "threshold_constraint_met": met,
        "decision_threshold": float(curve.thresholds[index]),
        "threshold_precision": float(curve.precision[index]),
        "threshold_recall": float(curve.recall[index]),
        "threshold_f1": float(curve.f1[index]),
        "threshold_alerts": alerts,
        "threshold_alert_rate": alerts / int(np.asarray(y_true).size),
    }
    targets = {
        "threshold_target_precision": precision,
        "threshold_target_recall": recall,
        "threshold_missed_failure_cost": missed_failure_cost,
        "threshold_false_alarm_cost": false_alarm_cost,
    }
    description.update({key: float(value) for key, value in targets.items() if value is not None})
    if fallback:
        description["threshold_fallback"] = fallback
    if rule == "cost" and missed_failure_cost is not None and false_alarm_cost is not None:
        description["threshold_total_cost"] = float(
            missed_failure_cost * curve.false_negatives[index]
            + false_alarm_cost * curve.false_positives[index]
        )
    return description


def describe_fixed_threshold(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float | int | str | bool]:
    """What a fixed threshold (training.decision_threshold) gives on these rows, with the keys
    of `describe_threshold`: rule `fixed`, always met, and the precision, recall, F1 and
    alerts at `threshold` (alert when probability >= threshold)."""
    y_true = np.asarray(y_true).astype(np.int64)
    alerts = np.asarray(probability, dtype=float) >= threshold
    true_positives = int((alerts & (y_true == 1)).sum())
    alerted, positives = int(alerts.sum()), int(y_true.sum())
    return {
        "threshold_rule": "fixed",
        "threshold_rule_applied": "fixed",
        "threshold_constraint_met": True,
        "decision_threshold": float(threshold),
        "threshold_precision": true_positives / alerted if alerted else 0.0,
        "threshold_recall": true_positives / positives if positives else 0.0,
        "threshold_f1": 2 * true_positives / (alerted + positives) if alerted + positives else 0.0,
        "threshold_alerts": alerted,
        "threshold_alert_rate": alerted / max(1, y_true.size),
    }
