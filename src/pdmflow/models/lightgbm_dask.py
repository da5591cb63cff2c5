"""LightGBM trained on a Dask cluster (`lightgbm.dask`): one model from every worker's rows.

Each worker holds partitions of whole devices and trains with LightGBM's data-parallel tree
learner (`tree_learner: data`, unless params say otherwise), the workers exchanging
histograms over sockets on ports LightGBM picks itself (params may pin them:
`local_listen_port`, `machines`). The model comes back as the local estimator `fit_model`
returns (`to_local()`), so predictions, the ONNX export and the explainer are the same code.

No early stopping here: lightgbm.dask's early stopping has hung in released versions
(lightgbm-org/LightGBM#7009), and the final fit boosts a fixed number of rounds anyway.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

from pdmflow.engine.base import device_partitions
from pdmflow.models.lightgbm import LightGBMModel, estimator

if TYPE_CHECKING:
    from pdmflow.engine.dask_engine import DaskEngine

# Set by lightgbm.dask per worker (num_threads: the worker's threads; the network: its own).
_WORKER_PARAMS = ("n_jobs", "num_threads", "num_machines")


def training_partitions(
    devices: pd.Series, y: np.ndarray, workers: int, partition_rows: int, classification: bool
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(row order grouping each device's rows together, [start, end) ranges in that order).

    Partitions of whole devices of about min(`partition_rows`, rows / `workers`) rows, so that
    every worker holds some when there are devices enough. Classification: a partition without
    a healthy row joins its neighbour, since each worker's LightGBM encodes the labels it
    holds (a worker holding only label 1 would read it as the first class, 0).
    """
    codes = pd.factorize(devices, sort=False)[0]
    order = np.argsort(codes, kind="stable")  # devices in order of first appearance
    grouped = pd.DataFrame({"device": codes[order]})
    size = max(1, min(partition_rows, -(-len(order) // max(1, workers))))
    ranges = device_partitions(grouped, "device", size)
    if classification:
        healthy = y[order] == 0
        merged: list[tuple[int, int]] = []
        for begin, end in ranges:
            if merged and not (healthy[begin:end].any() and healthy[slice(*merged[-1])].any()):
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((begin, end))
        ranges = merged
    return order, ranges


def fit_dask_model(
    engine: DaskEngine,
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    devices: pd.Series,
    params: dict[str, Any],
    seed: int,
    partition_rows: int,
    rul_objective: str = "l1",
    max_bin: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> LightGBMModel:
    """`fit_model` without early stopping, trained by the engine's workers on partitions of
    whole devices (`devices`: each row's device), returned as a local LightGBM estimator."""
    classification = task == "classification"
    labels = np.asarray(y).astype(int if classification else float)
    order, ranges = training_partitions(
        devices, labels, len(engine.workers), partition_rows, classification
    )
    values = X.astype(np.float32, copy=False)

    def parts(data: pd.DataFrame | pd.Series) -> list[Any]:
        return [data.iloc[order[begin:end]] for begin, end in ranges]

    index = X.index
    with engine.scheduler_loss():
        # X, y and the weights of partition k are held by the same worker (engine.spread).
        dask_X = engine.spread(parts(values))
        dask_y = engine.spread(parts(pd.Series(labels, index=index, name="label")))
        dask_weight = None
        if sample_weight is not None:
            weights = pd.Series(np.asarray(sample_weight, np.float64), index=index, name="weight")
            dask_weight = engine.spread(parts(weights))
        return _fit(engine, task, dask_X, dask_y, dask_weight, params, seed, rul_objective, max_bin)


def fit_dask_loaded(
    engine: DaskEngine,
    task: str,
    load: Callable[[Any], tuple[pd.DataFrame, pd.Series, pd.Series | None]],
    items: list[Any],
    feature_names: list[str],
    params: dict[str, Any],
    seed: int,
    rul_objective: str = "l1",
    max_bin: int | None = None,
    weighted: bool = False,
) -> LightGBMModel:
    """`fit_dask_model` on partitions the workers load themselves: `load(item)` -> (X as
    float32 `feature_names`, the label, the weights or None), run on worker k mod n for item k
    (`engine.spread_loaded`). Nothing of the rows passes through this process. Classification:
    each item must hold a healthy row (see `training_partitions`)."""
    label_type = np.int64 if task == "classification" else np.float64
    metas: tuple[Any, ...] = (
        pd.DataFrame({name: pd.Series(dtype=np.float32) for name in feature_names}),
        pd.Series(dtype=label_type, name="label"),
    )
    if weighted:
        metas = (*metas, pd.Series(dtype=np.float64, name="weight"))
    with engine.scheduler_loss():
        loaded = engine.spread_loaded(load, items, metas)
        dask_weight = loaded[2] if weighted else None
        return _fit(
            engine, task, loaded[0], loaded[1], dask_weight, params, seed, rul_objective, max_bin
        )


def _fit(
    engine: DaskEngine,
    task: str,
    dask_X: Any,
    dask_y: Any,
    dask_weight: Any,
    params: dict[str, Any],
    seed: int,
    rul_objective: str,
    max_bin: int | None,
) -> LightGBMModel:
    """lightgbm.dask on the collections (partition k of each on one worker), as a local model."""
    bins = {} if max_bin is None else {"max_bin": int(max_bin)}
    settings = {k: v for k, v in {**bins, **params}.items() if k not in _WORKER_PARAMS}
    model = estimator(
        task,
        settings,
        seed,
        rul_objective,
        classifier=DaskLGBMClassifier,
        regressor=DaskLGBMRegressor,
        client=engine.client,
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # The scikit-learn wrapper always carries n_jobs, which lightgbm.dask replaces by
        # each worker's threads and warns about; its progress lines go where logs go, not
        # to the stdout that carries a step's output.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        model.fit(dask_X, dask_y, sample_weight=dask_weight)
    return model.to_local()
