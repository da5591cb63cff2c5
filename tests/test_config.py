from pathlib import Path

import pytest

from pdmflow.config import load_config
from pdmflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(REPO / "configs").glob("*.yaml"), *(REPO / "bench" / "configs").glob("*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.tenant_id and config.experiment_name and config.registered_model_name
    assert config.schema_.continuous_sensors


def test_unknown_key_is_named(write_config):
    path = write_config({"training": {"learning_rat": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown key 'training.learning_rat'") as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_wrong_type_is_named(write_config):
    with pytest.raises(ConfigError, match=r"key 'labels.horizon_hours'"):
        load_config(write_config({"labels": {"horizon_hours": "a day"}}))


def test_missing_required_key_is_named(write_config, tmp_path):
    path = write_config()
    path.write_text(path.read_text().replace("registered_model_name", "# removed"))
    with pytest.raises(ConfigError, match=r"missing required key 'registered_model_name'"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_config("configs/nope.yaml")


def test_file_source_needs_a_path(write_config):
    with pytest.raises(ConfigError, match="source.telemetry_path is required"):
        load_config(write_config({"source": {"kind": "csv"}}))


def test_training_max_rows_is_refused_with_the_anomaly_feature_by_name(write_config):
    path = write_config({"training": {"max_rows": 5000}, "features": {"anomaly_score": True}})
    with pytest.raises(ConfigError, match="training.max_rows: .* features.anomaly_score: false"):
        load_config(path)
    assert load_config(write_config({"training": {"max_rows": 5000}})).training.max_rows == 5000


def test_refit_false_needs_a_single_validation_split(write_config):
    path = write_config({"training": {"refit": False}, "split": {"cv_folds": 3}})
    with pytest.raises(ConfigError, match="training.refit: false .* split.cv_folds: 0"):
        load_config(path)
    assert not load_config(
        write_config({"training": {"refit": False}, "split": {"cv_folds": 0}})
    ).training.refit


def test_a_key_given_twice_is_refused_not_silently_replaced(write_config):
    path = write_config({"gates": {"min_auc": 0.95}})
    path.write_text(path.read_text() + "gates: {require: {auc: '>= 0.9'}}\n")
    with pytest.raises(ConfigError, match=r"key 'gates' appears twice \(line \d+\)") as error:
        load_config(path)
    assert "\n" not in str(error.value)
