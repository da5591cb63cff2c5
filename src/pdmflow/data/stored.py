"""Ingest into storage a group of whole devices at a time: no process holds the whole fleet.

Each group the source gives (`read_source_groups`) is validated by the same rules as a whole
fleet (`validate_part`: errors name the device, column or key), written as the next part of the
telemetry table in storage, and let go; what the fleet-wide checks need (rows, devices, missing
and out-of-range counts, two values per sensor, label counts) is kept as `PartFacts`, and
`fleet_report` turns them into the report `validate` gives for the fleet read whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.data.dataset_source import PartColumns, part_columns
from pdmflow.data.sources import SourceGroups
from pdmflow.data.validation import (
    check_rows,
    count_labels,
    fleet_report,
    normalise_events,
    validate_events,
    validate_part,
)
from pdmflow.engine.storage import clear, parts_digest, remove, write_part, write_partitioned


@dataclass(frozen=True)
class StoredDataset:
    """An ingested fleet in storage: its tables' locations, clean events, validation report,
    the digest of the telemetry's parts and their columns."""

    locations: dict[str, str]
    events: pd.DataFrame
    report: dict[str, object]
    digest: str
    columns: list[PartColumns]


def ingest_in_parts(
    source_groups: SourceGroups, config: TenantConfig, source: str, base: str
) -> StoredDataset:
    """Validate and write each group of the source under `base` (telemetry/, events/); on an
    error nothing is left under `base`."""
    schema = config.schema_
    locations = {"telemetry": f"{base}/telemetry", "events": f"{base}/events"}
    parts, digests, columns = [], [], []
    try:
        clear(locations["telemetry"])
        for index, (telemetry, events) in enumerate(source_groups.groups):
            frame, facts = validate_part(telemetry, config, source)
            normalised = normalise_events(
                events, schema.device_column, schema.event_time_column, f"events {source}"
            )
            parts.append(count_labels(frame, facts, normalised, config))
            digests.append(write_part(frame, locations["telemetry"], index))
            columns.append(part_columns(frame))
        check_rows(sum(part.rows for part in parts), config, source)
        devices = frozenset().union(*(part.devices for part in parts))
        clean_events, warnings = validate_events(source_groups.events(), config, source, devices)
        report = fleet_report(parts, clean_events, warnings, config, source)
        write_partitioned(clean_events, locations["events"], None, config.engine.partition_rows)
    except BaseException:
        remove(base)
        raise
    finally:
        source_groups.close()
    return StoredDataset(locations, clean_events, report, parts_digest(digests), columns)
