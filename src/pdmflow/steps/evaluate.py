"""evaluate: score the candidate on the test period, and the current champion on the same rows.

Reads the train run's model and the features run's tables, calls the rooms of `evaluation/`
(each returns its metrics, tags, figures and report section) and logs what they return.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import onnx
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import LoggedModelInput
from mlflow.models import get_model_info

from pdmflow.artifacts import (
    MODEL_URI_TAG,
    data_uri_of,
    label_column,
    logged_model_id,
    read_dataset,
    read_features,
    read_reference,
    read_split_membership,
    stored_locations,
)
from pdmflow.config import TenantConfig
from pdmflow.engine import open_engine
from pdmflow.engine.base import in_this_process
from pdmflow.errors import StepInputError
from pdmflow.evaluation.catalog import CARRIED_FROM_TRAIN, CHAMPION_KEY
from pdmflow.evaluation.champion import unseen_rows
from pdmflow.evaluation.champion_comparison import champion_prediction, compare_with_champion
from pdmflow.evaluation.explain import Explainer, shap_figures, shap_importance
from pdmflow.evaluation.findings import Findings
from pdmflow.evaluation.latency import serving_latency
from pdmflow.evaluation.lift import reference_comparison
from pdmflow.evaluation.maintenance import worst_devices
from pdmflow.evaluation.model_card import model_facts
from pdmflow.evaluation.report import assess_test_rows
from pdmflow.evaluation.robustness import robustness_findings
from pdmflow.evaluation.test_rows import PREDICTION, REFERENCE_PREDICTION, evaluated_rows
from pdmflow.features.builder import FeatureSpec
from pdmflow.models.families import DEFAULT_FAMILY
from pdmflow.models.onnx import onnx_predict, onnx_session
from pdmflow.models.threads import estimator_threads
from pdmflow.registry import production_version
from pdmflow.serving import SPEC_PATH, FailureScorer
from pdmflow.tracking import (
    downloaded,
    engine_facts,
    latest_step_run,
    log_engine,
    log_step_inputs,
    step_run,
)


def _load(
    model_uri: str, explain: bool = True
) -> tuple[onnx.ModelProto, FeatureSpec, Explainer | None]:
    """The model's ONNX graph, its feature spec and (with `explain`) its explainer, None for
    models logged before explainers were, from one download."""
    with downloaded(model_uri) as local:
        spec = FeatureSpec.from_json((local / SPEC_PATH).read_text())
        explainer = Explainer.load_from_model_dir(local) if explain else None
        return mlflow.onnx.load_model(str(local)), spec, explainer


def unseen_by_champion(
    champion_run_id: str, test: pd.DataFrame, spec: FeatureSpec
) -> tuple[np.ndarray, str]:
    """Test rows the champion never learned from (`unseen_rows`), read from its split."""
    features_uri = mlflow.get_run(champion_run_id).data.tags.get("pdmflow.features_uri")
    membership = read_split_membership(features_uri) if features_uri else None
    return unseen_rows(membership, test, spec.device_column, spec.time_column)


def _champion_findings(
    config: TenantConfig,
    test: pd.DataFrame,
    spec: FeatureSpec,
    data_uri: str,
    prediction: np.ndarray,
) -> Findings | None:
    """The candidate against the Production version on the rows it never learned from; None
    without a Production version."""
    champion = production_version(config.registered_model_name, config.registry.mode)
    if champion is None:
        return None
    champion_uri = f"models:/{config.registered_model_name}/{champion.version}"
    unseen, how = unseen_by_champion(champion.run_id, test, spec)

    def score_champion(rows: pd.DataFrame) -> np.ndarray:
        graph, champion_spec, _ = _load(champion_uri, explain=False)
        session = onnx_session(graph, threads=estimator_threads())
        return champion_prediction(
            lambda features: onnx_predict(session, features),
            champion_spec,
            rows,
            spec,
            lambda: read_dataset(data_uri, test[spec.device_column].unique(), spec.device_column),
            champion_uri,
        )

    return compare_with_champion(
        config,
        str(champion.version),
        test,
        label_column(config),
        spec.device_column,
        prediction,
        unseen,
        how,
        score_champion,
    )


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
    _, spec = read_features(features_uri, splits=())
    graph, model_spec, explainer = _load(model_uri)
    # The sample's tables on every core; the latency's bare-ONNX figure on one, as serving runs.
    session = onnx_session(graph, threads=estimator_threads())
    single_row_session = onnx_session(graph)
    metadata = get_model_info(model_uri).metadata or {}
    threshold = float(metadata["decision_threshold"]) if config.task == "classification" else None
    data_uri = data_uri_of(features_uri)
    device = spec.device_column
    label = label_column(config)
    reference = read_reference(train_run_id)
    stored = stored_locations(features_uri)

    with ExitStack() as stack:
        # Only the test split: every row scored (part by part from storage), and the checks
        # below on a sample of whole test devices, with only their readings read; all before
        # the run starts, so features that cannot be read leave no evaluate run.
        engine = stack.enter_context(open_engine(config)) if stored is not None else None
        rows = evaluated_rows(
            read_features(features_uri, splits=("test",))[0]["test"]
            if stored is None
            else stored["test"],
            graph,
            model_spec.feature_names,
            reference,
            [device, spec.time_column, label],
            config.evaluation.diagnostic_rows,
            config.evaluation.seed,
            in_this_process if engine is None else engine.map_tasks,
            estimator_threads() if engine is None or engine.kind == "local" else 1,
        )
        facts = None if engine is None else engine_facts(engine)
    scored, test, prediction = rows.scored, rows.sample, rows.sample_prediction
    telemetry, events = read_dataset(data_uri, test[device].unique(), device)

    with step_run(config, "evaluate") as run:
        if facts is not None:
            log_engine(facts)
        log_step_inputs(
            {
                "train_run_id": train_run_id,
                "model_uri": model_uri,
                "features_uri": features_uri,
                "family": metadata.get("family", DEFAULT_FAMILY),
            }
        )
        metrics, per_device, figures = assess_test_rows(
            config, scored, label, model_spec, scored[PREDICTION].to_numpy(), threshold, events
        )
        if reference is not None:
            metrics.update(
                reference_comparison(
                    config,
                    scored[label].to_numpy(),
                    scored[REFERENCE_PREDICTION].to_numpy(),
                    reference.decision_threshold,
                    metrics,
                ),
                reference_feature_count=len(reference.feature_names),
            )
        metrics.update(
            test_rows=len(scored),
            test_devices=int(scored[device].nunique()),
            diagnostic_rows=len(test),
            diagnostic_devices=int(test[device].nunique()),
            feature_count=len(model_spec.feature_names),
        )
        X_test = test[model_spec.feature_names]
        metrics.update(
            serving_latency(
                FailureScorer.load(model_uri),
                X_test.to_numpy(),
                telemetry,
                events if model_spec.time_since_failure else None,
                lambda row: onnx_predict(single_row_session, row),
                batch_devices=config.evaluation.latency_batch_devices,
            )
        )
        # Measured where both models exist (train); carried here for the gates and the card.
        metrics.update({k: v for k, v in train_run.data.metrics.items() if k in CARRIED_FROM_TRAIN})
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
            "model": model_facts(train_run.data.params, train_run.data.metrics, metadata),
            "worst_devices": worst_devices(per_device),
        }
        if explainer is not None:
            settings = config.evaluation
            explanation = explainer.explain(X_test, max_rows=settings.shap_rows, seed=settings.seed)
            mlflow.log_dict(shap_importance(explanation), "shap_importance.json")
            figures.update(shap_figures(explanation))
        if config.evaluation.robustness:
            robustness, table = robustness_findings(
                telemetry,
                events,
                model_spec,
                test,
                test[label].to_numpy(),
                lambda features: onnx_predict(session, features[model_spec.feature_names]),
                metric=CHAMPION_KEY[config.task],
                noise_levels=config.evaluation.noise_levels,
                seed=config.evaluation.seed,
            )
            metrics.update(robustness.metrics)
            mlflow.set_tags(robustness.tags)
            mlflow.log_table(table, "robustness.json")
            report["robustness"] = robustness.report
        champion = _champion_findings(config, test, spec, data_uri, prediction)
        if champion is not None:
            metrics.update(champion.metrics)
            mlflow.set_tags(champion.tags)
            figures.update(champion.figures)
        report["champion"] = None if champion is None else champion.report
        report["metrics"] = metrics
        # Linked to the candidate's LoggedModel too: its page in the UI shows the test metrics.
        model_id = logged_model_id(train_run)
        if model_id is not None:
            mlflow.log_input(model=LoggedModelInput(model_id))
        mlflow.log_metrics(metrics, model_id=model_id)
        _log_figures(figures)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "per_device_metrics.csv"
            per_device.to_csv(path, index=False)
            mlflow.log_artifact(str(path))
        mlflow.log_dict(report, "evaluation_report.json")
        mlflow.set_tag(MODEL_URI_TAG, model_uri)
        return run.info.run_id
