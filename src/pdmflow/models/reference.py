"""The reference model: what a data scientist writes in an afternoon, trained beside every
candidate on the same rows, so a reviewer sees the lift and the defaults never release
something worse without saying so.

Its recipe is fixed: raw sensors, rolling mean and standard deviation over the configured
windows and first differences (REFERENCE_GROUPS); LightGBM with the
library's default tree shape, 400 rounds at most at rate 0.1, no tuning. It goes through the
candidate's folds, calibration and threshold rule, so the two differ only in features and
parameters. Models see features as named groups (features/groups.py builds them from a spec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from pdmflow.config import TenantConfig
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.models.training import Candidate, Folds, fit_candidate

# Feature groups (features/groups.py) every model reads, and the ones the reference reads:
# the afternoon script's raw sensors, rolling mean and std over the configured windows and
# first differences.
ALWAYS_READ = ("raw",)
REFERENCE_GROUPS = ("raw", "rolling_short", "rolling_long", "differences")
REFERENCE_FAMILY = "lightgbm"
# LightGBM's own defaults, with the plain script's 400 trees as the rounds ceiling.
REFERENCE_PARAMS: dict[str, Any] = {
    "n_estimators": 400,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 20,
}
# The same configuration as an Optuna trial of models/tuning.search_space (its names).
REFERENCE_TRIAL: dict[str, Any] = {
    "n_estimators": 400,
    "num_leaves": 31,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "min_data_in_leaf": 20,
    "lambda_l1": 1e-8,
    "lambda_l2": 1e-8,
    "max_depth": 12,
}
GRAPH_FILE = "model.onnx"
FACTS_FILE = "reference.json"


def features_in(groups: dict[str, list[str]], chosen: list[str] | tuple[str, ...]) -> list[str]:
    """The features of the `chosen` groups (and the always-read ones), in group order."""
    wanted = set(chosen) | set(ALWAYS_READ)
    return [name for group, names in groups.items() if group in wanted for name in names]


def fit_reference(
    learning: pd.DataFrame,
    train_rows: int,
    folds: Folds,
    features: list[str],
    label: str,
    config: TenantConfig,
) -> Candidate:
    """The reference fitted like the candidate (folds, calibration, threshold rule) on
    `features`: the columns of REFERENCE_GROUPS (features.groups.features_of_groups)."""
    return fit_candidate(
        learning,
        train_rows,
        folds,
        features,
        label,
        config,
        REFERENCE_FAMILY,
        dict(REFERENCE_PARAMS),
        anomaly=False,
    )


def save_reference(reference: Candidate, folder: Path) -> Path:
    """The reference's ONNX graph and facts (features, threshold, params) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(reference.to_onnx(), folder / GRAPH_FILE)
    facts = {
        "feature_names": reference.feature_names,
        "decision_threshold": reference.threshold,
        "params": reference.params,
        "trees": reference.trees,
        "calibration": None if reference.calibrator is None else reference.calibrator.method,
    }
    (folder / FACTS_FILE).write_text(json.dumps(facts, indent=2, default=str))
    return folder


@dataclass(frozen=True)
class SavedReference:
    """A reference read back from its folder: scores test rows as train exported it."""

    graph: onnx.ModelProto
    feature_names: list[str]
    decision_threshold: float | None

    @classmethod
    def load(cls, folder: Path) -> SavedReference:
        facts = json.loads((folder / FACTS_FILE).read_text())
        return cls(
            onnx.load(str(folder / GRAPH_FILE)),
            list(facts["feature_names"]),
            facts["decision_threshold"],
        )

    def predict(self, X: pd.DataFrame, threads: int) -> np.ndarray:
        session = onnx_session(self.graph, threads=threads)
        return onnx_predict(session, X[self.feature_names])
