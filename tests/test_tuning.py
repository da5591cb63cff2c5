"""tune: Optuna over LightGBM, on one time split or on time-ordered CV folds."""

import mlflow
import pytest
from mlflow import MlflowClient

from pdmflow.config import load_config
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train
from pdmflow.steps.tune import read_best_params, run_tune

pytestmark = pytest.mark.cost(seconds=90)


@pytest.mark.parametrize("cv_folds", [0, 3])
def test_study_logs_trials_best_params_and_history(tracking_store, write_config, cv_folds):
    # No time limit in the way of 6 trials (smoke's 60 s can cut them short on a busy machine).
    overrides = {"split": {"cv_folds": cv_folds}, "tuning": {"timeout_seconds": 900}}
    config = load_config(write_config(overrides))
    features_uri = run_features(config, run_ingest(config))
    tune_run_id = run_tune(config, features_uri, n_trials=6)
    tune_run = mlflow.get_run(tune_run_id)
    trials = MlflowClient().search_runs(
        [tune_run.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_run_id}'"
    )
    assert len(trials) == 6
    states = {t.data.tags["optuna.trial_state"] for t in trials}
    assert states <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
    complete = [t for t in trials if t.data.tags["optuna.trial_state"] == "COMPLETE"]
    # Each trial's time, split into fitting and MLflow logging; their share on the tune run.
    assert all({"fit_seconds", "log_seconds"} <= set(t.data.metrics) for t in trials)
    assert 0 < tune_run.data.metrics["trial_log_share"] < 1
    # The default objective for rare failures: average precision.
    assert tune_run.data.params["objective"] == "maximize validation_average_precision"
    best = max(t.data.metrics["validation_average_precision"] for t in complete)
    assert tune_run.data.metrics["best_validation_average_precision"] == pytest.approx(best)
    assert tune_run.data.params["cv_folds"] == str(cv_folds)
    if cv_folds:
        assert "best_cv_std" in tune_run.data.metrics
        assert all("cv_validation_average_precision_std" in t.data.metrics for t in complete)
    artifacts = {a.path for a in MlflowClient().list_artifacts(tune_run_id)}
    assert {"best_params.json", "optimization_history.png"} <= artifacts
    # train takes exactly these parameters
    params = read_best_params(tune_run_id)
    train_run = mlflow.get_run(run_train(config, features_uri, tune_run_id))
    assert params["family"] == "lightgbm" == train_run.data.params["family"]
    assert train_run.data.params["lgbm_num_leaves"] == str(params["params"]["num_leaves"])
    # Every trial boosts at tuning.learning_rate; the study searched the rest. train releases
    # at tuning.release_learning_rate with 4 times the rounds ceiling.
    assert all("learning_rate" not in t.data.params for t in trials)
    assert params["params"]["learning_rate"] == config.tuning.learning_rate == 0.1
    assert train_run.data.params["lgbm_learning_rate"] == "0.025"
    ceiling = int(train_run.data.params["lgbm_n_estimators"])
    assert ceiling == 4 * params["params"]["n_estimators"]
    assert train_run.data.params["params_source"] == f"tune run {tune_run_id}"
    assert train_run.data.params["tuned_learning_rate"] == "0.1"


def test_optuna_chooses_among_families_and_train_follows(tracking_store, write_config):
    families = ["lightgbm", "random_forest"]
    # learning_rate null: the rate is searched with the rest.
    tuning = {"families": families, "timeout_seconds": 900, "learning_rate": None}
    config = load_config(write_config({"tuning": tuning}))
    features_uri = run_features(config, run_ingest(config))
    tune_run_id = run_tune(config, features_uri, n_trials=3)
    trials = MlflowClient().search_runs(
        [mlflow.get_run(tune_run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{tune_run_id}'",
    )
    assert len(trials) == 3
    assert {t.data.params["family"] for t in trials} <= set(families)
    # Each family's own search space: LightGBM's leaves, the forest's leaf size.
    for trial in trials:
        lightgbm = trial.data.params["family"] == "lightgbm"
        own = {"num_leaves", "learning_rate"} if lightgbm else {"rf_min_samples_leaf"}
        assert own <= set(trial.data.params)
    best = read_best_params(tune_run_id)
    assert mlflow.get_run(tune_run_id).data.params["best_family"] == best["family"]
    train_run = mlflow.get_run(run_train(config, features_uri, tune_run_id))
    assert train_run.data.params["family"] == best["family"]
    assert train_run.data.tags["pdmflow.family"] == best["family"]


def two_fold_learning_rows(write_config):
    """The smoke fleet's learning rows on 2 CV folds: (config, learning set, X, y, the folds'
    prebuilt LightGBM datasets), as tune's objective gets them."""
    from pdmflow.artifacts import LABELS
    from pdmflow.data.sources import read_source
    from pdmflow.data.validation import validate
    from pdmflow.features.selection import learning_set
    from pdmflow.features.split import label_and_split
    from pdmflow.models import lightgbm

    config = load_config(write_config({"split": {"cv_folds": 2}}))
    telemetry, events, _ = validate(*read_source(config), config, "test")
    label = LABELS["classification"]
    tables, spec, _, _ = label_and_split(telemetry, events, config, label)
    learning = learning_set(tables, spec, label, config)
    X, y = learning.rows[learning.selection.kept], learning.rows[label].to_numpy(float)
    datasets = lightgbm.fold_data(
        config.task, X, y, learning.folds, config.training.seed, config.training.max_bin
    )
    return config, learning, X, y, datasets


def test_trials_on_reused_fold_datasets_find_the_same_best_trial(write_config):
    """LightGBM's bins built once per fold (what tune's objective does) give every trial the
    model that binning its rows again gives: a seeded study picks the same best trial."""
    import numpy as np
    import optuna
    from sklearn.metrics import roc_auc_score

    from pdmflow.models.training import fold_predictions
    from pdmflow.models.tuning import search_space

    config, learning, X, y, datasets = two_fold_learning_rows(write_config)

    def score(truth, predicted):
        return float(roc_auc_score(truth.astype(int), predicted))

    def study(reuse: bool) -> tuple[optuna.Study, list[np.ndarray]]:
        predictions = []

        def objective(trial):
            params = search_space(trial, "lightgbm", config.tuning.learning_rate)
            params = {**params, "n_estimators": 60, "n_jobs": 1}
            result = fold_predictions(
                "lightgbm",
                config.task,
                X,
                y,
                learning.folds,
                params,
                config,
                score,
                datasets=datasets if reuse else None,
            )
            predictions.append(result.predictions)
            return float(np.mean(result.scores))

        seeded = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=3)
        )
        seeded.optimize(objective, n_trials=4)
        return seeded, predictions

    rebinned, rebinned_predictions = study(reuse=False)
    reused, reused_predictions = study(reuse=True)
    assert reused.best_trial.number == rebinned.best_trial.number
    assert reused.best_params == rebinned.best_params
    assert reused.best_value == rebinned.best_value
    for a, b in zip(rebinned_predictions, reused_predictions, strict=True):
        np.testing.assert_array_equal(a, b)


def test_trials_fit_a_random_sample_of_at_most_tuning_max_rows(tracking_store, write_config):
    """tuning.max_rows rows for the trials, with tuning.early_stopping_rounds of patience;
    `null` tunes on every row with training's patience."""
    tuning = {"max_rows": 3000, "timeout_seconds": 900, "early_stopping_rounds": 4}
    config = load_config(write_config({"split": {"cv_folds": 2}, "tuning": tuning}))
    features_uri = run_features(config, run_ingest(config))
    tune_run_id = run_tune(config, features_uri, n_trials=3)
    params = mlflow.get_run(tune_run_id).data.params
    assert params["tuning_sample"] == "random" and params["max_rows"] == "3000"
    assert int(params["tuning_rows"]) == 3000 < int(params["learning_rows"])
    assert params["early_stopping_rounds"] == "4"

    def rounds_past_best(run_id):
        trials = MlflowClient().search_runs(
            [mlflow.get_run(run_id).info.experiment_id],
            f"tags.mlflow.parentRunId = '{run_id}' and tags.optuna.trial_state = 'COMPLETE'",
        )
        assert trials
        return {t.data.metrics["rounds_boosted"] - t.data.metrics["rounds_kept"] for t in trials}

    # Each of the 2 folds boosted 4 rounds past its best (none reached the rounds ceiling).
    assert rounds_past_best(tune_run_id) == {8}
    tuning = {"max_rows": None, "timeout_seconds": 900, "early_stopping_rounds": None}
    config = load_config(write_config({"split": {"cv_folds": 2}, "tuning": tuning}))
    tune_run_id = run_tune(config, features_uri, n_trials=2)
    params = mlflow.get_run(tune_run_id).data.params
    assert params["tuning_sample"] == "all" and params["tuning_rows"] == params["learning_rows"]
    assert rounds_past_best(tune_run_id) == {2 * config.training.early_stopping_rounds}


def test_trials_stop_after_tuning_early_stopping_rounds(write_config):
    """A trial's folds stop `tuning.early_stopping_rounds` rounds after their best one, on the
    prebuilt bins as on the rows; null keeps training.early_stopping_rounds."""
    from pdmflow.models.training import fold_predictions

    config, learning, X, y, datasets = two_fold_learning_rows(write_config)
    params = {"n_estimators": 3000, "learning_rate": 0.3, "num_leaves": 31, "n_jobs": 1}

    def rounds_past_best(patience, reuse):
        rounds: list[int] = []

        def count(env):
            if env.iteration == env.begin_iteration:
                rounds.append(0)
            rounds[-1] += 1

        result = fold_predictions(
            "lightgbm", config.task, X, y, learning.folds, params, config,
            lambda truth, predicted: 0.0, callbacks=[count],
            datasets=datasets if reuse else None, early_stopping_rounds=patience,
        )  # fmt: skip
        assert all(r < params["n_estimators"] for r in rounds)  # every fold stopped early
        return [r - best for r, best in zip(rounds, result.best_iterations, strict=True)]

    for reuse in (True, False):
        assert rounds_past_best(4, reuse) == [4, 4]
        assert rounds_past_best(None, reuse) == [config.training.early_stopping_rounds] * 2


def test_trials_bin_features_into_tuning_max_bin_and_the_release_into_training_max_bin(
    write_config,
):
    """The objective's fold datasets hold tuning.max_bin bins per feature (the study plan
    carries it to every worker); the released model's fits use training.max_bin."""
    from dataclasses import asdict
    from types import SimpleNamespace

    import optuna

    from pdmflow.models import tuning
    from pdmflow.models.training import fit_family

    config, learning, X, y, _ = two_fold_learning_rows(write_config)
    config = config.model_copy(
        update={
            "tuning": config.tuning.model_copy(update={"max_bin": 8}),
            "training": config.training.model_copy(update={"max_bin": 16}),
        }
    )
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", experiment_id="0"))
    plan = tuning.StudyPlan.for_tune_run(run, "runs:/r/features", 2, config, workers=1)
    assert plan.max_bin == 8
    storage = optuna.storages.InMemoryStorage()
    tuning.create_study("bins", storage, plan)
    # A worker joining with another config bins as the study's plan says.
    other = config.model_copy(update={"tuning": config.tuning.model_copy(update={"max_bin": 32})})
    joined = tuning.read_plan("bins", storage, other)
    assert joined.max_bin == 8
    worker = tuning.join_study("bins", storage, joined)
    data = tuning.TuningData(X, y, learning.folds)
    objective = tuning.Objective(worker, data, config, trial_log=None)
    assert len(objective.datasets) == 2
    for fold in objective.datasets:
        bins = [fold.fit.feature_num_bin(i) for i in range(X.shape[1])]
        assert max(bins) <= 8 and max(bins) > 2

    released = fit_family("lightgbm", config.task, X, y, {"n_estimators": 5}, config)
    assert released.booster_.params["max_bin"] == 16
    # A study created before the trials' bins were planned binned as LightGBM does (255).
    older = optuna.create_study(study_name="older", storage=storage)
    for key, value in asdict(plan).items():
        if key != "max_bin":
            older.set_user_attr(key, value)
    assert tuning.read_plan("older", storage, other).max_bin == 255
    # With tuning.max_bin null the trials bin as the release does.
    unset = config.model_copy(update={"tuning": config.tuning.model_copy(update={"max_bin": None})})
    assert tuning.trial_bins(unset) == 16
