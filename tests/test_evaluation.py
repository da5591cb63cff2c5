"""Threshold rules, calibration and RUL metrics, and the reliability diagram, on hand-made rows.

Expected numbers are written out with the arithmetic that produces them, so a reader can check
each one without running the code.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import StepPatch
from sklearn.metrics import confusion_matrix, f1_score

from pdmflow.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    nasa_score,
    regression_metrics,
)
from pdmflow.evaluation.plots import reliability_diagram
from pdmflow.evaluation.thresholds import choose_threshold, describe_threshold

# Eight validation rows, 4 failing (P = 4). Counts when alerting at probability >= t:
#   t     TP FP FN  precision  recall  F1 = 2TP/(2TP+FP+FN)  cost 5FN+FP  cost FN+FP
#   0.9   1  0  3   1          0.25    2/5  = 0.400          15           3
#   0.8   2  0  2   1          0.50    4/6  = 0.667          10           2
#   0.7   2  1  2   2/3        0.50    4/7  = 0.571          11           3
#   0.6   3  1  1   3/4        0.75    6/8  = 0.750  <- max   6           2
#   0.5   3  2  1   3/5        0.75    6/9  = 0.667           7           3
#   0.4   3  3  1   1/2        0.75    6/10 = 0.600           8           4
#   0.3   4  3  0   4/7        1.00    8/11 = 0.727           3 <- min    3
#   0.2   4  4  0   1/2        1.00    8/12 = 0.667           4           4
PROBABILITY = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
FAILS = np.array([1, 1, 0, 1, 0, 0, 1, 0])


def test_f1_rule_picks_the_threshold_with_the_highest_f1():
    # F1 peaks at 0.750 with t = 0.6 (table above).
    assert choose_threshold(FAILS, PROBABILITY, "f1") == 0.6


def test_f1_rule_breaks_a_tie_towards_the_higher_threshold():
    # t=0.8: TP1 FP0 FN1 -> 2/3;  t=0.6: TP1 FP1 FN1 -> 2/4;  t=0.4: TP1 FP2 FN1 -> 2/5;
    # t=0.3: TP2 FP2 FN0 -> 4/6 = 2/3. Tie between 0.8 and 0.3: the higher wins.
    probability = np.array([0.8, 0.6, 0.4, 0.3])
    assert choose_threshold(np.array([1, 0, 0, 1]), probability, "f1") == 0.8


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        # precision >= 0.8 only at t = 0.9 (recall 0.25) and 0.8 (recall 0.5): highest recall 0.8.
        (0.8, 0.8),
        # precision >= 0.75 also admits t = 0.6 (exactly 3/4, recall 0.75): the floor is inclusive.
        (0.75, 0.6),
        # precision >= 0.6 admits 0.9, 0.8, 0.7, 0.6, 0.5 (exactly 3/5); recall 0.75 at both 0.6
        # and 0.5: the tie goes to the higher threshold, 0.6.
        (0.6, 0.6),
    ],
)
def test_precision_at_least_takes_the_highest_recall_above_the_floor(floor, expected):
    assert choose_threshold(FAILS, PROBABILITY, "precision_at_least", precision=floor) == expected


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        # recall >= 1.0 only at t = 0.3 (precision 4/7) and 0.2 (precision 1/2): 0.3.
        (1.0, 0.3),
        # recall >= 0.5 at t <= 0.8: precision 1 at 0.8 is the highest.
        (0.5, 0.8),
        # recall >= 0.25 everywhere: precision 1 at both 0.9 and 0.8; the tie goes to 0.9.
        (0.25, 0.9),
    ],
)
def test_recall_at_least_takes_the_highest_precision_above_the_floor(floor, expected):
    assert choose_threshold(FAILS, PROBABILITY, "recall_at_least", recall=floor) == expected


def test_cost_rule_minimises_weighted_missed_failures_and_false_alarms():
    # 5*FN + FP is lowest (3) at t = 0.3: missing a failure costs 5 false alarms.
    assert (
        choose_threshold(FAILS, PROBABILITY, "cost", missed_failure_cost=5.0, false_alarm_cost=1.0)
        == 0.3
    )
    # FN + FP is 2 at both 0.8 and 0.6: the tie goes to the higher threshold.
    assert (
        choose_threshold(FAILS, PROBABILITY, "cost", missed_failure_cost=1.0, false_alarm_cost=1.0)
        == 0.8
    )


def test_describe_reports_the_choice_and_its_counts():
    description = describe_threshold(FAILS, PROBABILITY, "precision_at_least", precision=0.8)
    # t = 0.8: TP 2, FP 0 -> precision 1, recall 2/4, F1 4/6, 2 alerts of 8 rows.
    assert description == {
        "threshold_rule": "precision_at_least",
        "threshold_rule_applied": "precision_at_least",
        "threshold_constraint_met": True,
        "decision_threshold": 0.8,
        "threshold_precision": 1.0,
        "threshold_recall": 0.5,
        "threshold_f1": pytest.approx(2 / 3),
        "threshold_alerts": 2,
        "threshold_alert_rate": 0.25,
        "threshold_target_precision": 0.8,
    }
    cost = describe_threshold(
        FAILS, PROBABILITY, "cost", missed_failure_cost=5.0, false_alarm_cost=1.0
    )
    # t = 0.3: FN 0, FP 3 -> 5*0 + 1*3.
    assert cost["decision_threshold"] == 0.3
    assert cost["threshold_total_cost"] == 3.0


def test_unreachable_precision_floor_falls_back_to_f1_and_says_so():
    # The top-scored row is healthy, so no threshold reaches precision 0.9:
    #   t=0.9: TP0 FP1 -> precision 0,   F1 0
    #   t=0.8: TP1 FP1 -> precision 1/2, F1 2/4
    #   t=0.7: TP1 FP2 -> precision 1/3, F1 2/5
    #   t=0.6: TP2 FP2 -> precision 1/2, F1 4/6  <- F1 threshold
    probability = np.array([0.9, 0.8, 0.7, 0.6])
    fails = np.array([0, 1, 0, 1])
    assert choose_threshold(fails, probability, "precision_at_least", precision=0.9) == 0.6
    description = describe_threshold(fails, probability, "precision_at_least", precision=0.9)
    assert description["threshold_constraint_met"] is False
    assert description["threshold_rule_applied"] == "f1"
    assert description["decision_threshold"] == 0.6
    assert description["threshold_precision"] == 0.5
    assert description["threshold_fallback"] == "no threshold reaches precision 0.900"
    assert description["threshold_recall"] == 1.0
    assert description["threshold_alerts"] == 4


@pytest.mark.parametrize(
    ("rule", "arguments", "message"),
    [
        ("precision_at_least", {}, "training.threshold.precision is required for rule "),
        ("recall_at_least", {}, "training.threshold.recall is required for rule recall_at_least"),
        ("cost", {"false_alarm_cost": 1.0}, "training.threshold.missed_failure_cost is required"),
        ("cost", {"missed_failure_cost": 1.0}, "training.threshold.false_alarm_cost is required"),
        ("precision_at_least", {"precision": 1.5}, r"precision must lie in \[0, 1\]"),
        ("best", {}, "unknown threshold rule 'best'"),
    ],
)
def test_a_rule_without_what_it_needs_is_refused_by_name(rule, arguments, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold(FAILS, PROBABILITY, rule, **arguments)


def test_no_failing_row_is_refused():
    with pytest.raises(ValueError, match="at least one failing row"):
        choose_threshold(np.zeros(4, dtype=int), PROBABILITY[:4])


def test_rules_agree_with_a_brute_force_search_on_tied_random_scores():
    # Rounding to 2 decimals makes many tied scores, the case a sort-and-cumsum can get wrong.
    generator = np.random.default_rng(7)
    fails = generator.integers(0, 2, 300)
    probability = np.round(np.clip(0.3 * fails + generator.random(300) * 0.7, 0, 1), 2)
    candidates = np.unique(probability)[::-1]  # high to low, so argmax/argmin tie -> higher

    def counts(threshold: float) -> tuple[int, int, int]:
        _, fp, fn, tp = confusion_matrix(fails, probability >= threshold, labels=[0, 1]).ravel()
        return tp, fp, fn

    table = np.array([counts(t) for t in candidates], dtype=float)
    tp, fp, fn = table.T
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = np.array([f1_score(fails, probability >= t) for t in candidates])
    assert choose_threshold(fails, probability, "f1") == candidates[np.argmax(f1)]
    feasible = precision >= 0.7
    assert (
        choose_threshold(fails, probability, "precision_at_least", precision=0.7)
        == (candidates[np.argmax(np.where(feasible, recall, -1))])
    )
    feasible = recall >= 0.9
    assert (
        choose_threshold(fails, probability, "recall_at_least", recall=0.9)
        == (candidates[np.argmax(np.where(feasible, precision, -1))])
    )
    assert (
        choose_threshold(fails, probability, "cost", missed_failure_cost=4.0, false_alarm_cost=1.0)
        == candidates[np.argmin(4 * fn + fp)]
    )


# Five rows in two 0.1-wide bins:
#   (0.1, 0.2]: p = 0.15, 0.15, y = 1, 0     -> |mean y - mean p| = |0.5 - 0.15| = 0.35, 2 rows
#   (0.8, 0.9]: p = 0.85 x 3,   y = 1, 1, 1  -> |1.0 - 0.85| = 0.15, 3 rows
# ECE = (2 * 0.35 + 3 * 0.15) / 5 = (0.70 + 0.45) / 5 = 0.23
CALIBRATION_FAILS = np.array([1, 0, 1, 1, 1])
CALIBRATION_PROBABILITY = np.array([0.15, 0.15, 0.85, 0.85, 0.85])


def test_expected_calibration_error_on_a_hand_made_case():
    assert expected_calibration_error(CALIBRATION_FAILS, CALIBRATION_PROBABILITY) == pytest.approx(
        0.23, abs=1e-12
    )


def test_expected_calibration_error_is_zero_when_each_bin_is_calibrated():
    # Bin (0.2, 0.3]: p = 0.25 x 4, one failure in four; bin (0.7, 0.8]: p = 0.75 x 4, three.
    # Bins (0.9, 1.0] and [0, 0.1] include their end points: p = 1 fails, p = 0 does not.
    probability = np.array([0.25] * 4 + [0.75] * 4 + [1.0, 0.0])
    fails = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    assert expected_calibration_error(fails, probability) == 0.0
    # The same scores against the opposite outcomes are far from calibrated.
    assert expected_calibration_error(1 - fails, probability) > 0.4


def test_expected_calibration_error_refuses_probabilities_outside_zero_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, 1.3]))


def test_classification_metrics_add_ece_and_clipped_log_loss():
    metrics = classification_metrics(CALIBRATION_FAILS, CALIBRATION_PROBABILITY, 0.5)
    assert metrics["ece"] == pytest.approx(0.23, abs=1e-12)
    # -(ln 0.15 [failing row at 0.15] + ln 0.85 [healthy row at 0.15] + 3 ln 0.85) / 5
    assert metrics["log_loss"] == pytest.approx(0.5094391405753962)
    # A certain, wrong score is clipped to 1e-15: -(ln 1e-15 + ln(1 - 1e-15)) / 2, finite.
    confident = classification_metrics(np.array([1, 0]), np.array([0.0, 0.0]), 0.5)
    assert confident["log_loss"] == pytest.approx(17.269388197455342)


def test_nasa_score_charges_a_late_prediction_more_than_an_early_one():
    # Early by 10 h: d = 40 - 50 = -10 -> exp(10/13) - 1 = 1.1581055339484458
    early = nasa_score(np.array([50.0]), np.array([40.0]))
    # Late by 10 h:  d = 60 - 50 = +10 -> exp(10/10) - 1 = e - 1 = 1.718281828459045
    late = nasa_score(np.array([50.0]), np.array([60.0]))
    assert early == pytest.approx(1.1581055339484458)
    assert late == pytest.approx(1.718281828459045)
    assert late > early
    # Summed over rows, and 0 for a perfect prediction.
    both = nasa_score(np.array([50.0, 50.0, 30.0]), np.array([40.0, 60.0, 30.0]))
    assert both == pytest.approx(1.1581055339484458 + 1.718281828459045)
    # float32 input (ONNX output) must not overflow at errors float64 handles: exp(100) - 1.
    assert nasa_score(np.array([0.0]), np.array([1000.0], dtype=np.float32)) == pytest.approx(
        np.expm1(100.0)
    )


def test_regression_metrics_add_nasa_score():
    true = np.array([50.0, 50.0, 5.0])
    predicted = np.array([40.0, 60.0, 5.0])
    metrics = regression_metrics(true, predicted, tolerance_hours=5.0, critical_hours=24.0)
    assert metrics["nasa_score"] == pytest.approx(1.1581055339484458 + 1.718281828459045)


def test_reliability_diagram_draws_both_models_the_diagonal_and_bin_counts():
    # After calibration: 0.5 for the first bin's two rows (one fails), 1.0 for the three that
    # fail -> every bin calibrated, ECE 0.
    after = np.array([0.5, 0.5, 1.0, 1.0, 1.0])
    figure = reliability_diagram(CALIBRATION_FAILS, CALIBRATION_PROBABILITY, after)
    try:
        curve_axes, count_axes = figure.axes
        lines = {line.get_label(): line for line in curve_axes.get_lines()}
        assert set(lines) == {
            "perfectly calibrated",
            "before calibration (ECE 0.230)",
            "after calibration (ECE 0.000)",
        }
        np.testing.assert_allclose(lines["perfectly calibrated"].get_xydata(), [[0, 0], [1, 1]])
        before = lines["before calibration (ECE 0.230)"]
        np.testing.assert_allclose(before.get_xdata(), [0.15, 0.85])  # mean predicted per bin
        np.testing.assert_allclose(before.get_ydata(), [0.5, 1.0])  # fraction failing per bin
        calibrated = lines["after calibration (ECE 0.000)"]
        np.testing.assert_allclose(calibrated.get_xdata(), calibrated.get_ydata())
        steps = [patch for patch in count_axes.patches if isinstance(patch, StepPatch)]
        counts = {patch.get_label(): patch.get_data().values for patch in steps}
        np.testing.assert_array_equal(counts["before calibration"], [0, 2, 0, 0, 0, 0, 0, 0, 3, 0])
        np.testing.assert_array_equal(counts["after calibration"], [0, 0, 0, 0, 2, 0, 0, 0, 0, 3])
    finally:
        plt.close(figure)

    alone = reliability_diagram(CALIBRATION_FAILS, CALIBRATION_PROBABILITY)
    try:
        labels = [line.get_label() for line in alone.axes[0].get_lines()]
        assert labels == ["perfectly calibrated", "before calibration (ECE 0.230)"]
    finally:
        plt.close(alone)


def test_a_fixed_threshold_is_described_like_a_chosen_one():
    from pdmflow.evaluation.thresholds import describe_fixed_threshold

    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.5, 0.3, 0.2, 0.5])
    fixed = describe_fixed_threshold(y, p, 0.5)
    # Alerts at p >= 0.5: rows 0, 1, 2, 5; two of them fail, of three failures.
    assert fixed["threshold_rule"] == fixed["threshold_rule_applied"] == "fixed"
    assert fixed["threshold_constraint_met"] is True and fixed["threshold_alerts"] == 4
    assert fixed["threshold_precision"] == 0.5
    assert fixed["threshold_recall"] == pytest.approx(2 / 3)
    assert fixed["threshold_f1"] == pytest.approx(f1_score(y, p >= 0.5))
    assert set(fixed) == set(describe_threshold(y, p, "f1"))
