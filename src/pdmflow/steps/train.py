"""train: select features, fit the candidate on its folds, calibrate, choose the threshold,
export one ONNX graph, check parity with the native model, log the model."""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import pandas as pd

from pdmflow.artifacts import (
    MODEL_URI_TAG,
    REFERENCE_ARTIFACT,
    label_column,
    latest_input,
    read_features,
    stored_locations,
)
from pdmflow.config import TenantConfig
from pdmflow.engine import open_engine
from pdmflow.engine.base import Engine
from pdmflow.engine.storage import read_head
from pdmflow.errors import StepInputError
from pdmflow.evaluation.explain import Explainer, gain_importance_figure
from pdmflow.evaluation.plots import reliability_diagram
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.groups import features_of_groups
from pdmflow.features.selection import LearningSet, learning_set
from pdmflow.features.stored_learning import stored_learning_set, stored_refit
from pdmflow.models import families as model_families
from pdmflow.models.onnx import (
    SERVING_SESSION_OPTIONS,
    onnx_predict,
    onnx_session,
    serving_requirements,
    serving_signature,
)
from pdmflow.models.reference import REFERENCE_GROUPS, fit_reference, save_reference
from pdmflow.models.threads import estimator_threads
from pdmflow.models.training import Refit, fit_candidate, float32_columns, rows_refit
from pdmflow.steps.tune import read_best_params
from pdmflow.tracking import latest_step_run, log_engine, log_step_inputs, step_run

MODEL_NAME = "model"
# ONNX parity is checked on at most this many test rows of features in storage (all in memory).
PARITY_ROWS = 100_000


def _resolve_params(
    config: TenantConfig, tune_run_id: str
) -> tuple[str, dict[str, Any], str, dict[str, Any], list[str] | None]:
    """(family, params, where they came from, extra train params, feature groups or None for
    every group): a tune run, the latest one, or the config. A tune run's LightGBM parameters
    are released at the release learning rate it recorded, when that is slower than its
    trials' (the rounds ceiling scaled to match)."""

    def from_config() -> tuple[str, dict[str, Any], str, dict[str, Any], None]:
        family = config.training.family
        params = model_families.family(family).config_params(config.training)
        return family, params, "config", {}, None

    if tune_run_id == "none":
        return from_config()
    if tune_run_id == "latest":
        try:
            tune_run_id = latest_step_run(config, "tune").info.run_id
        except StepInputError:
            return from_config()
    try:
        best = read_best_params(tune_run_id)
    except Exception as exc:
        raise StepInputError(f"tune run {tune_run_id}: no best_params.json ({exc})") from None
    family, params, source = best["family"], best["params"], f"tune run {tune_run_id}"
    groups = best.get("feature_groups")  # a tune run without the group search: every group
    released, rate_params = model_families.family(family).released_params(
        params, best.get("release_learning_rate")
    )
    return family, released, source, rate_params, groups


def _learning(
    config: TenantConfig,
    features_uri: str,
    label: str,
    family: str,
    groups: list[str] | None,
    engine: Engine,
) -> tuple[FeatureSpec, LearningSet, FeatureSpec, pd.DataFrame, Refit | None]:
    """(the features' spec, the learning rows the folds fit (training.max_rows of them, or
    all), the model's spec, the test rows ONNX parity is checked on, the final fit when it
    reads other rows than the folds: every learning row in storage, or in memory where the
    folds fit a sample)."""
    stored = stored_locations(features_uri)
    max_rows = config.training.max_rows
    if stored is None:
        tables, spec = read_features(features_uri)
        test = tables["test"]
        every_row = learning_set(tables, spec, label, config)
        del tables  # the train and validation rows live on, concatenated, in every_row.rows
        sampled = every_row.sampled(max_rows, config.training.seed, config.task, label)
    else:
        _, spec = read_features(features_uri, splits=())
        reference_features = features_of_groups(spec, spec.feature_names, REFERENCE_GROUPS)
        sampled, where = stored_learning_set(
            stored, spec, label, config, engine.map_tasks, max_rows, reference_features
        )
        test = read_head(stored["test"], PARITY_ROWS)
    kept = sampled.selection.kept
    if groups is not None:  # the groups the best trial read
        kept = features_of_groups(spec, kept, groups)
    model_spec = spec.with_features(kept)
    names = model_spec.feature_names
    refit = None
    if stored is not None:
        sampled_rows = sampled.sample is not None and sampled.sample.how == "random"
        on_workers = engine.kind != "local" and model_families.family(family).fits_on_cluster
        # The anomaly feature is fitted in memory; with every learning row already here and
        # no worker to fit on, the rows in hand are the final fit's.
        if not config.features.anomaly_score and (sampled_rows or on_workers):
            refit = stored_refit(where, family, names, label, config, engine)
    elif sampled.rows is not every_row.rows:
        rows = every_row.rows
        X, y = float32_columns(rows, names), rows[label].to_numpy(float)
        refit = rows_refit(family, X, y, rows[spec.device_column], config, engine)
    if sampled.sample is not None and sampled.sample.how == "random":
        print(
            f"train: folds, calibration, threshold and the reference fit {len(sampled.rows):,} "
            f"random rows of {sampled.total_rows:,} (training.max_rows); the released model "
            "fits all of them",
            file=sys.stderr,
        )
    return spec, sampled, model_spec, test, refit


def run_train(
    config: TenantConfig, features_uri: str = "latest", tune_run_id: str = "latest"
) -> str:
    """Run the step; return the train run id (its tag pdmflow.model_uri names the model)."""
    features_uri = latest_input(config, "features", features_uri)
    family, params, params_source, rate_params, groups = _resolve_params(config, tune_run_id)
    label = label_column(config)

    with ExitStack() as stack:
        engine = stack.enter_context(open_engine(config))
        # Read before the run starts: features that cannot be read leave no train run.
        spec, learning, model_spec, test, refit = _learning(
            config, features_uri, label, family, groups, engine
        )
        run = stack.enter_context(step_run(config, "train"))
        log_engine(engine)
        selection, folds = learning.selection, learning.folds
        log_step_inputs(
            {
                "features_uri": features_uri,
                "params_source": params_source,
                "family": family,
                "cv_folds": config.split.cv_folds,
                "validation_source": (
                    f"out-of-fold ({len(folds)} folds)" if len(folds) > 1 else "validation split"
                ),
                "features_built": len(spec.feature_names),
                "anomaly_score_feature": config.features.anomaly_score,
                "feature_groups": ",".join(groups) if groups is not None else "all",
                **rate_params,
            }
        )
        mlflow.log_params(model_families.family(family).logged_params(params, config.training))
        mlflow.log_param("negative_sample_rate", config.training.negative_sample_rate or "off")
        mlflow.log_param("max_rows", config.training.max_rows or "all")
        candidate = fit_candidate(
            learning.rows,
            learning.train_rows,
            folds,
            model_spec.feature_names,
            label,
            config,
            family,
            params,
            engine=engine,
            refit=refit,
        )
        mlflow.log_param("training_engine", candidate.report["training_engine"])
        # The afternoon script's recipe on every feature it reads (no selection), same rows.
        reference = fit_reference(
            learning.rows,
            learning.train_rows,
            folds,
            features_of_groups(spec, spec.feature_names, REFERENCE_GROUPS),
            label,
            config,
        )
        onnx_model = candidate.to_onnx()
        # SHAP's explainer travels with the model (evaluate and serving rebuild it).
        explainer = Explainer.from_candidate(candidate)
        figure = gain_importance_figure(explainer)
        mlflow.log_figure(figure, "plots/gain_importance.png")
        plt.close(figure)
        session = onnx_session(onnx_model, threads=estimator_threads())
        X_test = test[model_spec.feature_names]
        parity = float(abs(onnx_predict(session, X_test) - candidate.predict(X_test)).max())

        report = candidate.report
        metrics: dict[str, float] = {f"validation_{k}": v for k, v in report["metrics"].items()}
        metrics.update(
            learning_rows=learning.total_rows,
            sampled_learning_rows=len(learning.rows),
            parity_rows=len(X_test),
            feature_count=len(model_spec.feature_names),
            features_dropped=len(selection.dropped),
            onnx_max_abs_difference=parity,
            out_of_fold_rows=report["out_of_fold_rows"],
            fitted_rows=report["fitted_rows"],
        )
        metrics.update(report["cv"])  # each fold's own score: mean and spread
        if candidate.trees is not None:
            metrics["trees"] = candidate.trees
        metadata: dict[str, object] = {
            "task": config.task,
            "tenant_id": config.tenant_id,
            "family": family,
            "feature_count": len(model_spec.feature_names),
            "anomaly_score_feature": candidate.anomaly is not None,
        }
        if config.task == "classification":
            metadata["decision_threshold"] = candidate.threshold
            metadata["calibration"] = config.training.calibration
            metrics.update(
                {f"validation_{k}_uncalibrated": v for k, v in report["uncalibrated"].items()}
            )
            # The threshold's rule and arguments are params; what it gives on validation, metrics.
            threshold = report["threshold"]
            if not threshold["threshold_constraint_met"]:
                print(
                    f"warning: training.threshold.rule {threshold['threshold_rule']}: "
                    f"{threshold['threshold_fallback']} on the out-of-fold rows; the F1 "
                    f"threshold {threshold['decision_threshold']:.3f} is used (precision "
                    f"{threshold['threshold_precision']:.3f}, recall "
                    f"{threshold['threshold_recall']:.3f})",
                    file=sys.stderr,
                )
            mlflow.log_param("calibration", config.training.calibration)
            mlflow.log_params({k: v for k, v in threshold.items() if isinstance(v, str | bool)})
            metrics.update(
                {
                    f"validation_{k}": float(v)
                    for k, v in threshold.items()
                    if k.startswith("threshold_") and not isinstance(v, str | bool)
                }
            )
            mlflow.log_dict(threshold, "threshold.json")
            if candidate.calibrator is not None:
                mlflow.log_dict(candidate.calibrator.to_dict(), "calibration.json")
            figure = reliability_diagram(
                report["oof_labels"], report["oof_uncalibrated"], report["oof_probability"]
            )
            mlflow.log_figure(figure, "plots/reliability_diagram.png")
            plt.close(figure)
        else:
            labels = config.labels
            metadata.update(
                critical_hours=labels.critical_hours, warning_hours=labels.warning_hours
            )
            mlflow.log_param("rul_objective", config.training.rul_objective)
        metrics.update(
            {f"reference_validation_{k}": v for k, v in reference.report["metrics"].items()}
        )
        metrics["reference_feature_count"] = len(reference.feature_names)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(selection.as_dict(), "feature_selection.json")

        example = X_test.head(5).to_numpy(dtype="float64")
        signature = serving_signature(len(model_spec.feature_names), config.task)
        with tempfile.TemporaryDirectory() as tmp:
            spec_path = Path(tmp) / "feature_spec.json"
            spec_path.write_text(model_spec.to_json())
            # MLflow keeps only each extra file's base name: extra_files/explainer_*.
            explainer_paths = explainer.save(Path(tmp) / "explainer")
            folder = save_reference(reference, Path(tmp) / REFERENCE_ARTIFACT)
            mlflow.log_artifacts(str(folder), REFERENCE_ARTIFACT)
            info = mlflow.onnx.log_model(
                onnx_model,
                name=MODEL_NAME,
                signature=signature,
                input_example=example,
                extra_files=[str(spec_path), *(str(path) for path in explainer_paths)],
                onnx_execution_providers=["CPUExecutionProvider"],
                onnx_session_options=SERVING_SESSION_OPTIONS,
                pip_requirements=serving_requirements(),
                metadata=metadata,
            )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        mlflow.set_tag("pdmflow.features_uri", features_uri)
        mlflow.set_tag("pdmflow.family", family)
        return run.info.run_id
