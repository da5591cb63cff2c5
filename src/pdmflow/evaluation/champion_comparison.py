"""The candidate against the Production version (the champion) on the test rows the champion
never learned from: both scored on the same rows, the difference bootstrapped by device.

Pure over frames: the evaluate step reads the champion (its graph, spec and split) and logs
the `Findings` returned here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.artifacts import CHAMPION_VERSION_TAG
from pdmflow.config import TenantConfig
from pdmflow.errors import PdmflowError, StepInputError
from pdmflow.evaluation.catalog import CHAMPION_KEY
from pdmflow.evaluation.champion import bootstrap_histogram, describe, paired_bootstrap
from pdmflow.evaluation.findings import Findings
from pdmflow.features.builder import FeatureSpec, build_features

Predict = Callable[[pd.DataFrame], np.ndarray]


def same_definitions(a: FeatureSpec, b: FeatureSpec) -> bool:
    """Whether two specs build every feature the same way (whatever subset each reads)."""
    return replace(a, feature_names=[]) == replace(b, feature_names=[])


def champion_prediction(
    predict: Predict,
    champion_spec: FeatureSpec,
    test: pd.DataFrame,
    spec: FeatureSpec,
    raw_dataset: Callable[[], tuple[pd.DataFrame, pd.DataFrame]],
    champion_uri: str,
) -> np.ndarray:
    """The champion's predictions (`predict` on its feature columns) on exactly these rows.

    The test table holds every feature the tenant's spec builds; a champion reading a subset of
    them is scored from it. A champion built with another feature spec gets its own features
    rebuilt from the same raw dataset (`raw_dataset()`: telemetry, events), joined back on
    (device, time).
    """
    if same_definitions(champion_spec, spec) and set(champion_spec.feature_names) <= set(
        test.columns
    ):
        return predict(test[champion_spec.feature_names])
    telemetry, events = raw_dataset()
    rebuilt = build_features(telemetry, champion_spec, events)
    keys = [spec.device_column, spec.time_column]
    joined = test[keys].merge(rebuilt, on=keys, how="left")
    if joined[champion_spec.feature_names].isna().any().any():
        raise StepInputError(
            f"champion {champion_uri}: its features cannot be rebuilt for every test row"
        )
    return predict(joined[champion_spec.feature_names])


def compare_with_champion(
    config: TenantConfig,
    version: str,
    test: pd.DataFrame,
    label: str,
    device_column: str,
    prediction: np.ndarray,
    unseen: np.ndarray,
    how: str,
    score_champion: Predict,
) -> Findings:
    """Score Production version `version` (`score_champion(rows)`) on the test rows it never
    learned from (`unseen`, chosen as `how` says), paired with the candidate's `prediction`
    on the same rows, and bootstrap the difference by device.

    Metrics: `champion_<metric>`, `candidate_<metric>_on_champion_rows` and
    `champion_<metric>_difference` with its `_low` / `_high` interval, or
    `champion_comparison_rows` = 0 when no fair row is left. Tags say how.
    """
    found = Findings(tags={CHAMPION_VERSION_TAG: version, "pdmflow.champion_rows": how})
    key = CHAMPION_KEY[config.task]
    comparable = unseen.any() and (
        config.task == "regression" or test[label][unseen].nunique() == 2
    )
    found.metrics["champion_comparison_rows"] = int(unseen.sum()) if comparable else 0
    if not comparable:
        sentence = f"not compared with Production version {version}: {how}"
        found.tags["pdmflow.champion_comparison"] = sentence
        found.report = {"version": version, "rows": how, "compared": False, "sentence": sentence}
        return found
    rows = test[unseen].reset_index(drop=True)
    try:
        champion = score_champion(rows)
    except PdmflowError as error:
        # No champion metric: promote's champion gate fails closed, with this reason.
        found.tags["pdmflow.champion_not_comparable"] = str(error)
        sentence = f"Production version {version} could not be scored: {error}"
        found.tags["pdmflow.champion_comparison"] = sentence
        found.report = {"version": version, "error": str(error), "sentence": sentence}
        return found
    truth = rows[label].to_numpy()
    result = paired_bootstrap(
        truth.astype(int) if config.task == "classification" else truth,
        prediction[unseen],
        champion,
        rows[device_column].astype(str).to_numpy(),
        key,
        n_resamples=config.evaluation.bootstrap_resamples,
        seed=config.evaluation.seed,
    )
    score = roc_auc_score if key == "auc" else mean_absolute_error
    found.metrics[f"champion_{key}"] = float(score(truth, champion))
    found.metrics[f"candidate_{key}_on_champion_rows"] = float(score(truth, prediction[unseen]))
    found.metrics.update(
        {
            f"champion_{key}_difference": result.difference,
            f"champion_{key}_difference_low": result.low,
            f"champion_{key}_difference_high": result.high,
        }
    )
    sentence = describe(result, version) + f"; {how}."
    found.tags["pdmflow.champion_comparison"] = sentence
    found.figures["champion_bootstrap.png"] = bootstrap_histogram(result)
    found.report = {
        "version": version,
        "rows": how,
        "sentence": sentence,
        f"champion_{key}": found.metrics[f"champion_{key}"],
        "difference": result.difference,
        "interval": [result.low, result.high],
        "resamples_used": result.resamples_used,
        "devices": result.groups,
    }
    return found
