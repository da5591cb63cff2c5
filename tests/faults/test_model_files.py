"""Corrupt or missing model files: loading a scorer (and `pdmflow score`) fails with one line
naming the model and what is wrong, never with a half-loaded scorer."""

from __future__ import annotations

import shutil

import mlflow
import pytest
from conftest import SMOKE, cli

from pdmflow.artifacts import MODEL_URI_TAG
from pdmflow.config import load_config
from pdmflow.errors import ModelFilesError
from pdmflow.serving import SPEC_PATH, FailureScorer
from pdmflow.steps.features import run_features
from pdmflow.steps.ingest import run_ingest
from pdmflow.steps.train import run_train


@pytest.fixture
def model_dir(tracking_store, tmp_path):
    """A real trained model's files in a local folder (smoke config, no tuning)."""
    config = load_config(SMOKE)
    run_ingest(config)
    run_features(config, "latest")
    train_run = mlflow.get_run(run_train(config, "latest", "none"))
    return mlflow.artifacts.download_artifacts(
        train_run.data.tags[MODEL_URI_TAG], dst_path=str(tmp_path / "model")
    )


def test_broken_model_files_are_named_in_one_line(model_dir, tmp_path):
    from pathlib import Path

    good = Path(model_dir)
    assert FailureScorer.load(str(good)).spec.feature_names  # the intact copy loads

    def broken(name: str, damage) -> str:
        copy = tmp_path / name
        shutil.copytree(good, copy)
        damage(copy)
        return str(copy)

    def truncate(folder):
        onnx_file = folder / "model.onnx"
        onnx_file.write_bytes(onnx_file.read_bytes()[:1000])

    cases = {
        broken("truncated", truncate): "ONNX file model.onnx is not loadable",
        broken("no_onnx", lambda f: (f / "model.onnx").unlink()): "ONNX file model.onnx is missing",
        broken(
            "no_spec", lambda f: (f / SPEC_PATH).unlink()
        ): f"feature spec {SPEC_PATH} is missing",
        broken("no_mlmodel", lambda f: (f / "MLmodel").unlink()): "no MLmodel file",
        str(tmp_path / "nowhere"): "cannot be read",
    }
    for uri, expected in cases.items():
        with pytest.raises(ModelFilesError) as raised:
            FailureScorer.load(uri)
        message = str(raised.value)
        assert message.startswith(f"model {uri}: ") and expected in message, message
        assert "\n" not in message

    # Through the command line: exit 2, the one line, and no output file.
    output = tmp_path / "scores.csv"
    truncated = str(tmp_path / "truncated")
    result = cli(
        "score",
        "--config",
        str(SMOKE),
        "--source-config",
        "--model-uri",
        truncated,
        "--output",
        str(output),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pdmflow score: error: ")
    assert "ONNX file model.onnx is not loadable" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()
