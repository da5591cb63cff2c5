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


def assign_rows(
    features: pd.DataFrame, config: TenantConfig, label: str
) -> tuple[pd.Series, dict[str, str], dict[str, object]]:
    """Split name per feature row, the split's params, and what the model learns from.

    The last item (logged as an artifact) lets a later evaluation tell which rows a model
    trained on this split has seen: its devices (split.by device) or, by time, the end of
    the period it learned from and the devices kept out.
    """
    schema = config.schema_
    device, times = features[schema.device_column], features[schema.time_column]
    split = config.split
    if split.by == "device":
        failing = (
            set(device[features[label] > 0].astype(str))
            if config.task == ("classification")
            else set(device.astype(str))
        )
        names = pd.unique(device)
        if len(names) < 3:
            raise DataValidationError(
                f"split.by device needs at least 3 devices with training rows, found "
                f"{len(names)}; use split.by time for a single machine's log"
            )
        assignment = device_split(
            device, failing, split.validation_fraction, split.test_fraction, split.seed
        )
        assigned = device.astype(str).map(assignment)
        members = {s: sorted(d for d, a in assignment.items() if a == s) for s in SPLIT_NAMES}
        params = {
            "split_by": "device",
            "split_seed": str(split.seed),
            **{f"split_{s}_devices": str(len(members[s])) for s in SPLIT_NAMES},
            "split_test_device_list": ",".join(members["test"])[:5000],
        }
        membership: dict[str, object] = {"by": "device", "devices": members}
        return assigned, params, membership
    boundaries = time_split(
        times, split.validation_fraction, split.test_fraction, label_lookahead_hours(config)
    )
    assigned = assign_split(times, boundaries)
    params = {"split_by": "time", **boundaries.as_params()}
    held_out = holdout_devices(device, config)
    if held_out:
        # Unseen devices: nothing of theirs is learned from or tuned on; they meet the model in
        # the test period only.
        learned = assigned.isin(["train", "validation"])
        assigned[learned & device.isin(held_out)] = "held out"
        params["split_holdout_devices"] = ",".join(held_out)[:5000]
    membership = {
        "by": "time",
        "learned_until": str(boundaries.test_start),
        "held_out_devices": held_out,
    }
    return assigned, params, membership


def device_feature_builder(
    config: TenantConfig, events: pd.DataFrame | None
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`build_features` with the tenant's spec and failure events: a function of telemetry rows
    of whole devices, the one code path whichever engine runs it on whichever partition."""
    return partial(build_features, spec=FeatureSpec.from_config(config), events=events)


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
    schema = config.schema_
    spec = FeatureSpec.from_config(config)
    labels = make_labels(telemetry, events, config, label)
    if features is None:
        features = device_feature_builder(config, events)(telemetry)
    for column in labels.columns:  # build_features keeps the telemetry's index
        features[column] = labels[column].loc[features.index].to_numpy()
    features = features.dropna(subset=[label])
    short = sorted(set(telemetry[schema.device_column]) - set(features[schema.device_column]))
    if short:
        # Not an error: the device simply has no reading with a full history (and a label) yet.
        log.warning(
            "%d device(s) give no training rows (less than %s of history or no known label): %s",
            len(short),
            spec.history,
            ", ".join(short[:5]),
        )
    assigned, params, membership = assign_rows(features, config, label)
    tables = {name: features[assigned == name].reset_index(drop=True) for name in SPLIT_NAMES}
    for name, table in tables.items():
        if table[label].nunique() < 2:
            raise DataValidationError(
                f"{name} split: label '{label}' has a single value over {len(table)} rows; "
                "more data or more failures are needed"
            )
    return tables, spec, params, membership


def split_report(
    tables: dict[str, pd.DataFrame], config: TenantConfig, label: str
) -> dict[str, object]:
    """Rows, devices and positives per split, with warnings that name the setting to change."""
    device = config.schema_.device_column
    summary: dict[str, dict[str, float]] = {}
    for name, table in tables.items():
        row = {"rows": len(table), "devices": int(table[device].nunique())}
        if config.task == "classification":
            row["positive_rows"] = int(table[label].sum())
            row["positive_rate"] = float(table[label].mean()) if len(table) else 0.0
        summary[name] = row
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
