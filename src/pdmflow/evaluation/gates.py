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
    task: str, metrics: dict[str, float], gates: GateConfig, has_champion: bool
) -> list[GateResult]:
    """Each configured gate of the task applied to the candidate's metrics.

    The champion gate compares with `champion_auc` / `champion_mae` in `metrics`: the current
    Production model on the same test rows. With no Production model it passes by definition;
    a champion that could not be scored (metric missing) fails it, since the candidate cannot
    be shown not to be worse.
    """
    # The champion is compared on the test rows it never learned from; the candidate on the same.
    key = "auc" if task == "classification" else "mae"
    candidate_value = metrics.get(f"candidate_{key}_on_champion_rows", metrics.get(key))
    champion = metrics.get(f"champion_{key}")
    if task == "classification":
        results = [
            _gate("auc", metrics.get("auc"), gates.min_auc, ">="),
            _gate("precision", metrics.get("precision"), gates.min_precision, ">="),
            _gate("recall", metrics.get("recall"), gates.min_recall, ">="),
        ]
        champion_gate = _gate(
            "not_worse_than_champion",
            candidate_value,
            float("inf") if champion is None else champion - gates.max_auc_regression,
            ">=",
        )
    else:
        results = [_gate("mae", metrics.get("mae"), gates.max_mae_hours, "<=")]
        champion_gate = _gate(
            "not_worse_than_champion",
            candidate_value,
            float("-inf") if champion is None else champion + gates.max_mae_regression_hours,
            "<=",
        )
    parity_bound = (
        gates.max_onnx_difference if task == "classification" else gates.max_onnx_difference_hours
    )
    results += [
        _gate("latency_p99_ms", metrics.get("latency_p99_ms"), gates.max_latency_p99_ms, "<="),
        _gate(
            "onnx_max_abs_difference",
            metrics.get("onnx_max_abs_difference"),
            parity_bound,
            "<=",
        ),
    ]
    # No champion, or one that learned from every test row: nothing fair to compare against.
    if not has_champion or metrics.get("champion_comparison_rows") == 0:
        champion_gate = GateResult("not_worse_than_champion", None, 0.0, ">=", True)
    return [*results, champion_gate]


def as_dicts(results: list[GateResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
