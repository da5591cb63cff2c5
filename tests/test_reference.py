"""The reference model beside every candidate: its recipe in feature groups, the tune trials it
seeds, train and evaluate logging it, the tuning objective, and the meet_gates threshold rule."""

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pdmflow.artifacts import read_reference
from pdmflow.config import TenantConfig, load_config
from pdmflow.evaluation.thresholds import describe_threshold
from pdmflow.features.builder import FeatureSpec
from pdmflow.features.groups import GROUPS, feature_groups, features_of_groups
from pdmflow.models.reference import REFERENCE_GROUPS, REFERENCE_TRIAL
from pdmflow.models.training import threshold_precision_floor, threshold_rule
from pdmflow.models.tuning import objective_of
from pdmflow.steps.evaluate import run_evaluate
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import read_best_params, run_tune

pytestmark = pytest.mark.cost(seconds=70)


def test_feature_groups_cover_the_spec_and_the_reference_is_the_plain_recipe(write_config):
    spec = FeatureSpec.from_config(load_config(write_config()))
    groups = feature_groups(spec)
    assert list(groups) == [g for g in GROUPS if g in groups]  # in GROUPS order
    # Every feature in exactly one group.
    grouped = [name for names in groups.values() for name in names]
    assert sorted(grouped) == sorted(spec.feature_names)
    # smoke: windows 3h (short) and 6h (long); four continuous sensors, one boolean.
    assert groups["raw"] == ["temperature", "vibration", "pressure", "current", "alarm_active"]
    assert groups["rolling_short"][:2] == ["temperature_roll_3h_mean", "temperature_roll_3h_std"]
    assert "temperature_roll_6h_std" in groups["rolling_long"]
    assert "temperature_roll_3h_kurt" in groups["rolling_shape"]
    assert groups["differences"] == [f"{s}_diff_1" for s in spec.continuous_sensors]
    assert "temperature_pct_change" in groups["higher_differences"]
    assert groups["time_since_event"] == ["hours_since_failure"]
    reference = features_of_groups(spec, spec.feature_names, REFERENCE_GROUPS)
    expected = {*groups["raw"], *groups["differences"]}
    expected |= {f"{s}_roll_{w}_{m}" for s in spec.continuous_sensors for w in ("3h", "6h")
                 for m in ("mean", "std")}  # fmt: skip
    assert set(reference) == expected
    # Raw values are read whatever the trial chose.
    lags = features_of_groups(spec, spec.feature_names, ["lags"])
    assert set(lags) == {*groups["raw"], *groups["lags"]}


def test_meet_gates_threshold_aims_at_the_precision_gate_with_a_margin(write_config):
    config = load_config(write_config({}))  # the default rule
    assert config.training.threshold.rule == "meet_gates"
    floor = threshold_precision_floor(config)
    assert floor == pytest.approx(0.75 + 0.10)
    # With no precision gate there is nothing to aim at: the F1 rule.
    no_gate = load_config(write_config({"gates": {"min_precision": 0.0}}, name="no-gate.yaml"))
    assert threshold_rule(no_gate) == "f1" and threshold_precision_floor(no_gate) is None
    y = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0])
    p = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.4, 0.3])
    chosen = describe_threshold(y, p, "meet_gates", precision=0.8, recall=0.7)
    # Precision >= 0.8 at 0.95..0.85 (1.0), 0.75 (0.8), 0.7 (0.833): the most recall is 0.7.
    assert chosen["decision_threshold"] == 0.7 and chosen["threshold_constraint_met"] is True
    assert chosen["threshold_precision"] == pytest.approx(5 / 6)
    # Precision 0.99 only at the top score: recall 1/6, under half the recall gate 0.7, so
    # the gates are out of reach: the F1 threshold instead, said so. Half of 0.3 is in reach.
    top = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0])
    out_of_reach = describe_threshold(top, p, "meet_gates", precision=0.99, recall=0.7)
    assert out_of_reach["threshold_rule_applied"] == "f1"
    assert out_of_reach["threshold_constraint_met"] is False
    assert out_of_reach["threshold_fallback"] == (
        "at precision 0.990 the recall is 0.167, under half of the recall gate 0.700"
    )
    assert (
        out_of_reach["decision_threshold"] == describe_threshold(top, p, "f1")["decision_threshold"]
    )
    in_reach = describe_threshold(top, p, "meet_gates", precision=0.99, recall=0.3)
    assert in_reach["decision_threshold"] == 0.95 and in_reach["threshold_constraint_met"] is True
    assert "threshold_fallback" not in in_reach
    # No threshold reaches precision 0.999 beyond... here every top score is a failure, so a
    # floor no ranking meets needs a worse one: the F1 threshold, said so.
    noisy = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    scores = np.linspace(0.9, 0.1, 10)
    fallback = describe_threshold(noisy, scores, "meet_gates", precision=0.9)
    assert fallback["threshold_constraint_met"] is False
    assert fallback["threshold_rule_applied"] == "f1"
    assert fallback["threshold_fallback"] == "no threshold reaches precision 0.900"
    # The rule is a classifier's: a regression tenant ignores it, also once its config is
    # written out in full (tune-worker processes and the quality bench read it back that way).
    rul = load_config(write_config({"task": "regression", "evaluation": {"robustness": False}}))
    again = TenantConfig.model_validate(rul.model_dump(mode="json", by_alias=True))
    assert (again.task, again.training.threshold.rule) == ("regression", "meet_gates")


@pytest.mark.parametrize(
    ("objective", "direction"),
    [(None, "maximize"), ("auc", "maximize"), ("log_loss", "minimize")],
)
def test_tuning_objective_sets_metric_and_direction(write_config, objective, direction):
    config = load_config(write_config({"tuning": {"objective": objective}}))
    metric, found = objective_of(config)
    assert metric == f"validation_{objective or 'average_precision'}" and found == direction
    rul = load_config(write_config({"task": "regression", "evaluation": {"robustness": False}}))
    assert objective_of(rul) == ("validation_mae", "minimize")


@pytest.fixture(scope="module")
def tuned_and_trained(tmp_path_factory):
    """The smoke fleet through ingest, features, tune (4 trials, 2 CV folds, log loss),
    train and evaluate, in one SQLite store."""
    import os

    import yaml
    from conftest import SMOKE, deep_merge, forget_experiment

    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    previous = os.getcwd()
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    data = deep_merge(
        yaml.safe_load(SMOKE.read_text()),
        {
            "split": {"cv_folds": 2},
            "tuning": {"timeout_seconds": 900, "objective": "log_loss"},
        },
    )
    path = tmp / "tenant.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    try:
        features_uri = run_features(config, run_ingest(config))
        tune_run_id = run_tune(config, features_uri, n_trials=4)
        train_run_id = run_train(config, features_uri, tune_run_id)
        evaluate_run_id = run_evaluate(config, train_run_id)
        yield config, tune_run_id, train_run_id, evaluate_run_id
    finally:
        os.chdir(previous)
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        forget_experiment()


def test_tune_runs_the_reference_and_every_group_first(tuned_and_trained):
    _, tune_run_id, _, _ = tuned_and_trained
    tune = mlflow.get_run(tune_run_id)
    assert tune.data.params["objective"] == "minimize validation_log_loss"
    trials = MlflowClient().search_runs(
        [tune.info.experiment_id],
        f"tags.mlflow.parentRunId = '{tune_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    by_number = {int(t.data.tags["optuna.trial_number"]): t for t in trials}
    searched = tune.data.params["feature_groups_searched"].split(",")
    assert "raw" in searched and "rolling_short" in searched
    reference, every = by_number[0].data.params, by_number[1].data.params
    for name, value in REFERENCE_TRIAL.items():
        assert float(reference[name]) == pytest.approx(value)
    for group in searched:
        if group == "raw":
            continue  # always read, never searched
        assert reference[f"group_{group}"] == str(group in REFERENCE_GROUPS)
        assert every[f"group_{group}"] == "True"
    # So the study's best is never behind the reference on the objective (lower is better).
    complete = [t for t in trials if t.data.tags["optuna.trial_state"] == "COMPLETE"]
    best = tune.data.metrics["best_validation_log_loss"]
    assert best == pytest.approx(min(t.data.metrics["validation_log_loss"] for t in complete))
    assert best <= by_number[0].data.metrics["validation_log_loss"]
    # train reads the best trial's groups.
    chosen = read_best_params(tune_run_id)["feature_groups"]
    assert "raw" in chosen and set(chosen) <= set(searched)


def test_train_fits_the_reference_and_evaluate_scores_it(tuned_and_trained):
    config, tune_run_id, train_run_id, evaluate_run_id = tuned_and_trained
    train = mlflow.get_run(train_run_id)
    assert train.data.params["feature_groups"] == ",".join(
        read_best_params(tune_run_id)["feature_groups"]
    )
    reference = read_reference(train_run_id)
    assert reference is not None and 0 < reference.decision_threshold < 1
    spec = FeatureSpec.from_config(config)
    assert reference.feature_names == features_of_groups(spec, spec.feature_names, REFERENCE_GROUPS)
    assert train.data.metrics["reference_feature_count"] == len(reference.feature_names)
    assert 0.5 < train.data.metrics["reference_validation_auc"] <= 1
    facts = json.loads(mlflow.artifacts.load_text(f"runs:/{train_run_id}/reference/reference.json"))
    assert facts["params"]["learning_rate"] == 0.1 and facts["calibration"] == "sigmoid"

    metrics = mlflow.get_run(evaluate_run_id).data.metrics
    for name in ("auc", "average_precision", "f1", "precision", "recall", "brier_score", "ece"):
        assert 0 <= metrics[f"reference_{name}"] <= 1
        lift = metrics[name] - metrics[f"reference_{name}"]
        assert metrics[f"lift_{name}"] == pytest.approx(lift, abs=1e-12)
    # The reference's own scores on the test rows, as evaluate computed them.
    from pdmflow.artifacts import label_column, read_features
    from pdmflow.evaluation.metrics import classification_metrics

    tables, _ = read_features(train.data.tags["pdmflow.features_uri"])
    test = tables["test"]
    scores = classification_metrics(
        test[label_column(config)].to_numpy().astype(int),
        reference.predict(test, threads=1),
        reference.decision_threshold,
    )
    assert metrics["reference_average_precision"] == pytest.approx(
        scores["average_precision"], abs=1e-9
    )
    assert metrics["reference_f1"] == pytest.approx(scores["f1"], abs=1e-9)


def test_a_fixed_decision_threshold_trains_and_says_what_it_gives(tuned_and_trained):
    config, _, train_run_id, _ = tuned_and_trained
    training = config.training.model_copy(update={"decision_threshold": 0.4})
    fixed = config.model_copy(update={"training": training})
    features_uri = mlflow.get_run(train_run_id).data.tags["pdmflow.features_uri"]
    run = mlflow.get_run(run_train(fixed, features_uri, "none"))
    params, metrics = run.data.params, run.data.metrics
    assert params["threshold_rule"] == params["threshold_rule_applied"] == "fixed"
    assert metrics["validation_decision_threshold"] == 0.4
    # What 0.4 gives on the out-of-fold rows, as the evaluation's own metric computes it.
    assert 0 < metrics["validation_threshold_recall"] <= 1
    assert 0 < metrics["validation_threshold_precision"] <= 1
