"""Probability calibration (Platt scaling or isotonic regression), native and in ONNX.

Both methods end as one table: the fitted map evaluated at fixed knots (uniform in logit
space, so rare-failure probabilities near 0 get as much resolution as those near 0.5) and
interpolated linearly between them. The table's slope is capped at `max_slope`: the ONNX base
model's probability differs from the native one by up to ~3e-7, and a capped slope keeps the
calibrated difference below max_slope * 3e-7 (7.5e-6 at the default 25), where a raw isotonic
step between two close knots would turn it into a jump. `transform` and the ONNX graph evaluate
the same table with the same arithmetic in double precision.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from pdmflow.models.onnx import OUTPUT_NAMES, rename_value, with_default_opset

METHODS = ("sigmoid", "isotonic")
LOGIT_START, LOGIT_STOP, KNOT_COUNT = -12.0, 12.0, 481  # knots 0.05 apart in logit space
PREFIX = "calibration_"


def expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _cap_slope(knots: np.ndarray, values: np.ndarray, max_slope: float) -> np.ndarray:
    """A non-decreasing table with slope <= max_slope everywhere, as close to `values` as a
    symmetric ramp allows: the mean of the forward-capped (lags behind each steep rise) and the
    backward-capped (leads it) tables, so a steep rise becomes a ramp centred on it."""
    widths = np.diff(knots) * max_slope
    forward, backward = values.copy(), values.copy()
    for k in range(1, len(values)):
        forward[k] = min(values[k], forward[k - 1] + widths[k - 1])
    for k in range(len(values) - 2, -1, -1):
        backward[k] = max(values[k], backward[k + 1] - widths[k])
    return (forward + backward) / 2


class Calibrator:
    """Maps a model's failure probability to a calibrated one.

    method: "sigmoid" (Platt scaling on the logit of the clipped probability) or "isotonic"
    (IsotonicRegression with out_of_bounds="clip"). max_slope bounds d(output)/d(input).
    """

    def __init__(self, method: str = "sigmoid", max_slope: float = 25.0) -> None:
        if method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
        if not max_slope > 0:
            raise ValueError(f"calibration max_slope must be positive, got {max_slope}")
        self.method = method
        self.max_slope = float(max_slope)
        self.knots = expit(np.linspace(LOGIT_START, LOGIT_STOP, KNOT_COUNT))
        self.values_: np.ndarray | None = None
        self.parameters_: dict[str, Any] = {}

    def fit(self, probability: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit the map from uncalibrated probabilities to 0/1 outcomes; returns self."""
        probability = self._validated(probability)
        y = np.asarray(y)
        if y.shape != probability.shape:
            raise ValueError(
                f"calibration: {len(probability)} probabilities but y has shape {y.shape}"
            )
        if set(np.unique(y)) != {0, 1}:
            raise ValueError(
                f"calibration: y must hold both 0 and 1, got {sorted(set(np.unique(y)))}"
            )
        # The table covers the knots' range; fitting sees the same clipped values.
        clipped = np.clip(probability, self.knots[0], self.knots[-1])
        if self.method == "sigmoid":
            # C=inf: plain Platt scaling, no regularisation pulling the slope towards 0.
            platt = LogisticRegression(C=np.inf).fit(logit(clipped)[:, None], y)
            slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
            values = expit(slope * logit(self.knots) + intercept)
            self.parameters_ = {"slope": slope, "intercept": intercept}
        else:
            isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            isotonic.fit(clipped, y)
            values = isotonic.predict(self.knots)
            self.parameters_ = {
                "thresholds": isotonic.X_thresholds_.tolist(),
                "calibrated": isotonic.y_thresholds_.tolist(),
            }
        self.values_ = _cap_slope(self.knots, values, self.max_slope)
        return self

    def transform(self, probability: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64), the same function the ONNX graph computes."""
        values = self._fitted_values()
        p = np.clip(self._validated(probability), self.knots[0], self.knots[-1])
        segment = np.searchsorted(self.knots[1:-1], p, side="right")  # interior knots <= p
        return values[segment] + (p - self.knots[segment]) * self._slopes()[segment]

    def to_dict(self) -> dict[str, Any]:
        """Method, fitted parameters and the interpolation table, JSON-serialisable."""
        values = self._fitted_values()
        return {
            "method": self.method,
            "max_slope": self.max_slope,
            "parameters": self.parameters_,
            "knots_logit": {"start": LOGIT_START, "stop": LOGIT_STOP, "count": KNOT_COUNT},
            "values": values.tolist(),
        }

    def append_to_onnx(
        self, model: onnx.ModelProto, output: str = OUTPUT_NAMES["classification"]
    ) -> onnx.ModelProto:
        """A copy of `model` whose output `output` [N] float32 is the calibrated probability;
        name and shape are unchanged, the uncalibrated value is an internal tensor."""
        values = self._fitted_values()
        if output not in [o.name for o in model.graph.output]:
            raise ValueError(f"calibration: the model has no output named {output!r}")
        # Every operator used below exists, with double support, from opset 9.
        calibrated = copy.deepcopy(with_default_opset(model, 9))
        graph = calibrated.graph
        uncalibrated = PREFIX + "uncalibrated"
        rename_value(graph, output, uncalibrated)
        for info in graph.output:
            if info.name == uncalibrated:
                info.name = output
        interior = len(self.knots) - 2

        def constant(name: str, array: np.ndarray, dtype: int = TensorProto.DOUBLE) -> str:
            graph.initializer.append(
                helper.make_tensor(PREFIX + name, dtype, array.shape, array.ravel().tolist())
            )
            return PREFIX + name

        def node(op: str, inputs: list[str], name: str, **attributes: Any) -> str:
            graph.node.append(
                helper.make_node(op, inputs, [PREFIX + name], name=PREFIX + name, **attributes)
            )
            return PREFIX + name

        p = node("Cast", [uncalibrated], "as_double", to=TensorProto.DOUBLE)
        p = node("Max", [p, constant("first_knot", self.knots[:1])], "above_first")
        p = node("Min", [p, constant("last_knot", self.knots[-1:])], "probability")
        column = node(
            "Reshape", [p, constant("column_shape", np.array([-1, 1]), TensorProto.INT64)], "column"
        )
        # segment = number of interior knots <= p = interior - number of them above p.
        above = node("Less", [column, constant("interior_knots", self.knots[1:-1])], "above")
        above = node("Cast", [above], "above_double", to=TensorProto.DOUBLE)
        above = node("MatMul", [above, constant("ones", np.ones(interior))], "count_above")
        segment = node(
            "Sub", [constant("interior", np.array(float(interior))), above], "segment_double"
        )
        segment = node("Cast", [segment], "segment", to=TensorProto.INT64)
        start = node("Gather", [constant("knots", self.knots), segment], "segment_start")
        base = node("Gather", [constant("values", values), segment], "segment_value")
        slope = node("Gather", [constant("slopes", self._slopes()), segment], "segment_slope")
        offset = node("Sub", [p, start], "offset")
        rise = node("Mul", [offset, slope], "rise")
        result = node("Add", [base, rise], "result")
        graph.node.append(
            helper.make_node(
                "Cast", [result], [output], name=PREFIX + "output", to=TensorProto.FLOAT
            )
        )
        onnx.checker.check_model(calibrated, full_check=True)
        return calibrated

    def _slopes(self) -> np.ndarray:
        values = self._fitted_values()
        return np.append(np.diff(values) / np.diff(self.knots), 0.0)

    def _fitted_values(self) -> np.ndarray:
        if self.values_ is None:
            raise RuntimeError("Calibrator is not fitted: call fit(probability, y) first")
        return self.values_

    @staticmethod
    def _validated(probability: np.ndarray) -> np.ndarray:
        p = np.asarray(probability, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"calibration: expected a 1-D array of probabilities, got {p.shape}")
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError("calibration: probabilities must be finite values in [0, 1]")
        return p
