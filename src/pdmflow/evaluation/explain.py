"""SHAP explanations of the released tree model: per-row contributions, plots, importances.

An `Explainer` wraps the native estimator a `Candidate` releases (a LightGBM booster or a
scikit-learn Random Forest) and, when the model uses it, the Isolation Forest ONNX part whose
score is the estimator's last input column, `anomaly_score`. SHAP values come from
`shap.TreeExplainer` (exact, path-dependent TreeSHAP) and add up, with the base value, to the
estimator's raw margin, before any calibration:

    LightGBM classification   log-odds of failure (`predict(raw_score=True)`)
    Random Forest classification   the forest's mean vote for failure (`predict_proba[:, 1]`)
    regression (either family)   remaining useful life in hours

train saves the explainer next to the ONNX graph (MLflow flattens extra files into
`extra_files/<basename>`, hence the `explainer_` prefix on every file name); evaluate and
serving rebuild it with `Explainer.load_from_model_dir`. shap itself (slow to import) is only
imported when something is explained or plotted.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pandas as pd

from pdmflow.models import anomaly as anomaly_model
from pdmflow.models import families as model_families
from pdmflow.models.training import ANOMALY_FEATURE, Candidate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXTRA_FILES_DIR = "extra_files"  # where MLflow puts a model's extra files
META_FILE = "explainer_meta.json"
# The explained estimator's file: each family names its own (LightGBM's booster as text).
ESTIMATOR_FILES = {name: f.explainer_file for name, f in model_families.FAMILIES.items()}
LIGHTGBM_FILE = ESTIMATOR_FILES[model_families.DEFAULT_FAMILY]
ANOMALY_FILE = "explainer_anomaly.onnx"
EXPLAINER_FILES = (META_FILE, *ESTIMATOR_FILES.values(), ANOMALY_FILE)
# TreeSHAP costs trees x leaves x depth^2 per row: evaluate explains a seeded sample of at most
# this many test rows (a deep 300-tree forest takes a few seconds per thousand rows).
SHAP_MAX_ROWS = 2000
SHAP_SEED = 0

TASKS = ("classification", "regression")


@dataclass
class Explanation:
    """SHAP values of some rows: `values.sum(axis=1) + base_value == margin` (per row).

    `values` and `data` have the estimator's input columns (the model's features, then
    `anomaly_score` when the model uses it) and the explained rows' index.
    """

    values: pd.DataFrame
    base_value: float
    margin: np.ndarray
    data: pd.DataFrame
    margin_name: str


def sample_rows(
    X: pd.DataFrame, max_rows: int = SHAP_MAX_ROWS, seed: int = SHAP_SEED
) -> pd.DataFrame:
    """At most `max_rows` rows of X, drawn without replacement with `seed`, in X's order."""
    if len(X) <= max_rows:
        return X
    chosen = np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))
    return X.iloc[chosen]


class Explainer:
    """TreeSHAP over the released estimator (and its anomaly-score input, when present)."""

    def __init__(
        self,
        family: str,
        task: str,
        feature_names: Sequence[str],
        estimator: Any,
        anomaly: onnx.ModelProto | None = None,
    ) -> None:
        if family not in model_families.FAMILIES or task not in TASKS:
            raise ValueError(f"explainer: unknown family/task {family!r}/{task!r}")
        self.family = family
        self.model_family = model_families.family(family)
        self.task = task
        self.feature_names = list(feature_names)
        self.estimator = estimator
        self.anomaly = anomaly
        self._tree_explainer: Any = None

    @property
    def columns(self) -> list[str]:
        """The estimator's input columns: the model's features, then `anomaly_score`."""
        return self.feature_names + ([ANOMALY_FEATURE] if self.anomaly is not None else [])

    @property
    def margin_name(self) -> str:
        return self.model_family.margin_name(self.task)

    @classmethod
    def from_candidate(cls, candidate: Candidate) -> Explainer:
        """The explainer of a fitted candidate (its estimator is not copied for the forest)."""
        return cls(
            candidate.family,
            candidate.task,
            candidate.feature_names,
            model_families.family(candidate.family).explained_estimator(candidate.estimator),
            candidate.anomaly,
        )

    # --- files ---------------------------------------------------------------------------

    def save(self, directory: Path) -> list[Path]:
        """Write the files that rebuild this explainer into `directory`; return their paths.

        LightGBM: the booster as text; Random Forest: joblib (load it with the same
        scikit-learn version); the anomaly graph as ONNX bytes; and `explainer_meta.json`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [directory / META_FILE]
        meta = {
            "family": self.family,
            "task": self.task,
            "feature_names": self.feature_names,
            "anomaly_score": self.anomaly is not None,
            "margin": self.margin_name,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        path = directory / self.model_family.explainer_file
        self.model_family.save_explained(self.estimator, path)
        written.append(path)
        if self.anomaly is not None:
            path = directory / ANOMALY_FILE
            path.write_bytes(self.anomaly.SerializeToString())
            written.append(path)
        return written

    @classmethod
    def load(cls, directory: Path) -> Explainer:
        """Rebuild an explainer from the files `save` wrote (everything is read into memory)."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        family = model_families.family(meta["family"])
        estimator = family.load_explained(directory / family.explainer_file)
        anomaly = None
        if meta["anomaly_score"]:
            anomaly = onnx.load_model_from_string((directory / ANOMALY_FILE).read_bytes())
        return cls(meta["family"], meta["task"], meta["feature_names"], estimator, anomaly)

    @classmethod
    def load_from_model_dir(cls, model_dir: Path) -> Explainer | None:
        """The explainer saved inside a downloaded MLflow model directory (under
        `extra_files/`), or None for a model released without one."""
        directory = Path(model_dir) / EXTRA_FILES_DIR
        if not (directory / META_FILE).is_file():
            return None
        return cls.load(directory)

    # --- explaining ----------------------------------------------------------------------

    def estimator_input(self, X: pd.DataFrame) -> pd.DataFrame:
        """The model's features of X (as given), plus the anomaly score computed by the
        anomaly graph as serving does (float32, like the estimator's training input)."""
        data = X[self.feature_names]
        if self.anomaly is None:
            return data
        return data.assign(**{ANOMALY_FEATURE: anomaly_model.anomaly_scores(self.anomaly, data)})

    def margin(self, data: pd.DataFrame) -> np.ndarray:
        """The estimator's raw output on its input columns (see the module docstring)."""
        values = data[self.columns].astype(np.float32)
        return self.model_family.margin(self.estimator, values)

    def explain(
        self, X: pd.DataFrame, max_rows: int | None = None, seed: int = SHAP_SEED
    ) -> Explanation:
        """SHAP values of the rows of X (which holds at least the model's feature columns).

        With `max_rows`, a seeded sample of at most that many rows is explained (evaluate uses
        `SHAP_MAX_ROWS`: exact TreeSHAP on a deep forest takes seconds per thousand rows);
        serving explains every row it is given. Inputs are cast to float32, as in training.
        """
        if max_rows is not None:
            X = sample_rows(X, max_rows, seed)
        data = self.estimator_input(X)
        inputs = data.astype(np.float32)
        values, base_value = self._shap(inputs)
        return Explanation(
            values=pd.DataFrame(values, index=data.index, columns=self.columns),
            base_value=base_value,
            margin=self.margin(inputs),
            data=data,
            margin_name=self.margin_name,
        )

    def _shap(self, inputs: pd.DataFrame) -> tuple[np.ndarray, float]:
        """(rows x columns SHAP values of class 1 / the regression, base value), whatever
        layout the installed shap returns."""
        if self._tree_explainer is None:
            import shap

            self._tree_explainer = shap.TreeExplainer(self.estimator)
        explainer = self._tree_explainer
        with warnings.catch_warnings():
            # shap >= 0.45 warns that LightGBM binary output is no longer a per-class list.
            warnings.simplefilter("ignore", UserWarning)
            values = explainer.shap_values(inputs, check_additivity=False)
        if isinstance(values, list):  # older shap: one array per class, class 1 last
            values = values[-1]
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 3:  # shap >= 0.45 for classifiers: rows x features x classes
            values = values[:, :, -1]
        expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        return values, float(expected[-1])


# --- summaries of an explanation ---------------------------------------------------------


def top_features(explanation: Explanation, k: int) -> list[list[tuple[str, float, float]]]:
    """Per row, its `k` largest contributions by |SHAP|: (feature, value, contribution).

    Ties keep the column order; fewer than `k` when the model has fewer columns.
    """
    values = explanation.values.to_numpy()
    data = explanation.data[list(explanation.values.columns)].to_numpy(dtype=np.float64)
    names = list(explanation.values.columns)
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, : max(k, 0)]
    return [
        [(names[j], float(data[i, j]), float(values[i, j])) for j in row]
        for i, row in enumerate(order)
    ]


def shap_importance(explanation: Explanation) -> dict[str, Any]:
    """shap_importance.json: mean |SHAP| per feature (largest first), with the base value
    and the scale (margin) the contributions are on."""
    mean_abs = explanation.values.abs().mean(axis=0).sort_values(ascending=False, kind="stable")
    return {
        "margin": explanation.margin_name,
        "base_value": explanation.base_value,
        "rows_explained": len(explanation.values),
        "mean_abs_shap": {name: float(value) for name, value in mean_abs.items()},
    }


def shap_figures(explanation: Explanation, max_display: int = 20) -> dict[str, Figure]:
    """The beeswarm ("shap_summary.png") and mean-|SHAP| bar ("shap_importance_bar.png")
    plots, drawn by shap with matplotlib; the caller logs and closes them."""
    import matplotlib.pyplot as plt
    import shap

    values = explanation.values.to_numpy()
    data = explanation.data[list(explanation.values.columns)].astype(np.float64)
    rows = len(values)
    figures: dict[str, Figure] = {}
    for name, plot_type, title in (
        ("shap_summary.png", "dot", "SHAP values"),
        ("shap_importance_bar.png", "bar", "Mean |SHAP|"),
    ):
        plt.figure()  # shap draws on the current figure
        shap.summary_plot(values, data, plot_type=plot_type, max_display=max_display, show=False)
        figure = plt.gcf()
        axes = figure.axes[0]
        axes.set_title(f"{title} on {rows:,} rows")
        axes.set_xlabel(f"{title}, in {explanation.margin_name}", fontsize=10)
        figure.tight_layout()
        figures[name] = figure
    return figures


def gain_importance_figure(
    model: Candidate | Explainer | Any,
    feature_names: Sequence[str] | None = None,
    top: int = 20,
) -> Figure:
    """Horizontal bars of the `top` features by the model's own importance: total split gain
    for LightGBM (over the trees it predicts with), mean impurity decrease for a forest.

    `model` is a Candidate, an Explainer or the estimator; names default to its columns.
    """
    import matplotlib.pyplot as plt

    if isinstance(model, Candidate):
        model = Explainer.from_candidate(model)
    if isinstance(model, Explainer):
        names, family, estimator = model.columns, model.model_family, model.estimator
    else:
        family = model_families.family_of(model)
        names, estimator = None, family.explained_estimator(model)
    names = list(feature_names) if feature_names is not None else names
    importance, label = family.importance(estimator)
    if names is None:
        names = [f"feature {i}" for i in range(len(importance))]
    if len(names) != len(importance):
        raise ValueError(
            f"gain importance: {len(names)} feature names for {len(importance)} model inputs"
        )
    order = np.argsort(-np.asarray(importance, dtype=np.float64), kind="stable")[:top]
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    axes.barh([names[i] for i in order][::-1], np.asarray(importance)[order][::-1])
    axes.set_xlabel(label)
    axes.set_title(f"Top {len(order)} features by the model's importance")
    figure.tight_layout()
    return figure
