"""Release gates: a pure decision over evaluation results, no recomputation.

A tenant's gates are the standard ones of its task (the brief's defaults, each bound from
`gates:`), the strict profile's extra ones when `gates.profile: strict`, the robustness gate,
the champion gates, and any logged metric named in `gates.require`.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass

from pdmflow.config import GATE_RULE, GateConfig
from pdmflow.evaluation.catalog import CHAMPION_KEY, LOWER_IS_BETTER

COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}

# gates.profile strict (classification): the brief's stricter profile, on top of the standard.
STRICT = (
    ("auc", ">=", 0.85),
    ("precision_at_0_7", ">=", 0.80),
    ("ece", "<", 0.10),
    ("cv_auc_std", "<", 0.05),
)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=", "<=", ">" or "<"
    passed: bool

    def describe(self) -> str:
        if self.value is None and self.passed:
            return f"{self.name}: nothing to compare against -> pass"
        shown = "missing" if self.value is None else f"{self.value:.6g}"
        verdict = "pass" if self.passed else "FAIL"
        return f"{self.name}: {shown} {self.comparison} {self.threshold:.6g} -> {verdict}"


def _gate(name: str, value: float | None, threshold: float, comparison: str) -> GateResult:
    # A missing metric (or NaN) fails: what was not measured cannot be shown to pass.
    if value is None or value != value:
        return GateResult(name, None, float(threshold), comparison, False)
    passed = COMPARISONS[comparison](value, threshold)
    return GateResult(name, float(value), float(threshold), comparison, bool(passed))


def _no_champion(name: str) -> GateResult:
    return GateResult(name, None, 0.0, ">=", True)


def _champion_gates(
    task: str, metrics: dict[str, float], gates: GateConfig, has_champion: bool
) -> list[GateResult]:
    """not_worse_than_champion (and require_better_than_champion) on the bootstrap interval.

    The interval is of (candidate - champion) on the test rows the champion never learned from,
    resampled by device. Classification: its lower bound must be >= -max_auc_regression (and > 0
    to be better). Regression (MAE, lower is better): its upper bound must be
    <= max_mae_regression_hours (and < 0 to be better). With no champion, or one that learned
    from every test row, there is nothing fair to compare against: not_worse passes, and says
    so; require_better passes only without a champion (an improvement that cannot be measured
    is not shown).
    """
    names = ["not_worse_than_champion"]
    if gates.require_better_than_champion:
        names.append("require_better_than_champion")
    if not has_champion:
        return [_no_champion(name) for name in names]
    if metrics.get("champion_comparison_rows") == 0:
        # Not worse cannot be shown wrong; better cannot be shown at all.
        results = [_no_champion(names[0])]
        if gates.require_better_than_champion:
            results.append(GateResult(names[1], None, 0.0, ">", False))
        return results
    key = CHAMPION_KEY[task]
    low = metrics.get(f"champion_{key}_difference_low")
    high = metrics.get(f"champion_{key}_difference_high")
    if task == "classification":
        results = [_gate(names[0], low, 0.0 - gates.max_auc_regression, ">=")]
        better = (low, 0.0, ">")
    else:
        results = [_gate(names[0], high, gates.max_mae_regression_hours, "<=")]
        better = (high, 0.0, "<")
    if gates.require_better_than_champion:
        results.append(_gate(names[1], *better))
    return results


def check_gates(
    task: str, metrics: dict[str, float], gates: GateConfig, has_champion: bool
) -> list[GateResult]:
    """Each configured gate of the task applied to the candidate's evaluate metrics."""
    if task == "classification":
        results = [
            _gate("auc", metrics.get("auc"), gates.min_auc, ">="),
            _gate("precision", metrics.get("precision"), gates.min_precision, ">="),
            _gate("recall", metrics.get("recall"), gates.min_recall, ">="),
        ]
        parity_bound = gates.max_onnx_difference
    else:
        results = [_gate("mae", metrics.get("mae"), gates.max_mae_hours, "<=")]
        parity_bound = gates.max_onnx_difference_hours
    results += [
        # What an alerting system waits for: one device scored from its raw readings.
        _gate(
            "latency_device_p99_ms",
            metrics.get("latency_device_p99_ms"),
            gates.max_latency_p99_ms,
            "<=",
        ),
        _gate(
            "onnx_max_abs_difference",
            metrics.get("onnx_max_abs_difference"),
            parity_bound,
            "<=",
        ),
    ]
    if gates.profile == "strict":
        results += [
            _gate(f"strict.{metric}", metrics.get(metric), bound, comparison)
            for metric, comparison, bound in STRICT
        ]
    if task == "classification":
        robustness = (
            ("robustness_noise_10pct_auc_drop", gates.max_noise_auc_drop),
            ("robustness_dead_sensor_auc_drop", gates.max_dead_sensor_auc_drop),
            ("robustness_worst_auc_drop", gates.max_robustness_auc_drop),
        )
        results += [
            _gate(metric, metrics.get(metric), bound, "<=")
            for metric, bound in robustness
            if bound is not None
        ]
    lift = gates.min_lift_over_reference
    if lift is not None:
        # lift_<metric> is candidate minus reference: error metrics must fall by the margin.
        name = f"lift_{lift.metric}"
        if lift.metric in LOWER_IS_BETTER:
            results.append(_gate(name, metrics.get(name), -lift.margin, "<="))
        else:
            results.append(_gate(name, metrics.get(name), lift.margin, ">="))
    for metric, rule in gates.require.items():
        match = GATE_RULE.fullmatch(rule)
        assert match is not None  # the config validated it
        results.append(_gate(f"require.{metric}", metrics.get(metric), float(match[2]), match[1]))
    return [*results, *_champion_gates(task, metrics, gates, has_champion)]


def as_dicts(results: list[GateResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
