"""evaluate: score the candidate on the test period, and the current champion on the same rows."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import onnx
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.models import get_model_info
from onnxruntime import InferenceSession
from sklearn.metrics import mean_absolute_error, roc_auc_score

from pdmflow.artifacts import (
    CHAMPION_VERSION_TAG,
    MODEL_URI_TAG,
    label_column,
    read_dataset,
    read_features,
    read_reference,
    read_split_membership,
)
from pdmflow.config import EvaluationConfig, TenantConfig
from pdmflow.errors import PdmflowError, StepInputError
from pdmflow.evaluation.catalog import CHAMPION_KEY
from pdmflow.evaluation.champion import (
    bootstrap_histogram,
    describe,
    paired_bootstrap,
    unseen_rows,
)
from pdmflow.evaluation.explain import Explainer, shap_figures, shap_importance
from pdmflow.evaluation.latency import serving_latency
from pdmflow.evaluation.lift import reference_comparison
from pdmflow.evaluation.maintenance import (
    worst_devices,
)
from pdmflow.evaluation.report import assess_test_rows
from pdmflow.evaluation.robustness import robustness_summary, robustness_table
from pdmflow.features.builder import FeatureSpec, build_features
from pdmflow.models import families as model_families
from pdmflow.models.families import DEFAULT_FAMILY
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.models.threads import estimator_threads
from pdmflow.registry import production_version
from pdmflow.serving import SPEC_PATH, FailureScorer
from pdmflow.tracking import downloaded, latest_step_run, step_run


def _load(
    model_uri: str, explain: bool = True
) -> tuple[onnx.ModelProto, FeatureSpec, Explainer | None]:
    """The model's ONNX graph, its feature spec and (with `explain`) its explainer, None for
    models logged before explainers were, from one download."""
    with downloaded(model_uri) as local:
        spec = FeatureSpec.from_json((local / SPEC_PATH).read_text())
        explainer = Explainer.load_from_model_dir(local) if explain else None
        return mlflow.onnx.load_model(str(local)), spec, explainer


def _same_definitions(a: FeatureSpec, b: FeatureSpec) -> bool:
    """Whether two specs build every feature the same way (whatever subset each reads)."""
    return replace(a, feature_names=[]) == replace(b, feature_names=[])


def _champion_prediction(
    champion_uri: str, test: pd.DataFrame, spec: FeatureSpec, features_uri: str
) -> np.ndarray:
    """The champion's predictions on exactly the candidate's test rows.

    The test table holds every feature the tenant's spec builds; a champion reading a subset of
    them is scored from it. A champion built with another feature spec gets its own features
    rebuilt from the same raw dataset, joined back on (device, time).
    """
    graph, champion_spec, _ = _load(champion_uri, explain=False)
    session = onnx_session(graph, threads=estimator_threads())
    if _same_definitions(champion_spec, spec) and set(champion_spec.feature_names) <= set(
        test.columns
    ):
        return onnx_predict(session, test[champion_spec.feature_names])
    features_run = mlflow.get_run(features_uri.split("/")[1])
    telemetry, events = read_dataset(features_run.data.params["data_uri"])
    rebuilt = build_features(telemetry, champion_spec, events)
    keys = [spec.device_column, spec.time_column]
    joined = test[keys].merge(rebuilt, on=keys, how="left")
    if joined[champion_spec.feature_names].isna().any().any():
        raise StepInputError(
            f"champion {champion_uri}: its features cannot be rebuilt for every test row"
        )
    return onnx_predict(session, joined[champion_spec.feature_names])


def unseen_by_champion(
    champion_run_id: str, test: pd.DataFrame, spec: FeatureSpec
) -> tuple[np.ndarray, str]:
    """Test rows the champion never learned from (`unseen_rows`), read from its split."""
    features_uri = mlflow.get_run(champion_run_id).data.tags.get("pdmflow.features_uri")
    membership = read_split_membership(features_uri) if features_uri else None
    return unseen_rows(membership, test, spec.device_column, spec.time_column)


def _explain(
    explainer: Explainer, X_test: pd.DataFrame, settings: EvaluationConfig
) -> dict[str, Figure]:
    """SHAP on (a seeded sample of) the test rows: the plots, and shap_importance.json logged."""
    explanation = explainer.explain(X_test, max_rows=settings.shap_rows, seed=settings.seed)
    mlflow.log_dict(shap_importance(explanation), "shap_importance.json")
    return shap_figures(explanation)


def _log_figures(figures: dict[str, Figure]) -> None:
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)


def run_evaluate(config: TenantConfig, train_run_id: str = "latest") -> str:
    """Run the step; return the evaluate run id (promote reads its metrics and tags)."""
    if train_run_id == "latest":
        train_run_id = latest_step_run(config, "train").info.run_id
    train_run = mlflow.get_run(train_run_id)
    model_uri = train_run.data.tags.get(MODEL_URI_TAG)
    features_uri = train_run.data.tags.get("pdmflow.features_uri")
    if not model_uri or not features_uri:
        raise StepInputError(f"train run {train_run_id}: no model logged (tag {MODEL_URI_TAG})")
    tables, spec = read_features(features_uri)
    graph, model_spec, explainer = _load(model_uri)
    # Whole test tables on every core; the latency's bare-ONNX figure on one, as serving runs.
    session = onnx_session(graph, threads=estimator_threads())
    single_row_session = onnx_session(graph)
    test = tables["test"]
    metadata = get_model_info(model_uri).metadata or {}
    threshold = float(metadata["decision_threshold"]) if config.task == "classification" else None
    data_uri = mlflow.get_run(features_uri.split("/")[1]).data.params["data_uri"]
    telemetry, events = read_dataset(data_uri)
    device = spec.device_column

    with step_run(config, "evaluate") as run:
        family = metadata.get("family", DEFAULT_FAMILY)
        mlflow.log_params(
            {
                "train_run_id": train_run_id,
                "model_uri": model_uri,
                "features_uri": features_uri,
                "family": family,
            }
        )
        X_test = test[model_spec.feature_names]
        prediction = onnx_predict(session, X_test)
        metrics, per_device, figures = assess_test_rows(
            config, test, label_column(config), model_spec, prediction, threshold, events
        )
        reference = read_reference(train_run_id)
        if reference is not None:
            label = label_column(config)
            metrics.update(
                reference_comparison(
                    config,
                    test[label].to_numpy(),
                    reference.predict(test, estimator_threads()),
                    reference.decision_threshold,
                    metrics,
                ),
                reference_feature_count=len(reference.feature_names),
            )
        metrics.update(
            test_rows=len(test),
            test_devices=int(test[device].nunique()),
            feature_count=len(model_spec.feature_names),
        )
        test_devices = test[device].unique()
        metrics.update(
            serving_latency(
                FailureScorer.load(model_uri),
                X_test.to_numpy(),
                telemetry[telemetry[device].isin(test_devices)],
                events if model_spec.time_since_failure else None,
                lambda row: onnx_predict(single_row_session, row),
                batch_devices=config.evaluation.latency_batch_devices,
            )
        )
        # Measured where both models exist (train); carried here for the gates and the card.
        carried = (
            "onnx_max_abs_difference",
            "cv_auc_mean",
            "cv_auc_std",
            "cv_mae_mean",
            "cv_mae_std",
        )
        metrics.update({k: v for k, v in train_run.data.metrics.items() if k in carried})
        report: dict[str, object] = {
            "model_uri": model_uri,
            "features_uri": features_uri,
            "features": {
                "built": len(spec.feature_names),
                "kept": len(model_spec.feature_names),
                "families": model_spec.families(),
                "history": f"{model_spec.history / pd.Timedelta(hours=1):g} h",
                "min_readings": model_spec.min_readings,
            },
            "model": _model_facts(train_run, metadata),
            "worst_devices": worst_devices(per_device),
        }
        if explainer is not None:
            figures.update(_explain(explainer, X_test, config.evaluation))
        if config.evaluation.robustness:
            report["robustness"] = _robustness(
                config, telemetry, events, model_spec, test, session, metrics
            )
        report["champion"] = _compare_with_champion(
            config, test, spec, features_uri, prediction, metrics, figures
        )
        report["metrics"] = metrics
        mlflow.log_metrics(metrics)
        _log_figures(figures)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "per_device_metrics.csv"
            per_device.to_csv(path, index=False)
            mlflow.log_artifact(str(path))
        mlflow.log_dict(report, "evaluation_report.json")
        mlflow.set_tag(MODEL_URI_TAG, model_uri)
        return run.info.run_id


def _model_facts(train_run: Run, metadata: dict[str, object]) -> dict[str, object]:
    """What the model card says about the model: family, params, calibration, threshold."""
    params = train_run.data.params
    family = params.get("family", DEFAULT_FAMILY)
    return {
        "family": family,
        "params": model_families.family(family).params_from_logged(params),
        "params_source": params.get("params_source", "config"),
        "trees": train_run.data.metrics.get("trees"),
        "calibration": metadata.get("calibration", "none"),
        "threshold": metadata.get("decision_threshold"),
        "threshold_rule": params.get("threshold_rule", "?"),
    }


def _robustness(
    config: TenantConfig,
    telemetry: pd.DataFrame,
    events: pd.DataFrame,
    model_spec: FeatureSpec,
    test: pd.DataFrame,
    session: InferenceSession,
    metrics: dict[str, float],
) -> list[dict[str, object]]:
    """The robustness table (logged), its headline metrics (into `metrics`), the worst tag."""
    metric = CHAMPION_KEY[config.task]
    table = robustness_table(
        telemetry,
        events if len(events) else None,
        model_spec,
        test[[model_spec.device_column, model_spec.time_column]],
        test[label_column(config)].to_numpy(),
        lambda features: onnx_predict(session, features[model_spec.feature_names]),
        metric=metric,
        noise_levels=config.evaluation.noise_levels,
        seed=config.evaluation.seed,
    )
    summary = robustness_summary(table, metric)
    metrics.update({k: v for k, v in summary.items() if k.startswith("robustness_")})
    mlflow.set_tags(
        {
            "pdmflow.robustness_worst": summary["worst"],
            "pdmflow.robustness_worst_sensor": summary["worst_sensor"],
        }
    )
    mlflow.log_table(table, "robustness.json")
    return table.to_dict(orient="records")


def _compare_with_champion(
    config: TenantConfig,
    test: pd.DataFrame,
    spec: FeatureSpec,
    features_uri: str,
    prediction: np.ndarray,
    metrics: dict[str, float],
    figures: dict[str, Figure],
) -> dict[str, object] | None:
    """Score the Production version on the test rows it never learned from, paired with the
    candidate on the same rows, and bootstrap the difference by device.

    Adds `champion_<metric>`, `candidate_<metric>_on_champion_rows` and
    `champion_<metric>_difference` with its `_low` / `_high` interval to `metrics`, or
    `champion_comparison_rows` = 0 when no fair row is left. Tags say how.
    """
    champion = production_version(config.registered_model_name)
    if champion is None:
        return None
    champion_uri = f"models:/{config.registered_model_name}/{champion.version}"
    mlflow.set_tag(CHAMPION_VERSION_TAG, str(champion.version))
    key = CHAMPION_KEY[config.task]
    unseen, how = unseen_by_champion(champion.run_id, test, spec)
    mlflow.set_tag("pdmflow.champion_rows", how)
    label = label_column(config)
    comparable = unseen.any() and (
        config.task == "regression" or test[label][unseen].nunique() == 2
    )
    metrics["champion_comparison_rows"] = int(unseen.sum()) if comparable else 0
    if not comparable:
        sentence = f"not compared with Production version {champion.version}: {how}"
        mlflow.set_tag("pdmflow.champion_comparison", sentence)
        return {
            "version": str(champion.version),
            "rows": how,
            "compared": False,
            "sentence": sentence,
        }
    rows = test[unseen].reset_index(drop=True)
    try:
        champion_prediction = _champion_prediction(champion_uri, rows, spec, features_uri)
    except PdmflowError as error:
        # No champion metric: promote's champion gate fails closed, with this reason.
        mlflow.set_tag("pdmflow.champion_not_comparable", str(error))
        sentence = f"Production version {champion.version} could not be scored: {error}"
        mlflow.set_tag("pdmflow.champion_comparison", sentence)
        return {"version": str(champion.version), "error": str(error), "sentence": sentence}
    truth = rows[label].to_numpy()
    result = paired_bootstrap(
        truth.astype(int) if config.task == "classification" else truth,
        prediction[unseen],
        champion_prediction,
        rows[spec.device_column].astype(str).to_numpy(),
        key,
        n_resamples=config.evaluation.bootstrap_resamples,
        seed=config.evaluation.seed,
    )
    score = roc_auc_score if key == "auc" else mean_absolute_error
    metrics[f"champion_{key}"] = float(score(truth, champion_prediction))
    metrics[f"candidate_{key}_on_champion_rows"] = float(score(truth, prediction[unseen]))
    metrics.update(
        {
            f"champion_{key}_difference": result.difference,
            f"champion_{key}_difference_low": result.low,
            f"champion_{key}_difference_high": result.high,
        }
    )
    sentence = describe(result, champion.version) + f"; {how}."
    mlflow.set_tag("pdmflow.champion_comparison", sentence)
    figures["champion_bootstrap.png"] = bootstrap_histogram(result)
    return {
        "version": str(champion.version),
        "rows": how,
        "sentence": sentence,
        f"champion_{key}": metrics[f"champion_{key}"],
        "difference": result.difference,
        "interval": [result.low, result.high],
        "resamples_used": result.resamples_used,
        "devices": result.groups,
    }
