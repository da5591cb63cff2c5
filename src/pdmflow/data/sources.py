"""Read telemetry and failure events from the configured source and map the tenant's columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pdmflow.config import TenantConfig, database_password
from pdmflow.data.synthetic import generate_fleet
from pdmflow.errors import DataValidationError


def redact_url(url: str) -> str:
    """The URL with any password masked, safe for params, tags and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (a path, say): nothing to hide
        return url


def describe_source(config: TenantConfig) -> str:
    """A short, secret-free description of where the data comes from."""
    source = config.source
    if source.kind == "synthetic":
        s = source.synthetic
        return f"synthetic://fleet?devices={s.n_devices}&days={s.days}&seed={s.seed}"
    if source.kind == "sql":
        return f"{redact_url(source.url or '')}#{source.telemetry_table}"
    return str(source.telemetry_path)


def _read_file(path_text: str, kind: str, role: str) -> pd.DataFrame:
    path = Path(path_text)
    if not path.is_file():
        raise DataValidationError(f"{role} file {path}: not found")
    try:
        if kind == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types; the user needs the file and the reason
        raise DataValidationError(f"{role} file {path}: cannot be read as {kind} ({exc})") from exc


def _engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    password = database_password()
    if password and not parsed.password:
        parsed = parsed.set(password=password)
    return sa.create_engine(parsed)


def _read_table(engine: sa.Engine, table_name: str, role: str) -> pd.DataFrame:
    # Reflection both checks that the table exists and lets SQLAlchemy quote its name:
    # nothing from the config is ever pasted into SQL text.
    try:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise DataValidationError(f"{role} table '{table_name}': not found") from None
    with engine.connect() as connection:
        return pd.read_sql(sa.select(table), connection)


def _apply_renames(frame: pd.DataFrame, config: TenantConfig) -> pd.DataFrame:
    renames = {k: v for k, v in config.schema_.rename.items() if k in frame.columns}
    return frame.rename(columns=renames)


def read_source(config: TenantConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return raw (telemetry, events) from the tenant's source, columns renamed to pdmflow's."""
    source, schema = config.source, config.schema_
    empty_events = pd.DataFrame(columns=[schema.device_column, schema.event_time_column])
    if source.kind == "synthetic":
        return generate_fleet(
            source.synthetic,
            schema.continuous_sensors,
            schema.boolean_sensors,
            schema.device_column,
            schema.time_column,
            schema.event_time_column,
            config.labels.target_column,
            config.labels.horizon_hours,
        )
    if source.kind in ("csv", "parquet"):
        telemetry = _read_file(str(source.telemetry_path), source.kind, "telemetry")
        events = (
            _read_file(source.events_path, source.kind, "events")
            if source.events_path
            else empty_events
        )
    else:
        engine = _engine(str(source.url))
        try:
            telemetry = _read_table(engine, str(source.telemetry_table), "telemetry")
            events = (
                _read_table(engine, source.events_table, "events")
                if source.events_table
                else empty_events
            )
        except sa.exc.OperationalError as exc:
            message = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot connect"
            raise DataValidationError(
                f"database {redact_url(str(source.url))}: {message}"
            ) from None
        finally:
            engine.dispose()
    return _apply_renames(telemetry, config), _apply_renames(events, config)
