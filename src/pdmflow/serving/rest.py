"""The REST path for raw telemetry: `pdmflow serve` answers with FailureScorer's rows.

`mlflow models serve` scores feature rows and cannot see a sensor: this endpoint takes the
readings themselves, builds each device's latest features as training built them, and returns
the probability, the alert and `sensor_health` per device.

    POST /score   {"telemetry": {"columns": [...], "data": [[...], ...]} or [{...}, ...],
                   "events": (the same shapes, optional), "explain": 0}
    ->            {"model_name", "model_version", "model_uri", "rows": [{device, time,
                   failure_probability, predicted_failure, sensor_health, ...}, ...]}
    GET  /health  {"status": "ok", "model_name", "model_version", "model_uri"}
    GET  /ping    200 (what MLflow's scoring server answers, for load balancers)

Columns are the tenant's schema (`schema.rename` applies). Bad input answers 400 with the
same one line `pdmflow score` prints. A stage or alias URI is re-resolved at most every
`refresh_seconds`, so a release (or a rollback) is served without a restart; the version that
scored is in every answer.

The app is FastAPI on uvicorn, which MLflow's own scoring server runs on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from pdmflow.config import TenantConfig
from pdmflow.data.sources import _apply_renames
from pdmflow.errors import PdmflowError, StepInputError, first_line
from pdmflow.registry.versions import resolve_model, serving_uri
from pdmflow.serving.scorer import FailureScorer

DEFAULT_PORT = 5002
DEFAULT_REFRESH_SECONDS = 60.0
# Reasons per device that a request may ask for (each costs a SHAP pass).
MAX_EXPLAIN = 20


@dataclass
class _Loaded:
    name: str
    version: str
    pinned_uri: str
    scorer: FailureScorer


class ServedModel:
    """The scorer behind a model URI; a stage or alias is followed as releases move it."""

    def __init__(self, model_uri: str, refresh_seconds: float = DEFAULT_REFRESH_SECONDS) -> None:
        self.model_uri = model_uri
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loaded = self._load()
        self._checked = time.monotonic()

    def _load(self) -> _Loaded:
        name, version, pinned_uri = resolve_model(self.model_uri)
        return _Loaded(name, version, pinned_uri, FailureScorer.load(pinned_uri))

    def current(self) -> _Loaded:
        """The loaded version, reloaded first when the URI now names another one."""
        with self._lock:
            if time.monotonic() - self._checked >= self.refresh_seconds:
                self._checked = time.monotonic()
                try:
                    _, version, _ = resolve_model(self.model_uri)
                except PdmflowError:
                    version = self._loaded.version  # the registry away: keep serving
                if version != self._loaded.version:
                    self._loaded = self._load()
            return self._loaded


def _frame(payload: Any, what: str) -> pd.DataFrame:
    """A frame from {"columns": [...], "data": [[...]]} or a list of records."""
    if isinstance(payload, dict) and set(payload) >= {"columns", "data"}:
        try:
            return pd.DataFrame(payload["data"], columns=payload["columns"])
        except (TypeError, ValueError) as error:
            raise StepInputError(f"{what}: columns and data do not match ({error})") from None
    if isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
        return pd.DataFrame.from_records(payload)
    raise StepInputError(
        f'{what}: expected {{"columns": [...], "data": [[...], ...]}} or a list of records'
    )


def _records(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: times as ISO text, NaN as null."""
    return json.loads(scored.to_json(orient="records", date_format="iso"))


def create_app(config: TenantConfig, served: ServedModel) -> FastAPI:
    """The app: /score, /health and /ping over one served model."""
    app = FastAPI(title=f"pdmflow {config.tenant_id}", docs_url="/docs", redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health")
    def health() -> dict[str, str]:
        loaded = served.current()
        return {
            "status": "ok",
            "model_name": loaded.name,
            "model_version": loaded.version,
            "model_uri": loaded.pinned_uri,
        }

    @app.post("/score", response_model=None)
    def score(request: dict[str, Any] = Body(...)) -> JSONResponse | dict[str, Any]:  # noqa: B008
        try:
            unknown = sorted(set(request) - {"telemetry", "events", "explain"})
            if unknown:
                raise StepInputError(
                    f"request: unknown key {unknown[0]!r} (expected telemetry, events, explain)"
                )
            if "telemetry" not in request:
                raise StepInputError("request: missing key 'telemetry' (the devices' readings)")
            explain = request.get("explain", 0)
            if not isinstance(explain, int) or not 0 <= explain <= MAX_EXPLAIN:
                raise StepInputError(f"request: explain must be 0..{MAX_EXPLAIN}, got {explain!r}")
            telemetry = _apply_renames(_frame(request["telemetry"], "telemetry"), config)
            events = request.get("events")
            if events is not None:
                events = _apply_renames(_frame(events, "events"), config)
            loaded = served.current()
            scored = loaded.scorer.score_telemetry(telemetry, events, explain=explain)
        except (PdmflowError, ValueError, KeyError) as failure:
            return error(400, first_line(failure))
        return {
            "model_name": loaded.name,
            "model_version": loaded.version,
            "model_uri": loaded.pinned_uri,
            "rows": _records(scored),
        }

    return app


def serve(
    config: TenantConfig,
    model_uri: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
) -> None:
    """Load the model (default: the tenant's Production version) and answer until stopped."""
    import uvicorn

    uri = model_uri or serving_uri(config.registered_model_name, config.registry.mode)
    try:
        served = ServedModel(uri, refresh_seconds)
    except PdmflowError:
        raise
    except Exception as failure:
        raise StepInputError(f"model URI {uri}: cannot be loaded ({first_line(failure)})") from None
    loaded = served.current()
    print(
        f"serving {loaded.name} version {loaded.version or '-'} ({uri}) on "
        f"http://{host}:{port}/score",
        flush=True,
    )
    uvicorn.run(create_app(config, served), host=host, port=port, log_level="warning")
