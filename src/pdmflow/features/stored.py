"""The features step over telemetry kept in storage: one task per part, no table in one place.

Ingest wrote the telemetry as parts of whole devices (engine/storage.py). Labels and features
are computed per device, so each part is a task of its own, on a worker or in this process
(`map_tasks`, the engine's), in two rounds:

1. each part's labelled feature rows (`labelled_features`, the one builder) are staged in
   storage, and a summary of its devices (rows, failing, first and last time) comes back;
2. the split is planned from the summaries (`plan_split`, as from the whole table), and each
   staged part is cut into its train, validation and test parts (`apply_split`: a function
   of a row's device and time), whose counts come back.

Part k of a split is what part k of the telemetry gives, so each split read back part after
part is the local path's table, row for row. Only summaries and counts reach this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.data.dataset_source import PartColumns, part_columns
from pdmflow.engine.base import MapTasks
from pdmflow.engine.storage import (
    clear,
    list_parts,
    parts_digest,
    read_part,
    remove,
    write_part,
)
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.split import (
    SPLIT_NAMES,
    SplitPlan,
    apply_split,
    check_labels,
    device_summary,
    labelled_features,
    merge_counts,
    plan_split,
    table_counts,
    warn_short_devices,
)

STAGING = "staging"


@dataclass(frozen=True)
class StoredFeatures:
    """The split tables in storage: where (split -> location), their counts (`merge_counts`),
    the plan they were cut by, and per split the digest of its parts and their columns."""

    locations: dict[str, str]
    counts: dict[str, dict[str, float]]
    plan: SplitPlan
    digests: dict[str, str]
    columns: dict[str, list[PartColumns]]


def stage_part(
    item: tuple[int, str], staging: str, events: pd.DataFrame, config: TenantConfig, label: str
) -> tuple[pd.DataFrame, list[str]]:
    """Round 1, a task: telemetry part `item` = (index, URL) -> its labelled feature rows,
    staged as part `index`; return its devices' summary and its devices without a row."""
    index, url = item
    telemetry = read_part(url)
    features = labelled_features(telemetry, events, config, label)
    write_part(features, staging, index)
    device = config.schema_.device_column
    short = set(telemetry[device].astype(str)) - set(features[device].astype(str))
    return device_summary(features, config, label), sorted(short)


def split_part(
    item: tuple[int, str],
    outputs: dict[str, str],
    plan: SplitPlan,
    config: TenantConfig,
    label: str,
) -> dict[str, dict[str, Any]]:
    """Round 2, a task: staged part `item` = (index, URL) cut by `plan` into part `index` of
    each split; per split its counts, digest and columns."""
    index, url = item
    features = read_part(url)
    assigned = apply_split(features, plan, config)
    result = {}
    for name in SPLIT_NAMES:
        table = features[assigned == name].reset_index(drop=True)
        result[name] = {
            **table_counts(table, config, label),
            "digest": write_part(table, outputs[name], index),
            "columns": part_columns(table),
        }
    return result


def build_stored_features(
    map_tasks: MapTasks,
    telemetry_location: str,
    events: pd.DataFrame,
    config: TenantConfig,
    label: str,
    base: str,
) -> StoredFeatures:
    """The split feature tables of the telemetry at `telemetry_location`, written under `base`
    (one folder a split); on an error nothing is left under `base`."""
    parts = list(enumerate(list_parts(telemetry_location)))
    staging = f"{base}/{STAGING}"
    outputs = {name: f"{base}/{name}" for name in SPLIT_NAMES}
    try:
        clear(staging)
        staged = map_tasks(
            partial(stage_part, staging=staging, events=events, config=config, label=label), parts
        )
        warn_short_devices(
            [device for _, short in staged for device in short], FeatureSpec.from_config(config)
        )
        plan = plan_split(pd.concat([summary for summary, _ in staged]), config)
        for location in outputs.values():
            clear(location)
        written = map_tasks(
            partial(split_part, outputs=outputs, plan=plan, config=config, label=label),
            list(enumerate(list_parts(staging))),
        )
        counts = {name: merge_counts([part[name] for part in written]) for name in SPLIT_NAMES}
        check_labels(counts, label)
    except BaseException:
        remove(base)
        raise
    remove(staging)
    digests = {
        name: parts_digest([part[name]["digest"] for part in written]) for name in SPLIT_NAMES
    }
    columns = {name: [part[name]["columns"] for part in written] for name in SPLIT_NAMES}
    return StoredFeatures(outputs, counts, plan, digests, columns)
