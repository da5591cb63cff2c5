"""Read telemetry and failure events from the configured source and map the tenant's columns."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pdmflow.config import TenantConfig, database_password
from pdmflow.config.base import SECRET_QUERY_KEYS
from pdmflow.data.synthetic import generate_synthetic
from pdmflow.data.synthetic.fleet import fleet_groups, fleet_rows
from pdmflow.errors import DataValidationError, SourceUnreachable

# Query-string keys that carry a secret in some drivers' URLs (?password=..., ?sslpassword=...).
SECRET_QUERY_KEY = re.compile(SECRET_QUERY_KEYS, re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password masked, in its password part or its query string: safe for
    params, tags, logs and model cards."""
    try:
        parsed = make_url(url)
    except Exception:  # not a SQLAlchemy URL (a path, say): nothing to hide
        return url
    hidden = {k: "REDACTED" for k in parsed.query if SECRET_QUERY_KEY.search(k)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def _apply_renames(frame: pd.DataFrame, config: TenantConfig) -> pd.DataFrame:
    renames = {k: v for k, v in config.schema_.rename.items() if k in frame.columns}
    return frame.rename(columns=renames)


def describe_source(config: TenantConfig) -> str:
    """A short, secret-free description of where the data comes from."""
    source = config.source
    if source.kind == "synthetic":
        s = source.synthetic
        if s.process_log:
            return f"synthetic://process_log?days={s.days}&seed={s.seed}"
        shape = (
            "run_to_failure"
            if s.run_to_failure
            else ("component_fleet" if s.component_failures else "fleet")
        )
        return f"synthetic://{shape}?devices={s.n_devices}&days={s.days}&seed={s.seed}"
    if source.kind == "dataframe":
        return "dataframe://in-memory"
    if source.kind == "sql":
        return f"{redact_url(source.url or '')}#{source.telemetry_table}"
    return str(source.telemetry_path)


# The file name endings each file kind reads when its path is a directory.
SUFFIXES = {"csv": (".csv",), "json": (".json",), "jsonl": (".jsonl",), "parquet": (".parquet",)}
_GLOB = re.compile(r"[*?\[]")


def _files(path_text: str, kind: str, role: str) -> tuple[Any, list[str], str | None]:
    """(filesystem, the files to read in name order) for a file, a glob (daily-*.csv) or a
    directory (every file of the kind in it and below, as a Parquet dataset is laid out, hive
    partitions included); any fsspec URL (s3://... with s3fs installed) or a local path. The
    third value is the directory's path (None for a file or a glob)."""
    key = f"source.{role}_path"
    try:
        fs, path = fsspec.core.url_to_fs(path_text)
        if _GLOB.search(path) and not fs.exists(path):  # a name with [ or ? is still a name
            files = sorted(fs.glob(path))
            if not files:
                raise DataValidationError(f"{role} files {path_text} ({key}): no file matches")
            return fs, files, None
        if fs.isdir(path):
            files = sorted(
                name
                for name in fs.find(path)
                if name.endswith(SUFFIXES[kind]) and not Path(name).name.startswith((".", "_"))
            )
            if not files:
                raise DataValidationError(
                    f"{role} directory {path_text} ({key}): no {'/'.join(SUFFIXES[kind])} "
                    "file in it"
                )
            return fs, files, path.rstrip("/")
        if not fs.isfile(path):
            raise DataValidationError(f"{role} file {path_text}: not found")
    except DataValidationError:
        raise
    except Exception as exc:  # a missing filesystem package, access denied, no such bucket
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataValidationError(
            f"{role} file {path_text} ({key}): cannot be opened ({reason})"
        ) from None
    return fs, [path], None


# What a writer (pyarrow, Spark, Hive) puts in a partition folder for a missing value.
HIVE_MISSING = "__HIVE_DEFAULT_PARTITION__"


def _hive_values(name: str, root: str) -> dict[str, str | None]:
    """The key=value folders between a dataset's root and one of its files, values decoded
    as their writers encode them (pump%201 is 'pump 1'; the default partition is missing)."""
    relative = name[len(root) :].strip("/").split("/")[:-1]
    pairs = (part.split("=", 1) for part in relative if "=" in part)
    return {
        unquote(column): None if value == HIVE_MISSING else unquote(value)
        for column, value in pairs
    }


def _read_one(
    fs: Any, name: str, kind: str, filters: list[tuple[str, str, Any]] | None = None
) -> pd.DataFrame:
    with fs.open(name, "rb") as handle:
        if kind == "csv":
            return pd.read_csv(handle)
        if kind in ("json", "jsonl"):
            return pd.read_json(handle, lines=kind == "jsonl", convert_dates=False)
        return pd.read_parquet(handle, filters=filters)


def _read_listed(
    fs: Any,
    name: str,
    kind: str,
    role: str,
    root: str | None,
    shown: str,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pd.DataFrame:
    """One file `_files` listed (only the rows Parquet `filters` keep), its hive folders as
    columns; a file that cannot be read is one line naming it (`shown`) and why."""
    try:
        frame = _read_one(fs, name, kind, filters)
    except Exception as exc:  # pandas raises many types; the user needs the file and why
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataValidationError(
            f"{role} file {shown}: cannot be read as {kind} ({reason})"
        ) from None
    if root is not None:
        for column, value in _hive_values(name, root).items():
            if column not in frame.columns:
                frame[column] = value
    return frame


def _read_file(path_text: str, kind: str, role: str) -> pd.DataFrame:
    """The rows of every file `path_text` names (`_files`), concatenated in file-name order; a
    Parquet dataset's hive partition folders (device_id=pump_1/) come back as columns."""
    fs, files, root = _files(path_text, kind, role)
    frames = [
        _read_listed(fs, name, kind, role, root, name if len(files) > 1 else path_text)
        for name in files
    ]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    password = database_password()
    if password and not parsed.password:
        parsed = parsed.set(password=password)
    return sa.create_engine(parsed)


def _table(engine: sa.Engine, qualified_name: str, role: str) -> sa.Table:
    # Reflection checks that the table exists and gives SQLAlchemy the names to quote:
    # nothing from the config is ever pasted into SQL text.
    schema, _, name = qualified_name.rpartition(".")
    try:
        return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise DataValidationError(f"{role} table '{qualified_name}': not found") from None


def _source_name(config: TenantConfig, column: str) -> str:
    """The source's own name for a pdmflow column (undoing schema.rename)."""
    inverse = {target: source for source, target in config.schema_.rename.items()}
    return inverse.get(column, column)


def _filtered_select(
    table: sa.Table, config: TenantConfig, time_column: str | None, role: str
) -> sa.Select:
    """SELECT of the tenant's rows; the date range applies when `time_column` is given."""
    source = config.source
    device = _source_name(config, config.schema_.device_column)
    filters = [
        (source.tenant_column, lambda c: c == config.tenant_id, source.tenant_column),
        (device, lambda c: c.in_(source.devices), source.devices),
    ]
    if time_column:
        time = _source_name(config, time_column)
        filters += [
            (time, lambda c: c >= source.start, source.start),
            (time, lambda c: c < source.end, source.end),
        ]
    query = sa.select(table)
    for column, condition, wanted in filters:
        if not wanted:
            continue
        if column not in table.c:
            raise DataValidationError(
                f"{role} table '{table.fullname}': missing column '{column}' to filter on"
            )
        query = query.where(condition(table.c[column]))  # values are bound parameters
    return query


def _read_sql(
    engine: sa.Engine, query: sa.Select, chunk_rows: int, what: str = "the query"
) -> tuple[pd.DataFrame, int]:
    """Rows of `query` read through a server-side cursor, `chunk_rows` at a time.

    A connection lost part-way (the server restarted, the backend was terminated) raises
    SourceUnreachable naming `what` and the database: the rows read so far are dropped, never
    used, so the next attempt reads from the start.
    """
    parts: list[pd.DataFrame] = []
    try:
        with engine.connect().execution_options(
            stream_results=True, max_row_buffer=chunk_rows
        ) as c:
            for part in pd.read_sql(query, c, chunksize=chunk_rows):
                parts.append(part)
    except sa.exc.DBAPIError as exc:
        if not (exc.connection_invalidated or parts):
            raise  # never connected, or refused the query: the caller's message
        message = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection lost"
        read = sum(len(part) for part in parts)
        raise SourceUnreachable(
            f"database {redact_url(engine.url.render_as_string(hide_password=False))}: "
            f"connection lost reading {what} after {read:,} rows ({message}): nothing was "
            "ingested; run ingest again when the database is back (it reads from the start)"
        ) from None
    if not parts:
        return pd.DataFrame(columns=[col.name for col in query.selected_columns]), 0
    return pd.concat(parts, ignore_index=True), len(parts)


def _read_database(config: TenantConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    source = config.source
    engine = _engine(str(source.url))
    try:
        with _database_errors(config):
            query = _telemetry_select(engine, config)
            telemetry, _ = _read_sql(
                engine, query, source.chunk_rows, f"table {source.telemetry_table}"
            )
            events = _read_events_table(engine, config)
    finally:
        engine.dispose()
    return telemetry, events


def _telemetry_select(engine: sa.Engine, config: TenantConfig) -> sa.Select:
    table = _table(engine, str(config.source.telemetry_table), "telemetry")
    return _filtered_select(table, config, config.schema_.time_column, "telemetry")


def _read_events_table(engine: sa.Engine, config: TenantConfig) -> pd.DataFrame:
    source, schema = config.source, config.schema_
    if not source.events_table:
        return pd.DataFrame(columns=[schema.device_column, schema.event_time_column])
    # All of the devices' failures, not only the date range: labels near the end of the range
    # and hours_since_failure need the ones just outside it.
    events_table = _table(engine, source.events_table, "events")
    events, _ = _read_sql(
        engine,
        _filtered_select(events_table, config, None, "events"),
        source.chunk_rows,
        f"table {source.events_table}",
    )
    return events


@contextmanager
def _database_errors(config: TenantConfig) -> Iterator[None]:
    """A database that cannot be reached as one line naming it (password masked)."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        message = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot connect"
        url = redact_url(str(config.source.url))
        raise DataValidationError(f"database {url}: {message}") from None


def read_source(
    config: TenantConfig, frames: tuple[pd.DataFrame, pd.DataFrame | None] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return raw (telemetry, events) from the tenant's source, columns renamed to pdmflow's.

    `frames` are in-memory (telemetry, events) for `source.kind: dataframe` (the Python API).
    """
    source, schema = config.source, config.schema_
    empty_events = pd.DataFrame(columns=[schema.device_column, schema.event_time_column])
    if source.kind == "synthetic":
        return generate_synthetic(*_synthetic_arguments(config))
    if source.kind == "dataframe":
        if frames is None:
            raise DataValidationError(
                "source.kind is dataframe: pass (telemetry, events) frames to the Python API"
            )
        telemetry, events = frames[0], frames[1] if frames[1] is not None else empty_events
    elif source.kind == "sql":
        telemetry, events = _read_database(config)
    else:
        telemetry = _read_file(str(source.telemetry_path), source.kind, "telemetry")
        events = (
            _read_file(source.events_path, source.kind, "events")
            if source.events_path
            else empty_events
        )
    return _apply_renames(telemetry, config), _apply_renames(events, config)


def _synthetic_arguments(config: TenantConfig) -> tuple[Any, ...]:
    """What the synthetic generators take, from the tenant's config."""
    schema = config.schema_
    return (
        config.source.synthetic,
        schema.continuous_sensors,
        schema.boolean_sensors,
        schema.device_column,
        schema.time_column,
        schema.event_time_column,
        config.labels.target_column,
        config.labels.horizon_hours,
    )


@dataclass
class SourceGroups:
    """A source read in groups of whole devices: `groups` gives each group's raw telemetry
    with the failure events its labels are counted from (other devices' events may be among
    them); `events()`, once `groups` is exhausted, the source's whole events table."""

    groups: Iterator[tuple[pd.DataFrame, pd.DataFrame]]
    events: Callable[[], pd.DataFrame]
    close: Callable[[], None] = lambda: None  # what the reader holds open (a database engine)


def read_source_groups(
    config: TenantConfig, group_rows: Callable[[int], int]
) -> SourceGroups | None:
    """Raw (telemetry, events) of the tenant's source in groups of whole devices, in device
    order, each about `group_rows(readings in the source)` readings, where the source can be
    read so: the synthetic fleet (made a group at a time), Parquet files (each group read
    with a filter on its devices, or by its hive partition folders), CSV and JSON-lines files
    (read in chunks, each group's devices kept) and SQL tables (a query per group). None where
    it cannot (JSON documents, frames, the process log and run-to-failure shapes; a device
    column with missing values): `read_source` reads them whole. Validated, the groups
    concatenated are what `read_source` gives, validated."""
    source = config.source
    settings = source.synthetic
    if source.kind in ("parquet", "csv", "jsonl"):
        return _file_groups(config, group_rows, source.kind)
    if source.kind == "sql":
        return _sql_groups(config, group_rows)
    if source.kind != "synthetic" or settings.run_to_failure or settings.process_log:
        return None
    made: list[pd.DataFrame] = []

    def groups() -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        for telemetry, events in fleet_groups(
            *_synthetic_arguments(config), group_rows=group_rows(fleet_rows(settings))
        ):
            made.append(_apply_renames(events, config))
            yield _apply_renames(telemetry, config), made[-1]

    return SourceGroups(groups(), lambda: pd.concat(made, ignore_index=True))


# Rows read at a time from a CSV or JSON-lines file when it is read a group of devices at a time.
TEXT_CHUNK_ROWS = 500_000


def _text_chunks(
    fs: Any, name: str, kind: str, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """A CSV or JSON-lines file in chunks of TEXT_CHUNK_ROWS rows (CSV: only `columns`)."""
    with fs.open(name, "rb") as handle:
        if kind == "csv":
            yield from pd.read_csv(handle, usecols=columns, chunksize=TEXT_CHUNK_ROWS)
        else:
            for chunk in pd.read_json(
                handle, lines=True, convert_dates=False, chunksize=TEXT_CHUNK_ROWS
            ):
                yield chunk if columns is None else chunk[columns]


def _file_inventory(
    fs: Any, name: str, kind: str, device: str, hive: dict[str, str | None]
) -> tuple[bool, pd.Series] | None:
    """(whether the device is a column of file `name`, its readings per device); None when
    neither the file nor its hive folders hold the device, or it cannot be read (read whole:
    validation and `_read_file` say why)."""
    try:
        if kind == "parquet":
            with fs.open(name, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                if device in parquet.schema_arrow.names:
                    values = parquet.read(columns=[device]).column(0).to_pandas()
                    return True, values.value_counts(dropna=False)
                if device in hive:
                    return False, pd.Series({hive[device]: parquet.metadata.num_rows})
                return None
        columns = None  # CSV: only the device column, or the first one to count rows
        if kind == "csv":
            with fs.open(name, "rb") as handle:
                header = list(pd.read_csv(handle, nrows=0).columns)
            columns = [device] if device in header else header[:1]
        counts, rows, in_file = [], 0, None
        for chunk in _text_chunks(fs, name, kind, columns):
            in_file = device in chunk.columns if in_file is None else in_file
            if in_file:
                counts.append(chunk[device].value_counts(dropna=False))
            rows += len(chunk)
        if in_file:
            return True, pd.concat(counts).groupby(level=0, dropna=False).sum()
        if device in hive:
            return False, pd.Series({hive[device]: rows})
        return None
    except Exception:
        return None


def _file_groups(
    config: TenantConfig, group_rows: Callable[[int], int], kind: str
) -> SourceGroups | None:
    """Telemetry files in groups of devices: an inventory of the device column (or of the hive
    folders that hold it) first, then each group's rows from every file holding them (Parquet:
    a filter on the device column; CSV and JSON lines: read in chunks, its devices' rows kept)."""
    source = config.source
    device = _source_name(config, config.schema_.device_column)
    fs, files, root = _files(str(source.telemetry_path), kind, "telemetry")
    # Per file: its devices' readings, from the device column or its hive folder.
    inventory: list[tuple[str, bool, pd.Series]] = []
    for name in files:
        hive = _hive_values(name, root) if root is not None else {}
        found = _file_inventory(fs, name, kind, device, hive)
        if found is None or found[1].index.isna().any():
            return None
        in_file, counts = found
        inventory.append((name, in_file, counts[counts > 0]))  # unused categories
    totals = pd.concat([counts for _, _, counts in inventory]).groupby(level=0).sum()
    if not len(totals) or len({type(value) for value in totals.index}) > 1:
        return None  # no rows, or devices typed apart in different files: read whole
    chosen = _device_groups(totals, group_rows(int(totals.sum())))
    events = (
        _apply_renames(_read_file(source.events_path, kind, "events"), config)
        if source.events_path
        else pd.DataFrame(columns=[config.schema_.device_column, config.schema_.event_time_column])
    )

    def read(name: str, members: list[Any], in_file: bool) -> pd.DataFrame:
        if kind == "parquet":
            filters = [(device, "in", members)] if in_file else None
            return _read_listed(fs, name, kind, "telemetry", root, name, filters)
        try:
            chunks = _text_chunks(fs, name, kind)
            frame = pd.concat(
                [chunk[chunk[device].isin(members)] for chunk in chunks]
                if in_file
                else list(chunks),
                ignore_index=True,
            )
        except Exception as exc:  # as `_read_listed` says it for a file read whole
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataValidationError(
                f"telemetry file {name}: cannot be read as {kind} ({reason})"
            ) from None
        for column, value in (_hive_values(name, root) if root is not None else {}).items():
            if column not in frame.columns:
                frame[column] = value
        return frame

    def groups() -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        for members in chosen:
            wanted = set(members)
            frames = [
                read(name, members, in_file)
                for name, in_file, counts in inventory
                if wanted.intersection(counts.index)
            ]
            yield _apply_renames(pd.concat(frames, ignore_index=True), config), events

    return SourceGroups(groups(), lambda: events)


def _device_groups(totals: pd.Series, size: int) -> list[list[Any]]:
    """Devices (`totals`: readings per device value) in the order validation sorts them (as
    text), cut into groups of `size` readings or more (the last one fewer)."""
    chosen: list[list[Any]] = [[]]
    rows = 0
    for value in sorted(totals.index, key=str):
        if rows >= size:
            chosen.append([])
            rows = 0
        chosen[-1].append(value)
        rows += int(totals[value])
    return chosen


SQL_IN_VALUES = 1000


def _sql_groups(config: TenantConfig, group_rows: Callable[[int], int]) -> SourceGroups | None:
    """A SQL telemetry table in groups of devices: the readings per device counted by the
    database first, then each group's rows read with the tenant's filters and its devices."""
    source = config.source
    device = _source_name(config, config.schema_.device_column)
    engine = _engine(str(source.url))
    try:
        with _database_errors(config):
            query = _telemetry_select(engine, config)
            if device not in query.selected_columns:
                engine.dispose()
                return None  # read whole: validation names the missing column
            rows = query.subquery()
            counting = sa.select(rows.c[device], sa.func.count()).group_by(rows.c[device])
            with engine.connect() as connection:
                totals = pd.Series(dict(connection.execute(counting).all()), dtype="int64")
            events = _read_events_table(engine, config)
    except BaseException:
        engine.dispose()
        raise
    if totals.index.isna().any() or not len(totals):
        engine.dispose()
        return None
    chosen = _device_groups(totals, group_rows(int(totals.sum())))
    events = _apply_renames(events, config)

    def groups() -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        for members in chosen:
            parts = []
            # At most SQL_IN_VALUES bound values a query (SQL Server takes 2,100 parameters).
            for start in range(0, len(members), SQL_IN_VALUES):
                batch = members[start : start + SQL_IN_VALUES]
                selected = query.where(query.selected_columns[device].in_(batch))
                with _database_errors(config):
                    telemetry, _ = _read_sql(
                        engine, selected, source.chunk_rows, f"table {source.telemetry_table}"
                    )
                parts.append(telemetry)
            yield _apply_renames(pd.concat(parts, ignore_index=True), config), events

    return SourceGroups(groups(), lambda: events, engine.dispose)
