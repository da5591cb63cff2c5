"""The test rows evaluate judges: every row scored, and a sample of whole devices for the
checks that rebuild, explain or time rows.

Every test row's prediction (the candidate's ONNX graph, and the in-run reference's) feeds the
test metrics. With the features in storage each test part is scored by a task (on the workers
with a Dask engine) and only the key columns and the predictions come back, so no process
holds the test table. The robustness, champion, SHAP and latency checks read the rows of a
seeded sample of whole test devices holding at most evaluation.diagnostic_rows rows, and
evaluate reads only those devices' readings; where the test set is within that, the sample is
every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx
import pandas as pd

from pdmflow.engine.base import MapTasks
from pdmflow.engine.storage import iter_part, list_parts, read_partitioned
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.models.reference import SavedReference

PREDICTION = "prediction"
REFERENCE_PREDICTION = "reference_prediction"


@dataclass(frozen=True)
class EvaluatedRows:
    """`scored`: every test row's device, time and label, with PREDICTION (and
    REFERENCE_PREDICTION with a reference); `sample`: every column of the sampled devices'
    test rows, in test order, and `sample_prediction` their predictions."""

    scored: pd.DataFrame
    sample: pd.DataFrame
    sample_prediction: np.ndarray


def score_rows(
    frame: pd.DataFrame,
    graph: onnx.ModelProto,
    feature_names: list[str],
    reference: SavedReference | None,
    keys: list[str],
    threads: int,
) -> pd.DataFrame:
    """`frame`'s key columns with the candidate's prediction (and the reference's)."""
    scored = frame[keys].reset_index(drop=True)
    if len(frame) == 0:  # a part without test devices
        scored[PREDICTION] = np.zeros(0)
        if reference is not None:
            scored[REFERENCE_PREDICTION] = np.zeros(0)
        return scored
    scored[PREDICTION] = onnx_predict(onnx_session(graph, threads=threads), frame[feature_names])
    if reference is not None:
        scored[REFERENCE_PREDICTION] = reference.predict(frame, threads)
    return scored


def score_part(
    url: str,
    graph: onnx.ModelProto,
    feature_names: list[str],
    reference: SavedReference | None,
    keys: list[str],
    threads: int,
) -> pd.DataFrame:
    """A task: `score_rows` of the test part at `url`, reading only the columns it needs, a
    batch of rows at a time."""
    needed = list(
        dict.fromkeys([*keys, *feature_names, *(reference.feature_names if reference else [])])
    )
    scored = [
        score_rows(frame, graph, feature_names, reference, keys, threads)
        for frame in iter_part(url, needed)
    ]
    return pd.concat(scored, ignore_index=True) if len(scored) > 1 else scored[0]


def diagnostic_devices(devices: pd.Series, max_rows: int | None, seed: int) -> list[str] | None:
    """A seeded draw of whole devices whose rows (`devices`: each test row's device) total at
    most `max_rows`, at least one device; None (every device) when all rows fit."""
    if max_rows is None or len(devices) <= max_rows:
        return None
    counts = devices.value_counts(sort=False)
    order = np.random.default_rng(seed).permutation(len(counts))
    total = np.cumsum(counts.to_numpy()[order])
    take = max(1, int(np.searchsorted(total, max_rows, side="right")))
    return sorted(counts.index[order[:take]].tolist())


def evaluated_rows(
    test: pd.DataFrame | str,
    graph: onnx.ModelProto,
    feature_names: list[str],
    reference: SavedReference | None,
    keys: list[str],
    max_rows: int | None,
    seed: int,
    map_tasks: MapTasks,
    threads: int,
) -> EvaluatedRows:
    """The `EvaluatedRows` of `test`: the test table itself, or its location in storage (each part
    scored by `map_tasks`, the sample read with a device filter). `keys`: device, time, label."""
    if isinstance(test, pd.DataFrame):
        scored = score_rows(test, graph, feature_names, reference, keys, threads)
    else:
        score = partial(
            score_part,
            graph=graph,
            feature_names=feature_names,
            reference=reference,
            keys=keys,
            threads=threads,
        )
        parts = map_tasks(score, list_parts(test))
        # Parts without test devices (a split by device) carry no rows, nor their types.
        scored = pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)
    device = keys[0]
    devices = diagnostic_devices(scored[device], max_rows, seed)
    in_sample = np.ones(len(scored), bool) if devices is None else scored[device].isin(devices)
    if isinstance(test, pd.DataFrame):
        sample = test if devices is None else test[in_sample.to_numpy()].reset_index(drop=True)
    else:
        filters = None if devices is None else [(device, "in", devices)]
        sample = read_partitioned(test, filters)
    return EvaluatedRows(scored, sample, scored[PREDICTION].to_numpy()[np.asarray(in_sample)])
