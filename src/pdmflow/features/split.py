"""Split feature rows into train, validation and test, and into cross-validation folds.

By time (fleets observed side by side over calendar time): the fleet's time range is cut into
train, validation and test periods. Labels look ahead by the horizon H, so the last H of each
period before a boundary is purged: a training row's label must not depend on failures that
happen in the validation period.

By device (run-to-failure fleets, where every unit starts new and runs until it fails): whole
devices, with their whole histories, go to one split each, by a seeded hash of their id.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pdmflow.config import TenantConfig
from pdmflow.data.labels import make_labels
from pdmflow.errors import DataValidationError
from pdmflow.features.builder import FeatureSpec, build_features

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")
# Below these, a split's metrics rest on too little (the split report warns).
MIN_SPLIT_DEVICES = 10
MIN_SPLIT_POSITIVES = 20
MAX_POSITIVE_RATE_RATIO = 3.0


@dataclass(frozen=True)
class TimeSplit:
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    purge: pd.Timedelta

    def as_params(self) -> dict[str, str]:
        return {
            "split_validation_start": str(self.validation_start),
            "split_test_start": str(self.test_start),
            "split_purge_hours": str(self.purge / pd.Timedelta(hours=1)),
        }


def time_split(
    times: pd.Series, validation_fraction: float, test_fraction: float, horizon_hours: float
) -> TimeSplit:
    """Boundaries at fractions of the observed time range (not of rows)."""
    start, end = times.min(), times.max()
    span = end - start
    test_start = start + span * (1 - test_fraction)
    validation_start = start + span * (1 - test_fraction - validation_fraction)
    return TimeSplit(validation_start, test_start, pd.Timedelta(hours=horizon_hours))


def assign_split(times: pd.Series, split: TimeSplit) -> pd.Series:
    """'train' / 'validation' / 'test', or 'purged' for rows whose label crosses a boundary."""
    labels = pd.Series("train", index=times.index, dtype="object")
    labels[times >= split.validation_start] = "validation"
    labels[times >= split.test_start] = "test"
    crosses_validation = (times < split.validation_start) & (
        times + split.purge >= split.validation_start
    )
    crosses_test = (times < split.test_start) & (times + split.purge >= split.test_start)
    labels[crosses_validation | crosses_test] = "purged"
    return labels


def time_folds(
    times: pd.Series, n_folds: int, purge: pd.Timedelta
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds in time order: (train rows, validation rows) positions.

    The time range is cut into n_folds + 1 equal periods; fold k validates on period k + 1 and
    trains on everything before it, less the `purge` just before the validation period (labels
    there look into it).
    """
    start, end = times.min(), times.max()
    edges = [start + (end - start) * i / (n_folds + 1) for i in range(n_folds + 2)]
    folds = []
    for k in range(1, n_folds + 1):
        validation = (times >= edges[k]) & (times < edges[k + 1] if k < n_folds else times <= end)
        train = times < edges[k] - purge
        folds.append((np.flatnonzero(train.to_numpy()), np.flatnonzero(validation.to_numpy())))
    return folds


def _device_hash(device: str, seed: int) -> float:
    """A uniform number in [0, 1) that depends on the device id and the seed only."""
    digest = hashlib.blake2b(f"{seed}:{device}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def device_split(
    devices: pd.Series,
    failing: set[str],
    validation_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, str]:
    """Whole devices to 'train' / 'validation' / 'test', stable as the fleet grows.

    Each device's place is a function of its id and the seed: a hash in [0, 1) below
    `test_fraction` is test, below `test_fraction + validation_fraction` validation, else train.
    Devices with a failure and devices without are treated as two strata: a stratum with at
    least three devices but none in some split lends that split its device whose hash lies
    nearest, so every split sees failing devices. Adding devices never moves existing ones,
    except where that repair was needed.
    """
    names = sorted(str(d) for d in pd.unique(devices))
    position = {name: _device_hash(name, seed) for name in names}
    edges = {
        "test": (0.0, test_fraction),
        "validation": (test_fraction, test_fraction + validation_fraction),
        "train": (test_fraction + validation_fraction, 1.0),
    }

    def natural(name: str) -> str:
        u = position[name]
        return (
            "test"
            if u < edges["test"][1]
            else "validation"
            if u < edges["validation"][1]
            else ("train")
        )

    assignment = {name: natural(name) for name in names}
    for stratum in ([n for n in names if n in failing], [n for n in names if n not in failing]):
        if len(stratum) < 3:
            continue
        for split, (low, high) in edges.items():
            if any(assignment[n] == split for n in stratum):
                continue
            counts = pd.Series([assignment[n] for n in stratum]).value_counts()
            donors = [n for n in stratum if counts[assignment[n]] > 1]
            nearest = min(
                donors, key=lambda n: min(abs(position[n] - low), abs(position[n] - high))
            )
            assignment[nearest] = split
    return assignment


def device_folds(
    devices: pd.Series, labels: pd.Series, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds grouped by device (no device in two folds), stratified by the label."""
    groups = devices.astype(str).to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise DataValidationError(
            f"split.cv_folds {n_folds}: only {n_groups} devices to share between the folds"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    y = labels.to_numpy()
    y = y.astype(int) if set(np.unique(y)) <= {0, 1} else np.zeros(len(y), dtype=int)
    return [(train, valid) for train, valid in splitter.split(np.zeros(len(y)), y, groups)]


def learning_folds(
    learning: pd.DataFrame,
    train_rows: int,
    config: TenantConfig,
    device_column: str,
    time_column: str,
    label: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, early-stopping / out-of-fold rows) positions over train + validation.

    `learning` is the train table followed by the validation table. No CV: the one split
    (train, validation). With split.cv_folds: grouped by device (split.by device) or expanding
    in time and purged by the label's look-ahead (split.by time).
    """
    folds = config.split.cv_folds
    if not folds:
        return [(np.arange(train_rows), np.arange(train_rows, len(learning)))]
    if config.split.by == "device":
        result = device_folds(learning[device_column], learning[label], folds, config.split.seed)
    else:
        order = np.argsort(learning[time_column].to_numpy(), kind="stable")
        times = learning[time_column].iloc[order].reset_index(drop=True)
        by_time = time_folds(times, folds, pd.Timedelta(hours=label_lookahead_hours(config)))
        result = [(order[fit], order[valid]) for fit, valid in by_time]
    if config.task == "classification":
        _check_fold_classes(result, learning[label].to_numpy(), folds)
    return result


def _check_fold_classes(
    folds: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, n_folds: int
) -> None:
    """Every fold must fit on, and validate on, both healthy and failing rows."""
    for k, (fit_rows, valid_rows) in enumerate(folds, start=1):
        for rows, role in ((fit_rows, "fit on"), (valid_rows, "validate on")):
            if len(np.unique(labels[rows])) < 2:
                raise DataValidationError(
                    f"split.cv_folds {n_folds}: fold {k} has only one label value to {role} "
                    f"({len(rows)} rows); use fewer folds or split.cv_folds: 0, or more history"
                )


def label_lookahead_hours(config: TenantConfig) -> float:
    """How far a label looks ahead: the horizon, or the RUL cap for regression."""
    if config.task == "classification":
        return config.labels.horizon_hours
    return config.labels.rul_cap_hours


def holdout_devices(devices: pd.Series, config: TenantConfig) -> list[str]:
    """The seeded choice of devices kept out of training (split.holdout_device_fraction)."""
    fraction = config.split.holdout_device_fraction
    if fraction == 0:
        return []
    names = sorted(pd.unique(devices))
    count = max(1, round(fraction * len(names)))
    chosen = np.random.default_rng(config.training.seed).choice(names, size=count, replace=False)
    return sorted(str(name) for name in chosen)


def device_summary(features: pd.DataFrame, config: TenantConfig, label: str) -> pd.DataFrame:
    """Per device with labelled feature rows: how many, whether it fails (a positive label;
    every device, for RUL), and its first and last time: what a split is planned from. The
    summaries of partitions of whole devices, concatenated, are the whole fleet's."""
    schema = config.schema_
    grouped = features.groupby(features[schema.device_column].astype(str), sort=False)
    times = grouped[schema.time_column]
    failing = grouped[label].max() > 0 if config.task == "classification" else True
    return pd.DataFrame(
        {"rows": grouped.size(), "failing": failing, "first": times.min(), "last": times.max()}
    )


@dataclass(frozen=True)
class SplitPlan:
    """Where each feature row goes: whole devices (`devices`: device -> split) or time periods
    (`boundaries`, with `held_out` devices kept out of learning); the split's params and what a
    model trained on it learned from (logged as an artifact: a later evaluation tells from it
    which rows a model has seen)."""

    params: dict[str, str]
    membership: dict[str, object]
    devices: dict[str, str] | None = None
    boundaries: TimeSplit | None = None
    held_out: tuple[str, ...] = ()


def plan_split(summary: pd.DataFrame, config: TenantConfig) -> SplitPlan:
    """The split of the fleet `device_summary` describes."""
    split = config.split
    devices = pd.Series(summary.index, dtype="object")
    if split.by == "device":
        if len(devices) < 3:
            raise DataValidationError(
                f"split.by device needs at least 3 devices with training rows, found "
                f"{len(devices)}; use split.by time for a single machine's log"
            )
        failing = set(summary.index[summary["failing"].to_numpy(dtype=bool)])
        assignment = device_split(
            devices, failing, split.validation_fraction, split.test_fraction, split.seed
        )
        members = {s: sorted(d for d, a in assignment.items() if a == s) for s in SPLIT_NAMES}
        params = {
            "split_by": "device",
            "split_seed": str(split.seed),
            **{f"split_{s}_devices": str(len(members[s])) for s in SPLIT_NAMES},
            "split_test_device_list": ",".join(members["test"])[:5000],
        }
        return SplitPlan(params, {"by": "device", "devices": members}, devices=assignment)
    span = pd.Series([summary["first"].min(), summary["last"].max()])
    boundaries = time_split(
        span, split.validation_fraction, split.test_fraction, label_lookahead_hours(config)
    )
    params = {"split_by": "time", **boundaries.as_params()}
    held_out = holdout_devices(devices, config)
    if held_out:
        params["split_holdout_devices"] = ",".join(held_out)[:5000]
    membership = {
        "by": "time",
        "learned_until": str(boundaries.test_start),
        "held_out_devices": held_out,
    }
    return SplitPlan(params, membership, boundaries=boundaries, held_out=tuple(held_out))


def apply_split(features: pd.DataFrame, plan: SplitPlan, config: TenantConfig) -> pd.Series:
    """The split name of each feature row under `plan` (a function of the row's device and
    time alone, so any partition of the rows gets the same names)."""
    device = features[config.schema_.device_column].astype(str)
    if plan.devices is not None:
        return device.map(plan.devices)
    assigned = assign_split(features[config.schema_.time_column], plan.boundaries)
    if plan.held_out:
        # Unseen devices: nothing of theirs is learned from or tuned on; they meet the model in
        # the test period only.
        learned = assigned.isin(["train", "validation"])
        assigned[learned & device.isin(plan.held_out)] = "held out"
    return assigned


def device_feature_builder(
    config: TenantConfig, events: pd.DataFrame | None
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`build_features` with the tenant's spec and failure events: a function of telemetry rows
    of whole devices, the one code path whichever engine runs it on whichever partition."""
    return partial(build_features, spec=FeatureSpec.from_config(config), events=events)


def labelled_features(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    config: TenantConfig,
    label: str,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The feature rows of `telemetry` with their label (and, for RUL, health status): rows
    without a label dropped. `features`: `device_feature_builder(config, events)` of
    `telemetry`, when an engine has built them already (built here otherwise). Per device:
    the rows of partitions of whole devices, concatenated, are the whole frame's."""
    labels = make_labels(telemetry, events, config, label)
    if features is None:
        features = device_feature_builder(config, events)(telemetry)
    for column in labels.columns:  # build_features keeps the telemetry's index
        features[column] = labels[column].loc[features.index].to_numpy()
    return features.dropna(subset=[label])


def warn_short_devices(devices: list[str], spec: FeatureSpec) -> None:
    """Devices of the telemetry without a labelled feature row. Not an error: such a device
    simply has no reading with a full history (and a label) yet."""
    if devices:
        log.warning(
            "%d device(s) give no training rows (less than %s of history or no known label): %s",
            len(devices),
            spec.history,
            ", ".join(sorted(devices)[:5]),
        )


def check_labels(counts: dict[str, dict[str, float]], label: str) -> None:
    """Every split needs both label values (or, for RUL, more than one)."""
    for name, row in counts.items():
        if not row["label_min"] < row["label_max"]:
            raise DataValidationError(
                f"{name} split: label '{label}' has a single value over {int(row['rows'])} "
                "rows; more data or more failures are needed"
            )


def label_and_split(
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    config: TenantConfig,
    label: str,
    features: pd.DataFrame | None = None,
) -> tuple[dict[str, pd.DataFrame], FeatureSpec, dict[str, str], dict[str, object]]:
    """Feature tables per split, the spec, the split's params, and what training learns from.

    `features`: `device_feature_builder(config, events)` of `telemetry`, when an engine has
    built them already (built here otherwise).
    """
    device = config.schema_.device_column
    spec = FeatureSpec.from_config(config)
    features = labelled_features(telemetry, events, config, label, features)
    warn_short_devices(
        sorted(set(telemetry[device].astype(str)) - set(features[device].astype(str))), spec
    )
    plan = plan_split(device_summary(features, config, label), config)
    assigned = apply_split(features, plan, config)
    tables = {name: features[assigned == name].reset_index(drop=True) for name in SPLIT_NAMES}
    check_labels(split_counts(tables, config, label), label)
    return tables, spec, plan.params, plan.membership


def table_counts(table: pd.DataFrame, config: TenantConfig, label: str) -> dict[str, Any]:
    """What the split report and the step's metrics need of one table (or one part of it):
    rows, devices (their names), positive rows, the label's sum, least and greatest value."""
    values = table[label]
    return {
        "rows": len(table),
        "devices": set(table[config.schema_.device_column].astype(str)),
        "positive_rows": int((values > 0).sum()) if config.task == "classification" else 0,
        "label_sum": float(values.sum()),
        "label_min": float(values.min()) if len(values) else np.inf,
        "label_max": float(values.max()) if len(values) else -np.inf,
    }


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, float]:
    """The counts of a table from those of its parts (`table_counts`); devices as a count."""
    return {
        "rows": sum(p["rows"] for p in parts),
        "devices": len(set().union(*(p["devices"] for p in parts))),
        "positive_rows": sum(p["positive_rows"] for p in parts),
        "label_sum": sum(p["label_sum"] for p in parts),
        "label_min": min(p["label_min"] for p in parts),
        "label_max": max(p["label_max"] for p in parts),
    }


def split_counts(
    tables: dict[str, pd.DataFrame], config: TenantConfig, label: str
) -> dict[str, dict[str, float]]:
    return {name: merge_counts([table_counts(t, config, label)]) for name, t in tables.items()}


def split_report(
    tables: dict[str, pd.DataFrame], config: TenantConfig, label: str
) -> dict[str, object]:
    """Rows, devices and positives per split, with warnings that name the setting to change."""
    return counts_report(split_counts(tables, config, label), config)


def counts_report(counts: dict[str, dict[str, float]], config: TenantConfig) -> dict[str, object]:
    """`split_report` from the splits' counts (`split_counts`, or merged from parts)."""
    summary: dict[str, dict[str, float]] = {}
    for name, row in counts.items():
        summary[name] = {"rows": int(row["rows"]), "devices": int(row["devices"])}
        if config.task == "classification":
            summary[name]["positive_rows"] = int(row["positive_rows"])
            summary[name]["positive_rate"] = (
                row["positive_rows"] / row["rows"] if row["rows"] else 0.0
            )
    warnings: list[str] = []
    fix_size = (
        "raise split.validation_fraction / split.test_fraction or bring more devices"
        if config.split.by == "device"
        else "use split.by: device for a fleet of many devices, or more history"
    )
    for name in ("validation", "test"):
        row = summary[name]
        fraction_key = f"split.{name}_fraction"
        if row["devices"] < MIN_SPLIT_DEVICES and config.split.by == "device":
            warnings.append(
                f"{name} split has {row['devices']} devices (fewer than {MIN_SPLIT_DEVICES}): "
                f"its metrics rest on few machines; raise {fraction_key} or bring more devices"
            )
        if config.task == "classification" and row["positive_rows"] < MIN_SPLIT_POSITIVES:
            warnings.append(
                f"{name} split has {row['positive_rows']} positive rows (fewer than "
                f"{MIN_SPLIT_POSITIVES}): {name} metrics are noisy; raise {fraction_key} or "
                f"{fix_size}"
            )
    if config.task == "classification":
        train_rate, test_rate = summary["train"]["positive_rate"], summary["test"]["positive_rate"]
        if train_rate > 0 and test_rate > MAX_POSITIVE_RATE_RATIO * train_rate:
            fix = (
                "use split.by: device (a time split of a run-to-failure fleet leaves only the "
                "last readings of long-lived devices in test)"
                if config.split.by == "time"
                else "change split.seed or raise split.test_fraction"
            )
            warnings.append(
                f"test positive rate {test_rate:.1%} is {test_rate / train_rate:.1f}x the "
                f"training rate {train_rate:.1%} (more than {MAX_POSITIVE_RATE_RATIO}x): {fix}"
            )
    return {"by": config.split.by, "splits": summary, "warnings": warnings}


def describe_split(report: dict[str, object]) -> str:
    """The split report as lines a person reads in the step's output."""
    lines = []
    for name, row in report["splits"].items():
        line = (
            f"split by {report['by']}: {name:<10} {row['devices']:>5,} devices "
            f"{row['rows']:>9,} rows"
        )
        if "positive_rate" in row:
            line += f"  {row['positive_rate']:.1%} positive"
        lines.append(line)
    lines += [f"split warning: {warning}" for warning in report["warnings"]]
    return "\n".join(lines) + "\n"
