"""Gate profiles, gates by metric name, the bootstrap champion gates, and the model card."""

import pytest
from conftest import SMOKE

from pdmflow.config import load_config
from pdmflow.errors import ConfigError
from pdmflow.evaluation import model_card
from pdmflow.evaluation.gates import check_gates

# A candidate that passes the standard gates but is poorly calibrated (ECE 0.14).
PASSING = {
    "auc": 0.93,
    "precision": 0.81,
    "recall": 0.77,
    "precision_at_0_7": 0.86,
    "ece": 0.14,
    "cv_auc_std": 0.02,
    "latency_device_p99_ms": 3.0,
    "onnx_max_abs_difference": 1e-7,
    "robustness_worst_auc_drop": 0.19,
    "robustness_noise_10pct_auc_drop": 0.01,
    # One sensor carries a failure mode: freezing it costs AUC, as it must.
    "robustness_dead_sensor_auc_drop": 0.19,
    "lift_average_precision": 0.03,
    "lift_rmse": -1.5,
    "lead_time_median_hours": 9.0,
    "false_alarms_per_device_day": 0.2,
}


def gates_of(write_config, gates, **overrides):
    return load_config(write_config({"gates": gates, **overrides})).gates


def verdicts(results):
    return {r.name: r.passed for r in results}


def test_strict_profile_rejects_a_candidate_the_standard_profile_passes(write_config):
    standard = check_gates("classification", PASSING, gates_of(write_config, {}), False)
    assert all(r.passed for r in standard)
    strict_gates = gates_of(write_config, {"profile": "strict"}, split={"cv_folds": 3})
    strict = verdicts(check_gates("classification", PASSING, strict_gates, False))
    assert strict["strict.ece"] is False
    assert (
        strict["strict.auc"] and strict["strict.precision_at_0_7"] and strict["strict.cv_auc_std"]
    )
    calibrated = {**PASSING, "ece": 0.03}
    assert all(verdicts(check_gates("classification", calibrated, strict_gates, False)).values())
    # ECE < 0.10 is strict: exactly 0.10 fails.
    at_bound = verdicts(
        check_gates("classification", {**PASSING, "ece": 0.10}, strict_gates, False)
    )
    assert at_bound["strict.ece"] is False


def test_strict_profile_needs_folds_and_a_classifier(write_config):
    with pytest.raises(ConfigError, match="gates.profile strict .* split.cv_folds to 2 or more"):
        load_config(write_config({"gates": {"profile": "strict"}, "split": {"cv_folds": 0}}))


def test_any_logged_metric_can_be_gated_by_name(write_config):
    gates = gates_of(
        write_config,
        {"require": {"lead_time_median_hours": ">= 6", "false_alarms_per_device_day": "<= 0.05"}},
    )
    results = verdicts(check_gates("classification", PASSING, gates, False))
    assert results["require.lead_time_median_hours"] is True
    assert results["require.false_alarms_per_device_day"] is False


def test_an_unknown_metric_in_require_is_a_one_line_config_error(write_config):
    path = write_config({"gates": {"require": {"lead_time_median_hour": ">= 6"}}})
    with pytest.raises(
        ConfigError,
        match="gates.require.lead_time_median_hour: no evaluate .*did you mean "
        "lead_time_median_hours",
    ) as e:
        load_config(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(ConfigError, match=r"gates.require.auc: expected a comparison"):
        load_config(write_config({"gates": {"require": {"auc": "at least 0.9"}}}))


def test_require_refuses_metrics_this_config_never_logs(write_config):
    with pytest.raises(ConfigError, match="gates.require.cv_auc_std: no evaluate metric"):
        load_config(write_config({"gates": {"require": {"cv_auc_std": "< 0.05"}}}))  # 0 folds
    with pytest.raises(ConfigError, match="gates.require.champion_auc: the champion comparison"):
        load_config(write_config({"gates": {"require": {"champion_auc": ">= 0.9"}}}))
    folds = {"split": {"cv_folds": 3}}
    assert load_config(write_config({"gates": {"require": {"cv_auc_std": "< 0.05"}}, **folds}))


def test_a_rul_tenant_turns_robustness_off_without_touching_the_auc_gate(write_config):
    config = load_config(write_config({"task": "regression", "evaluation": {"robustness": False}}))
    assert config.gates.max_noise_auc_drop == 0.05  # a classification gate, unused here


@pytest.mark.parametrize(
    "key", ["max_noise_auc_drop", "max_dead_sensor_auc_drop", "max_robustness_auc_drop"]
)
def test_robustness_gates_need_robustness_measured(write_config, key):
    with pytest.raises(ConfigError, match=f"{key} needs evaluation.robustness"):
        gates = {"max_noise_auc_drop": None, key: 0.05}  # only this one gated
        load_config(write_config({"evaluation": {"robustness": False}, "gates": gates}))


def test_the_noise_gate_needs_ten_percent_noise_measured(write_config):
    with pytest.raises(ConfigError, match="add 0.1 to evaluation.noise_levels"):
        load_config(write_config({"evaluation": {"noise_levels": [0.05]}}))


def test_by_default_noise_is_gated_and_a_dead_sensor_only_reported(write_config):
    gates = gates_of(write_config, {})
    assert gates.max_dead_sensor_auc_drop is None and gates.max_robustness_auc_drop is None
    results = {r.name: r for r in check_gates("classification", PASSING, gates, False)}
    assert results["robustness_noise_10pct_auc_drop"].passed
    assert "robustness_dead_sensor_auc_drop" not in results
    noisy = check_gates(
        "classification", {**PASSING, "robustness_noise_10pct_auc_drop": 0.06}, gates, False
    )
    assert verdicts(noisy)["robustness_noise_10pct_auc_drop"] is False
    opted_in = gates_of(write_config, {"max_dead_sensor_auc_drop": 0.05})
    dead = verdicts(check_gates("classification", PASSING, opted_in, False))
    assert dead["robustness_dead_sensor_auc_drop"] is False


def test_lift_over_reference_gate_by_metric_direction(write_config):
    ahead = gates_of(write_config, {"min_lift_over_reference": {"metric": "average_precision"}})
    assert verdicts(check_gates("classification", PASSING, ahead, False))["lift_average_precision"]
    margin = gates_of(
        write_config, {"min_lift_over_reference": {"metric": "average_precision", "margin": 0.05}}
    )
    assert not verdicts(check_gates("classification", PASSING, margin, False))[
        "lift_average_precision"
    ]
    # RMSE: lower is better, so the candidate must be below the reference by the margin.
    rul = {"task": "regression", "evaluation": {"robustness": False}}
    lower = gates_of(
        write_config, {"min_lift_over_reference": {"metric": "rmse", "margin": 1}}, **rul
    )
    assert verdicts(check_gates("regression", PASSING, lower, False))["lift_rmse"]
    stricter = gates_of(
        write_config, {"min_lift_over_reference": {"metric": "rmse", "margin": 2}}, **rul
    )
    assert not verdicts(check_gates("regression", PASSING, stricter, False))["lift_rmse"]
    # Not measured (a train run from before references): fails, as every missing metric does.
    missing = {k: v for k, v in PASSING.items() if k != "lift_average_precision"}
    assert not verdicts(check_gates("classification", missing, ahead, False))[
        "lift_average_precision"
    ]


def test_lift_metric_and_tuning_objective_must_fit_the_task(write_config):
    with pytest.raises(ConfigError, match="min_lift_over_reference.metric: 'mae' is not"):
        load_config(write_config({"gates": {"min_lift_over_reference": {"metric": "mae"}}}))
    with pytest.raises(ConfigError, match="tuning.objective: 'rmse' is not an objective"):
        load_config(write_config({"tuning": {"objective": "rmse"}}))
    assert load_config(write_config({"tuning": {"objective": "log_loss"}})).tuning.objective


def test_champion_gate_reads_the_bootstrap_interval(write_config):
    gates = gates_of(
        write_config, {"max_auc_regression": 0.01, "require_better_than_champion": True}
    )
    compared = {**PASSING, "champion_comparison_rows": 500}
    noise = {"champion_auc_difference_low": -0.005, "champion_auc_difference_high": 0.02}
    results = verdicts(check_gates("classification", {**compared, **noise}, gates, True))
    assert results["not_worse_than_champion"] and not results["require_better_than_champion"]
    worse = {"champion_auc_difference_low": -0.03, "champion_auc_difference_high": -0.02}
    results = verdicts(check_gates("classification", {**compared, **worse}, gates, True))
    assert not results["not_worse_than_champion"]
    # An equal retrain (interval around 0) passes the default margin of 0.01.
    default = gates_of(write_config, {})
    assert default.max_auc_regression == 0.01
    assert verdicts(check_gates("classification", {**compared, **noise}, default, True))[
        "not_worse_than_champion"
    ]
    # No fair row to compare on: not worse passes, better cannot be shown and fails.
    unfair = {**PASSING, "champion_comparison_rows": 0}
    results = verdicts(check_gates("classification", unfair, gates, True))
    assert results["not_worse_than_champion"] and not results["require_better_than_champion"]
    better = {"champion_auc_difference_low": 0.01, "champion_auc_difference_high": 0.03}
    assert all(
        verdicts(check_gates("classification", {**compared, **better}, gates, True)).values()
    )
    # A champion that could not be scored: no interval, the gate fails closed.
    assert not verdicts(check_gates("classification", compared, gates, True))[
        "not_worse_than_champion"
    ]
    # Regression: the MAE difference's upper bound must stay under the allowed increase.
    rul = {"mae": 10.0, "latency_device_p99_ms": 1, "onnx_max_abs_difference": 0.0}
    rul_gates = load_config(write_config({"gates": {"max_mae_regression_hours": 0.5}})).gates
    for high, expected in ((0.4, True), (0.6, False)):
        metrics = {
            **rul,
            "champion_comparison_rows": 9,
            "champion_mae_difference_low": -1.0,
            "champion_mae_difference_high": high,
        }
        assert (
            verdicts(check_gates("regression", metrics, rul_gates, True))["not_worse_than_champion"]
            is expected
        )


def card_facts(released, gates):
    return model_card.CardFacts(
        model_name="m",
        task="classification",
        released=released,
        gates=gates,
        metrics=PASSING,
        data={
            "source": "synthetic fleet",
            "digest": "abc123",
            "time_start": "2026-01-01",
            "time_end": "2026-01-31",
            "rows": 1000,
            "devices": 10,
            "failures": 4,
            "label": "fails within 24 h",
        },
        split={
            "split_by": "time",
            "splits": {"test": {"rows": 200, "devices": 10}},
            "warnings": [],
        },
        features={
            "built": 50,
            "kept": 40,
            "families": {"lag": 10, "rolling statistic": 30},
            "history": "12h",
            "min_readings": 16,
        },
        model={"family": "lightgbm", "params": {"num_leaves": 31}, "threshold": 0.4},
        champion="AUC 0.010 higher than Production version 1 (95 % interval ...)",
        robustness=[
            {"perturbation": "none", "value": 0.93, "change": 0.0},
            {"perturbation": "frozen:vibration", "value": 0.90, "change": 0.03},
        ],
        worst_devices=[{"device": "d7", "recall": 0.2}],
        runs={"train": "r1"},
        version="2",
    )


@pytest.mark.parametrize("released", [True, False])
def test_model_card_holds_every_section(write_config, released):
    config = load_config(write_config({"gates": {"profile": "strict"}, "split": {"cv_folds": 3}}))
    metrics = PASSING if not released else {**PASSING, "ece": 0.03}
    gates = check_gates("classification", metrics, config.gates, False)
    assert all(r.passed for r in gates) is released
    card = model_card.render(card_facts(released, gates))
    for heading in (
        "# m version 2",
        "## Data",
        "## Features and model",
        "## Test metrics",
        "## Gates",
        "## Robustness",
        "## Worst devices",
        "## Known limitations",
        "Champion comparison: AUC 0.010 higher",
        "abc123",
        "2026-01-01 00:00 .. 2026-01-31 00:00",
        "lag 10, rolling statistic 30",
        "Most sensitive to frozen:vibration",
    ):
        assert heading in card
    assert ("**Released**" in card) is released
    assert ("**Not released**: failed strict.ece" in card) is not released


def test_a_long_card_is_cut_to_whole_sections_for_the_description(write_config):
    gates = check_gates("classification", PASSING, load_config(SMOKE).gates, False)
    facts = card_facts(True, gates)
    facts.worst_devices = [{"device": f"device-{i:04d}", "recall": 0.5} for i in range(400)]
    full = model_card.render(facts)
    short = model_card.description(facts, "model_card.md on promote run abc")
    assert len(full) > model_card.DESCRIPTION_LIMIT >= len(short)
    assert "## Worst devices" not in short and "## Known limitations" in short
    assert short.endswith("(The full model card: model_card.md on promote run abc.)\n")
