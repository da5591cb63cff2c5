"""Serving: load a released model with the feature spec that travels with it, score telemetry.

scorer = FailureScorer.load("models:/pdmflow-default-failure/Production")
scorer.score_telemetry(raw_telemetry)  # one probability per device, at its latest reading
scorer.score_telemetry(raw_telemetry, explain=3)  # ... with each device's top three reasons
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from onnxruntime import InferenceSession

from pdmflow.data.labels import health_status
from pdmflow.data.validation import (
    clean_arrays,
    filled_gaps,
    normalise_events,
    normalise_telemetry,
)
from pdmflow.errors import ModelFilesError, PdmflowError, first_line
from pdmflow.evaluation.explain import Explainer, top_features
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.latest import LatestFeatures
from pdmflow.models.onnx import OUTPUT_NAMES
from pdmflow.serving.health import latest_health, sensor_health
from pdmflow.tracking import downloaded

SPEC_PATH = "extra_files/feature_spec.json"


def load_feature_spec(model_uri: str) -> FeatureSpec:
    """The feature spec logged inside the model (train puts it there)."""
    with downloaded(model_uri) as local:
        return FeatureSpec.from_json((local / SPEC_PATH).read_text())


def _typed_events(events: pd.DataFrame, spec: FeatureSpec) -> bool:
    """Events already as normalising makes them: text devices, naive datetime64[ns] times."""
    device, when = spec.device_column, spec.event_time_column
    if device not in events.columns or when not in events.columns:
        return False
    names = events[device]
    return (
        pd.api.types.is_string_dtype(names)
        and not names.hasnans
        and events[when].dtype == "datetime64[ns]"
        and not events[when].hasnans
    )


def validate_for_spec(
    telemetry: pd.DataFrame, events: pd.DataFrame | None, spec: FeatureSpec, where: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Telemetry (and events) validated and normalised by the rules training applied, sorted
    by device then time, in the spec's columns; `where` names the input in errors. Gaps
    (missing sensor values) stay NaN: scoring reads them for sensor health, then fills them."""
    clean, _ = normalise_telemetry(
        telemetry,
        spec.device_column,
        spec.time_column,
        spec.continuous_sensors,
        spec.boolean_sensors,
        where,
        fill_gaps=False,
    )
    if events is not None:
        events = normalise_events(
            events, spec.device_column, spec.event_time_column, f"events for {where}"
        )
    return clean, events


def check_model_files(local: Path, model_uri: str) -> None:
    """The files serving needs, present and readable, or one line naming what is wrong: the
    MLmodel file, the ONNX graph (loaded by ONNX Runtime, as serving will), the feature spec."""
    if not (local / "MLmodel").is_file():
        raise ModelFilesError(f"model {model_uri}: no MLmodel file (not an MLflow model)")
    try:
        flavor = Model.load(str(local)).flavors.get("onnx")
    except Exception as error:
        raise ModelFilesError(
            f"model {model_uri}: MLmodel is not readable ({first_line(error)})"
        ) from None
    if flavor is None:
        raise ModelFilesError(f"model {model_uri}: not an ONNX model (no onnx flavor in MLmodel)")
    graph = local / flavor.get("data", "model.onnx")
    if not graph.is_file():
        raise ModelFilesError(f"model {model_uri}: ONNX file {graph.name} is missing")
    try:
        InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelFilesError(
            f"model {model_uri}: ONNX file {graph.name} is not loadable ({first_line(error)})"
        ) from None
    spec = local / SPEC_PATH
    if not spec.is_file():
        raise ModelFilesError(f"model {model_uri}: feature spec {SPEC_PATH} is missing")
    try:
        FeatureSpec.from_json(spec.read_text())
    except PdmflowError:
        raise
    except Exception as error:
        raise ModelFilesError(
            f"model {model_uri}: feature spec {SPEC_PATH} is not readable ({first_line(error)})"
        ) from None


def _packed(directory: Path) -> bytes:
    """The files under `directory` as an uncompressed tar archive (ONNX graphs barely compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(directory, arcname=".")
    return buffer.getvalue()


class FailureScorer:
    """A released model plus the spec and decision rules it was trained with.

    Classification models give `failure_probability` and `predicted_failure` (at the model's
    decision threshold); RUL models give `remaining_useful_life_hours` and `health_status`.
    Scores of raw telemetry carry `sensor_health` (`pdmflow.serving.health`).
    `explainer` is the model's SHAP explainer, None for models released without one.
    """

    def __init__(self, model_path: Path, model_uri: str) -> None:
        self.model_uri = model_uri
        self.files: bytes | None = None
        self.model = mlflow.pyfunc.load_model(str(model_path))
        self.spec = FeatureSpec.from_json((model_path / SPEC_PATH).read_text())
        self.metadata = Model.load(str(model_path)).metadata or {}
        self.task = self.metadata.get("task", "classification")
        self.explainer = Explainer.load_from_model_dir(model_path)
        self.latest = LatestFeatures(self.spec)
        # Versions logged before the tensor signature take named float64 columns; tensor
        # versions take float64 (float32 before pyfunc took pandas' own dtype).
        schema = self.model.metadata.get_input_schema()
        self._named_columns = schema is not None and not schema.is_tensor_spec()
        self.input_dtype = (
            schema.inputs[0].type
            if schema is not None and schema.is_tensor_spec()
            else np.dtype(np.float64)
        )

    @classmethod
    def load(cls, model_uri: str, keep_files: bool = False) -> FailureScorer:
        """`models:/<name>/Production`, `models:/<name>@champion`, or any model URI.

        With `keep_files`, `scorer.files` holds the model's files (a tar archive) for
        `from_files` in another process: a Dask worker loads the very files checked here.
        """
        # Everything is read into memory here, so the downloaded copy can go.
        try:
            with downloaded(model_uri) as local:
                check_model_files(local, model_uri)
                scorer = cls(local, model_uri)
                if keep_files:
                    scorer.files = _packed(local)
                return scorer
        except PdmflowError:
            raise
        except Exception as error:  # an unknown URI, an unreadable store
            raise ModelFilesError(
                f"model {model_uri}: cannot be read ({first_line(error)})"
            ) from None

    @classmethod
    def from_files(cls, files: bytes, model_uri: str) -> FailureScorer:
        """The scorer of the model whose files `load(..., keep_files=True)` kept."""
        try:
            with tempfile.TemporaryDirectory(prefix="pdmflow-model-") as tmp:
                with tarfile.open(fileobj=io.BytesIO(files)) as archive:
                    archive.extractall(tmp, filter="data")
                return cls(Path(tmp), model_uri)
        except PdmflowError:
            raise
        except Exception as error:  # a worker without room, or with other library versions
            raise ModelFilesError(
                f"model {model_uri}: cannot be loaded here ({first_line(error)})"
            ) from None

    def score_features(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions for feature rows: a frame holding the spec's feature columns, or an
        array [N, n_features] in the spec's order."""
        if isinstance(features, pd.DataFrame):
            features = features[self.spec.feature_names]
        if self._named_columns:
            frame = pd.DataFrame(
                np.asarray(features, dtype=np.float64), columns=self.spec.feature_names
            )
            return self.model.predict(frame)[OUTPUT_NAMES[self.task]].to_numpy()
        values = np.asarray(features, dtype=self.input_dtype)
        return self.model.predict(values)[OUTPUT_NAMES[self.task]]

    def score_telemetry(
        self, telemetry: pd.DataFrame, events: pd.DataFrame | None = None, explain: int = 0
    ) -> pd.DataFrame:
        """One row per device: its latest timestamp, failure probability, alert flag and
        `sensor_health` (`ok`, or e.g. `pressure:missing;vibration:flat-lined`: see
        `pdmflow.serving.health`).

        `events` (device, event time) are the devices' known failures; a model with the
        hours_since_failure feature needs them.

        With `explain=k`, each device's k largest SHAP contributions follow, by |contribution|:
        `reason_1_feature`, `reason_1_value`, `reason_1_contribution`, ..., `reason_k_...`
        (the feature, its value at the device's latest reading, and its SHAP value on the
        model's margin scale before calibration: log-odds for LightGBM classifiers, the
        forest's failure vote for Random Forest classifiers, hours for RUL models).
        """
        if explain < 0:
            raise ValueError(f"explain: the number of reasons per device, got {explain}")
        if explain:
            self._require_explainer()  # before any work
        spec = self.spec
        ready = clean_arrays(
            telemetry,
            spec.device_column,
            spec.time_column,
            spec.continuous_sensors,
            spec.boolean_sensors,
        )
        if ready is None:  # anything to normalise: the full rules, as training applied them
            clean, events = validate_for_spec(telemetry, events, spec, "telemetry to score")
            return self.score_validated(clean, events, explain)
        if events is not None and not _typed_events(events, spec):
            events = normalise_events(
                events, spec.device_column, spec.event_time_column, "events to score"
            )
        health = latest_health(ready.devices, ready.times, ready.continuous, spec)
        return self._score(*self.latest.from_arrays(ready, events), health, explain)

    def score_validated(
        self, telemetry: pd.DataFrame, events: pd.DataFrame | None = None, explain: int = 0
    ) -> pd.DataFrame:
        """`score_telemetry` for telemetry (and events) already validated and sorted by
        device then time (`validate_for_spec`), as batch scoring holds them; gaps (NaN) are
        read for sensor health, then carried forward within each device."""
        spec = self.spec
        health = sensor_health(telemetry, spec).to_numpy()
        sensors = [*spec.continuous_sensors, *spec.boolean_sensors]
        if telemetry[sensors].isna().to_numpy().any():
            telemetry = filled_gaps(telemetry, spec.device_column, sensors)
        return self._score(*self.latest.matrix(telemetry, events), health, explain)

    def _score(
        self,
        devices: np.ndarray,
        times: np.ndarray,
        values: np.ndarray,
        health: np.ndarray,
        explain: int,
    ) -> pd.DataFrame:
        spec = self.spec
        # One frame built at once: adding columns one by one costs more than the model.
        scored = pd.DataFrame(
            {
                spec.device_column: devices,
                spec.time_column: times,
                **self.decisions(self.score_features(values)),
                "sensor_health": health,
            }
        )
        if explain:
            features = pd.DataFrame(values, columns=spec.feature_names)
            scored = pd.concat([scored, self.reasons(features, explain)], axis=1)
        return scored

    def decisions(self, prediction: np.ndarray) -> dict[str, np.ndarray]:
        """The prediction and the decision, as columns: the alert flag `predicted_failure` at
        the model's threshold, or an RUL model's `health_status`."""
        columns = {OUTPUT_NAMES[self.task]: prediction}
        if self.task == "classification":
            columns["predicted_failure"] = prediction >= float(self.metadata["decision_threshold"])
        else:
            columns["health_status"] = health_status(
                pd.Series(prediction),
                self.metadata["critical_hours"],
                self.metadata["warning_hours"],
            ).to_numpy()
        return columns

    def decide(self, scored: pd.DataFrame, prediction: np.ndarray) -> pd.DataFrame:
        """`scored` (device and time per row) with the `decisions` columns added."""
        for name, column in self.decisions(prediction).items():
            scored[name] = column
        return scored

    def _require_explainer(self) -> Explainer:
        if self.explainer is None:
            raise PdmflowError(
                f"model {self.model_uri} carries no SHAP explainer (released before "
                f"explanations existed): retrain it, or score with explain=0"
            )
        return self.explainer

    def reasons(self, features: pd.DataFrame, k: int) -> pd.DataFrame:
        """The `reason_<i>_feature/value/contribution` columns (i = 1..k) for feature rows,
        on their index; missing (None/NaN) past the model's number of inputs."""
        tops = top_features(self._require_explainer().explain(features), k)
        columns: dict[str, list[object]] = {}
        for i in range(k):
            picked = [row[i] if i < len(row) else (None, np.nan, np.nan) for row in tops]
            columns[f"reason_{i + 1}_feature"] = [name for name, _, _ in picked]
            columns[f"reason_{i + 1}_value"] = [value for _, value, _ in picked]
            columns[f"reason_{i + 1}_contribution"] = [c for _, _, c in picked]
        return pd.DataFrame(columns, index=features.index)
