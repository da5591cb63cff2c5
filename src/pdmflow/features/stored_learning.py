"""The learning rows (train, then validation) of features kept in storage, read without one
table of them in this process.

The selection and the folds need every learning row's label, device and time and each
feature's range; the fits need only the rows they sample. So, one task a part (`map_tasks`,
the engine's: on the workers, or one part after another here):

1. each part returns its key columns and each feature's lowest and highest value;
2. the selection (`screen_features`), the folds (`learning_folds`) and the sample
   (`draw_learning_rows`) are computed here from those, as `learning_set` computes them from whole
   tables, so the same rows give the same selection, folds and sample;
3. each part returns only its rows among the sample (and the correlation sample), with only
   the columns asked for.

The parts stay where they are for a final fit that reads every row on the workers
(`StoredLearning`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.engine.base import Engine, MapTasks
from pdmflow.engine.storage import iter_part, list_parts, read_part, read_part_rows
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.selection import (
    TIME_SINCE_FAILURE,
    LearningSet,
    screen_features,
    top_k_features,
)
from pdmflow.features.split import learning_folds
from pdmflow.models import families as model_families
from pdmflow.models.sampling import draw_learning_rows, subset_folds
from pdmflow.models.training import (
    Refit,
    float32_columns,
    healthy_rows,
    negative_sample_weights,
    rows_refit,
)

LEARNING_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class LearningPart:
    """One part of the learning rows: its URL, the position of its first row among the
    learning rows (train parts, then validation parts) and its row count."""

    url: str
    start: int
    rows: int


@dataclass(frozen=True)
class StoredLearning:
    """Where every learning row is, and each one's key columns (device, time, label)."""

    parts: list[LearningPart]
    keys: pd.DataFrame
    train_rows: int

    def read(self, map_tasks: MapTasks, positions: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """The learning rows at `positions` (ascending), only `columns`, in that order."""
        items = []
        for part in self.parts:
            begin, end = np.searchsorted(positions, [part.start, part.start + part.rows])
            if end > begin:
                items.append((part.url, positions[begin:end] - part.start))
        frames = map_tasks(partial(part_rows, columns=columns), items)
        if not frames:
            return read_part(self.parts[0].url, columns=columns).iloc[:0]
        return pd.concat(frames, ignore_index=True)


def key_columns(spec: FeatureSpec, label: str) -> list[str]:
    """What the folds and the selection's censoring check read of every learning row."""
    keys = [spec.device_column, spec.time_column, label]
    if TIME_SINCE_FAILURE in spec.feature_names:
        keys.append(TIME_SINCE_FAILURE)
    return keys


def part_facts(
    url: str, keys: list[str], feature_names: list[str]
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """A task: part `url` -> (its key columns, each feature's lowest and highest value), read
    a batch of rows at a time."""
    found, lows, highs = [], [], []
    for frame in iter_part(url):
        features = frame[feature_names]
        found.append(frame[keys])
        lows.append(features.min())
        highs.append(features.max())
    low = pd.concat(lows, axis=1).min(axis=1) if len(lows) > 1 else lows[0]
    high = pd.concat(highs, axis=1).max(axis=1) if len(highs) > 1 else highs[0]
    return pd.concat(found, ignore_index=True), low, high


def part_rows(item: tuple[str, np.ndarray], columns: list[str]) -> pd.DataFrame:
    """A task: the rows of part `item[0]` at positions `item[1]`, only `columns`."""
    url, positions = item
    return read_part_rows(url, positions, columns)


def stored_learning_set(
    locations: dict[str, str],
    spec: FeatureSpec,
    label: str,
    config: TenantConfig,
    map_tasks: MapTasks,
    max_rows: int | None,
    columns: list[str],
    seed: int | None = None,
) -> tuple[LearningSet, StoredLearning]:
    """(`learning_set` of the split tables at `locations`, sampled to `max_rows` with `seed`
    (default the training seed) as `LearningSet.sampled` samples, holding only the key
    columns, the selected features and `columns`; where all the learning rows are)."""
    urls = {split: list_parts(locations[split]) for split in LEARNING_SPLITS}
    keys = key_columns(spec, label)
    facts = map_tasks(
        partial(part_facts, keys=keys, feature_names=list(spec.feature_names)),
        [url for split in LEARNING_SPLITS for url in urls[split]],
    )
    parts, start = [], 0
    for url, (part_keys, _, _) in zip(
        [url for split in LEARNING_SPLITS for url in urls[split]], facts, strict=True
    ):
        parts.append(LearningPart(url, start, len(part_keys)))
        start += len(part_keys)
    train_parts = len(urls["train"])
    # Parts without rows (a split by device) carry no keys, nor their types.
    every_key = pd.concat([f[0] for f in facts if len(f[0])] or [facts[0][0]], ignore_index=True)
    train_rows = sum(part.rows for part in parts[:train_parts])
    stored = StoredLearning(parts, every_key, train_rows)
    train_facts = facts[:train_parts]
    low = pd.concat([f[1] for f in train_facts], axis=1).min(axis=1)
    high = pd.concat([f[2] for f in train_facts], axis=1).max(axis=1)
    del facts, train_facts

    def correlation_sample(names: list[str], positions: np.ndarray) -> pd.DataFrame:
        return stored.read(map_tasks, positions, names)

    kept, dropped = screen_features(
        every_key.iloc[:train_rows], low, high, correlation_sample, label, config
    )

    def whole_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
        rows = stored.read(map_tasks, np.arange(len(every_key)), [*kept, label])
        return rows.iloc[:train_rows], rows.iloc[train_rows:]

    selection = top_k_features(kept, dropped, whole_tables, label, config)
    folds = learning_folds(
        every_key, train_rows, config, spec.device_column, spec.time_column, label
    )
    y = every_key[label].to_numpy(float)
    seed = config.training.seed if seed is None else seed
    sample = draw_learning_rows(y, folds, max_rows, seed, config.task)
    wanted = list(dict.fromkeys([*keys, *selection.kept, *columns]))
    rows = stored.read(map_tasks, sample.positions, wanted)
    if sample.how == "random":
        sampled_train = int(np.searchsorted(sample.positions, train_rows))
        sampled_folds = subset_folds(folds, sample.positions, len(y))
    else:
        sampled_train, sampled_folds = train_rows, folds
    learning = LearningSet(selection, rows, sampled_train, sampled_folds, len(y), sample)
    return learning, stored


def load_parts(
    item: tuple[list[str], list[np.ndarray | None]],
    feature_names: list[str],
    label: str,
    classification: bool,
) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """A task (on the worker that trains on it): the parts `item[0]` as one training partition,
    (X as float32 `feature_names`, the label (int64 for classification, else float64), the
    weights or None), each part's rows with a zero weight left out (`item[1]`: each part's
    weights, or None for every row, unweighted)."""
    urls, weights = item
    Xs, ys, ws = [], [], []
    for url, weight in zip(urls, weights, strict=True):
        start = 0
        for frame in iter_part(url, [*feature_names, label]):  # a batch of rows at a time
            if weight is not None:
                batch = weight[start : start + len(frame)]
                start += len(frame)
                kept = batch > 0
                frame = frame[kept]
                ws.append(pd.Series(batch[kept], dtype=np.float64, name="weight"))
            Xs.append(float32_columns(frame, feature_names).reset_index(drop=True))
            ys.append(frame[label].reset_index(drop=True))
    X = pd.concat(Xs, ignore_index=True)
    y = pd.concat(ys, ignore_index=True).rename("label")
    y = y.astype(np.int64 if classification else np.float64)
    return X, y, (pd.concat(ws, ignore_index=True) if ws else None)


def stored_refit(
    stored: StoredLearning,
    family: str,
    feature_names: list[str],
    label: str,
    config: TenantConfig,
    engine: Engine,
) -> Refit:
    """The released model's fit on every learning row in storage (`fit_candidate`'s refit).

    On a cluster, for a family that trains there (LightGBM), each worker reads its own parts:
    no row passes through this process. Elsewhere every learning row is read here
    (`rows_refit`). Healthy rows are kept at training.negative_sample_rate, drawn over every
    learning row as `rows_refit` draws them."""
    y = stored.keys[label].to_numpy(float)
    training = config.training
    weights = negative_sample_weights(
        healthy_rows(y, config), training.negative_sample_rate, training.seed
    )
    rows = len(y) if weights is None else int((weights > 0).sum())
    chosen = model_families.family(family)
    if engine.kind == "local" or not chosen.fits_on_cluster:

        def fit_here(params: dict[str, Any]) -> tuple[Any, str]:
            device = config.schema_.device_column
            frame = stored.read(engine.map_tasks, np.arange(len(y)), [*feature_names, device])
            X = float32_columns(frame, feature_names)
            return rows_refit(family, X, y, frame[device], config, engine).fit(params)

        return Refit(rows, fit_here)

    items = training_items(stored, y, weights, config.task == "classification")

    def fit_there(params: dict[str, Any]) -> tuple[Any, str]:
        model = chosen.fit_loaded_on_cluster(
            engine,
            config.task,
            partial(
                load_parts,
                feature_names=feature_names,
                label=label,
                classification=config.task == "classification",
            ),
            items,
            feature_names,
            params,
            training,
            weighted=weights is not None,
        )
        return model, engine.kind

    return Refit(rows, fit_there)


def training_items(
    stored: StoredLearning, y: np.ndarray, weights: np.ndarray | None, classification: bool
) -> list[tuple[list[str], list[np.ndarray | None]]]:
    """The learning parts as training partitions ([URLs], [their weights]); classification:
    a part with no healthy row kept joins its neighbour, since each worker's LightGBM encodes
    the labels it holds (see `training_partitions`)."""
    items: list[tuple[list[str], list[np.ndarray | None]]] = []
    healthy: list[bool] = []
    for part in stored.parts:
        rows = slice(part.start, part.start + part.rows)
        weight = None if weights is None else weights[rows]
        kept = np.ones(part.rows, bool) if weight is None else weight > 0
        if not kept.any():
            continue
        has_healthy = bool((y[rows][kept] == 0).any()) or not classification
        if items and not (has_healthy and healthy[-1]):
            items[-1][0].append(part.url)
            items[-1][1].append(weight)
            healthy[-1] = healthy[-1] or has_healthy
        else:
            items.append(([part.url], [weight]))
            healthy.append(has_healthy)
    return items
