"""Partitioned Parquet datasets in a directory or bucket: the data steps hand each other when
`storage.uri` is set, instead of copies in the artifact store.

A table is a folder of `part-00000.parquet`, `part-00001.parquet`, ... each holding whole
devices (`device_partitions`, about `partition_rows` rows), so a worker can read one device
partition without the rest. Any fsspec URL works (a local directory, s3://, gs://, abfs://, with
that filesystem's package installed); credentials come from the filesystem's own configuration,
never from the URL. Reading concatenates the parts in name order: the frame written, row for row.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pdmflow.engine.base import device_partitions

PART_SUFFIX = ".parquet"
# A table of whole devices is cut into at least MIN_PARTS parts (devices and rows allowing), so
# its parts keep a cluster's workers busy below partition_rows; never below MIN_PART_ROWS rows.
MIN_PARTS = 16
MIN_PART_ROWS = 10_000
# pyarrow's row filters, e.g. [("device_id", "in", ["pump_1", "pump_2"])].
Filters = list[tuple[str, str, Any]]


def absolute_root(root: str) -> str:
    """`root` as every later reader finds it: a local path made absolute (~ expanded), since
    the steps, the scheduler and monitor may start elsewhere; a URL as given."""
    if "://" in root or "::" in root:
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


def output_location(root: str, tenant_id: str, step: str, run_id: str) -> str:
    """Where a run's data outputs go: <root>/<tenant>/<step>/<run id> (one folder per run, so a
    rerun never overwrites what an earlier run, or a registered version's lineage, points at)."""
    return f"{absolute_root(root)}/{tenant_id}/{step}/{run_id}"


def part_name(index: int) -> str:
    return f"part-{index:05d}{PART_SUFFIX}"


def part_rows(rows: int, partition_rows: int) -> int:
    """Rows per part of a table of `rows` rows: at most `partition_rows` (engine.partition_rows),
    fewer so the table has MIN_PARTS parts, but not fewer than MIN_PART_ROWS."""
    return min(partition_rows, max(MIN_PART_ROWS, -(-rows // MIN_PARTS)))


def write_partitioned(
    frame: pd.DataFrame, location: str, device_column: str | None, partition_rows: int
) -> int:
    """Write `frame` as parts at `location`; return how many. With `device_column` (rows grouped
    by device, as validated telemetry and feature tables are) each part holds whole devices,
    about `part_rows` rows; without, `partition_rows` rows each. An empty frame is one empty
    part, so its columns and types are kept."""
    clear(location)
    if device_column is None:
        ranges = [
            (start, min(start + partition_rows, len(frame)))
            for start in range(0, len(frame), partition_rows)
        ]
    else:
        ranges = device_partitions(frame, device_column, part_rows(len(frame), partition_rows))
    ranges = ranges or [(0, 0)]
    for index, (start, end) in enumerate(ranges):
        write_part(frame.iloc[start:end], location, index)
    return len(ranges)


def clear(location: str) -> None:
    """An empty folder at `location`: parts of an earlier write there would be read back with
    the new ones."""
    remove(location)
    fs, path = fsspec.core.url_to_fs(location)
    fs.makedirs(path, exist_ok=True)


def remove(location: str) -> None:
    """The folder at `location` and all in it gone (nothing when there is none)."""
    fs, path = fsspec.core.url_to_fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_part(frame: pd.DataFrame, location: str, index: int) -> str:
    """Part `index` of the table at `location` (a folder `clear` made), written whole at once
    (a task run again writes it again, the same); return the SHA-256 of its bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    fs, path = fsspec.core.url_to_fs(location)
    fs.pipe_file(f"{path}/{part_name(index)}", data)
    return hashlib.sha256(data).hexdigest()


def parts_digest(digests: list[str]) -> str:
    """The digest MLflow records for a table written part by part: over its parts' digests
    (`write_part`'s), in order."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:8]


def list_parts(location: str) -> list[str]:
    """The URLs of the parts at `location`, in order (each one a worker can open)."""
    fs, path = fsspec.core.url_to_fs(location)
    parts = sorted(name for name in fs.ls(path, detail=False) if name.endswith(PART_SUFFIX))
    if not parts:
        raise FileNotFoundError(f"{location}: no {PART_SUFFIX} parts")
    # The location as given (a chained URL keeps its chain), not the filesystem's own paths.
    return [f"{location.rstrip('/')}/{name.rsplit('/', 1)[-1]}" for name in parts]


def read_part(
    url: str, filters: Filters | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """One part as a frame (only the rows `filters` keep; only `columns`, when given)."""
    with fsspec.open(url, "rb") as part:
        frame = pq.read_table(part, filters=filters, columns=columns).to_pandas()
    pa.default_memory_pool().release_unused()
    return frame


# Rows of a part held at once by readers that go through it in batches (a part of a wide
# feature table can hold a gigabyte or more).
PART_BATCH_ROWS = 100_000


def iter_part(
    url: str, columns: list[str] | None = None, batch_rows: int = PART_BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """One part's rows (only `columns`, when given) in frames of at most `batch_rows` rows, in
    order; an empty part gives one empty frame with its columns and types."""
    with fsspec.open(url, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        if parquet.metadata.num_rows == 0:
            yield parquet.read(columns=columns).to_pandas()
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.Table.from_batches([batch]).to_pandas()
    pa.default_memory_pool().release_unused()


def read_part_rows(url: str, positions: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """The rows of a part at `positions` (ascending), only `columns`, a batch at a time."""
    frames, start = [], 0
    for frame in iter_part(url, columns):
        begin, end = np.searchsorted(positions, [start, start + len(frame)])
        frames.append(frame.iloc[positions[begin:end] - start])
        start += len(frame)
    return pd.concat(frames, ignore_index=True)


def read_head(location: str, rows: int, columns: list[str] | None = None) -> pd.DataFrame:
    """The first `rows` rows of the table at `location` (fewer when it holds fewer), reading
    only the parts they are in."""
    frames, count = [], 0
    for url in list_parts(location):
        for frame in iter_part(url, columns):
            if len(frame) or not frames:  # an empty part only for its columns and types
                frames.append(frame)
            count += len(frame)
            if count >= rows:
                return pd.concat(frames, ignore_index=True).head(rows)
    return pd.concat(frames, ignore_index=True)


def read_partitioned(location: str, filters: Filters | None = None) -> pd.DataFrame:
    """The frame `write_partitioned` wrote at `location`, its parts in order; with `filters`
    (pyarrow's, e.g. [("device_id", "in", [...])]) only the rows they keep."""
    tables = []
    for url in list_parts(location):
        with fsspec.open(url, "rb") as part:
            tables.append(pq.read_table(part, filters=filters))
    # An all-missing column is typed null in a part that holds only missing values.
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    pa.default_memory_pool().release_unused()
    return frame
