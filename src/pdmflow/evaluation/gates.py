"""Release gates: a pure decision over evaluation results, no recomputation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pdmflow.config import GateConfig


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool

    def describe(self) -> str:
        if self.value is None and self.passed:
            return f"{self.name}: nothing to compare against -> pass"
        shown = "missing" if self.value is None else f"{self.value:.6g}"
        verdict = "pass" if self.passed else "FAIL"
        return f"{self.name}: {shown} {self.comparison} {self.threshold:.6g} -> {verdict}"


def _gate(name: str, value: float | None, threshold: float, comparison: str) -> GateResult:
    if value is None:
        return GateResult(name, None, threshold, comparison, False)
    passed = value >= threshold if comparison == ">=" else value <= threshold
    return GateResult(name, float(value), float(threshold), comparison, bool(passed))


def check_gates(
    metrics: dict[str, float], gates: GateConfig, champion_auc: float | None, has_champion: bool
) -> list[GateResult]:
    """Each configured gate applied to the candidate's metrics.

    `champion_auc` is the current Production model's AUC on the same test data (None when there
    is no Production model, in which case the champion gate passes by definition). A champion
    that could not be scored on the candidate's test data fails the gate: we cannot show the
    candidate is not worse.
    """
    results = [
        _gate("auc", metrics.get("auc"), gates.min_auc, ">="),
        _gate("precision", metrics.get("precision"), gates.min_precision, ">="),
        _gate("recall", metrics.get("recall"), gates.min_recall, ">="),
        _gate("latency_p99_ms", metrics.get("latency_p99_ms"), gates.max_latency_p99_ms, "<="),
        _gate(
            "onnx_max_abs_difference",
            metrics.get("onnx_max_abs_difference"),
            gates.max_onnx_difference,
            "<=",
        ),
    ]
    if not has_champion:
        results.append(GateResult("not_worse_than_champion", None, 0.0, ">=", True))
    else:
        results.append(
            _gate(
                "not_worse_than_champion",
                metrics.get("auc"),
                float("inf") if champion_auc is None else champion_auc - gates.max_auc_regression,
                ">=",
            )
        )
    return results


def as_dicts(results: list[GateResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
