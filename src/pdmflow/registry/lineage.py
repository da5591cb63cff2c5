"""Lineage: what a registered version was built from, kept as tags on the version.

promote sets these at registration, so the registry alone answers "which code, config, data,
features and parameters made version N" and `pdmflow reproduce` can rebuild it:

- code: git commit and dirty flag of the checkout pdmflow runs from ("unknown" when it is not a
  checkout), pdmflow's version;
- config: the tenant YAML as written, an artifact `config.yaml` on the promote run, and its
  sha256;
- data: the ingest run, its dataset digest (tag pdmflow.dataset_digest) and source (param);
- features: the features run and the sha256 of its feature spec;
- training: the tune run (or "none": the config's parameters), the parameters the train run fit
  with, and the seeds (training, synthetic source, split, evaluation).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from pdmflow.artifacts import run_of
from pdmflow.config import TenantConfig
from pdmflow.errors import StepInputError
from pdmflow.models import families as model_families
from pdmflow.models.families import DEFAULT_FAMILY
from pdmflow.tracking import step_input

PREFIX = "pdmflow.lineage."
GIT_COMMIT = PREFIX + "git_commit"
GIT_DIRTY = PREFIX + "git_dirty"
PDMFLOW_VERSION = PREFIX + "pdmflow_version"
CONFIG_URI = PREFIX + "config_uri"
CONFIG_SHA256 = PREFIX + "config_sha256"
CONFIG_PATH = PREFIX + "config_path"
DATASET_DIGEST = PREFIX + "dataset_digest"
DATASET_SOURCE = PREFIX + "dataset_source"
INGEST_RUN = PREFIX + "ingest_run_id"
FEATURES_RUN = PREFIX + "features_run_id"
FEATURE_SPEC_SHA256 = PREFIX + "feature_spec_sha256"
TUNE_RUN = PREFIX + "tune_run_id"
BEST_PARAMS = PREFIX + "best_params"
TRAIN_RUN = PREFIX + "train_run_id"
EVALUATE_RUN = PREFIX + "evaluate_run_id"
SEEDS = PREFIX + "seeds"
# reproduce refuses a version that lacks any of these.
REQUIRED = (
    GIT_COMMIT,
    CONFIG_URI,
    CONFIG_SHA256,
    DATASET_DIGEST,
    DATASET_SOURCE,
    TUNE_RUN,
    EVALUATE_RUN,
)
CONFIG_ARTIFACT = "config.yaml"
FEATURE_SPEC_FILE = "feature_spec.json"
UNKNOWN = "unknown"
NO_TUNE_RUN = "none"


def _git(*args: str) -> str | None:
    package = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", *args], cwd=package, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version() -> tuple[str, str]:
    """(git commit, "true"/"false" dirty) of pdmflow's checkout; "unknown" for both otherwise."""
    package = Path(__file__).resolve().parents[1]
    # An installed copy inside some repository (a venv in a checkout) is not that checkout's code.
    tracked = _git("ls-files", "--", str(package / "__init__.py"))
    commit = _git("rev-parse", "HEAD")
    if not tracked or not commit:
        return UNKNOWN, UNKNOWN
    status = _git("status", "--porcelain")
    dirty = UNKNOWN if status is None else str(bool(status.strip())).lower()
    return commit.strip(), dirty


def pdmflow_version() -> str:
    try:
        return importlib.metadata.version("pdmflow")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


def config_text(config: TenantConfig) -> str:
    """The YAML the config was loaded from, as written; a dump of it when built in code."""
    if config._source_text is not None:
        return config._source_text
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tune_run_id(train: Run) -> str:
    # train logs params_source "tune run <id>", or "config" for the config's own parameters.
    source = train.data.params.get("params_source", "")
    return source.split()[-1] if source.startswith("tune run ") else NO_TUNE_RUN


def lineage_tags(
    config: TenantConfig, evaluation: Run, config_uri: str, config_digest: str
) -> dict[str, str]:
    """The lineage tags of a version made from the evaluate run `evaluation` and `config`.

    `config_uri` is where the config's text was logged, `config_digest` its sha256.
    """
    train = mlflow.get_run(step_input(evaluation, "train_run_id"))
    features_uri = step_input(evaluation, "features_uri")
    features = run_of(features_uri)
    ingest = run_of(step_input(features, "data_uri"))
    spec_text = mlflow.artifacts.load_text(f"{features_uri}/{FEATURE_SPEC_FILE}")
    family = train.data.params.get("family", DEFAULT_FAMILY)
    params = model_families.family(family).params_from_logged(
        dict(sorted(train.data.params.items()))
    )
    commit, dirty = code_version()
    seeds = {
        "training.seed": config.training.seed,
        "source.synthetic.seed": config.source.synthetic.seed,
        "split.seed": config.split.seed,
        "evaluation.seed": config.evaluation.seed,
    }
    return {
        GIT_COMMIT: commit,
        GIT_DIRTY: dirty,
        PDMFLOW_VERSION: pdmflow_version(),
        CONFIG_URI: config_uri,
        CONFIG_SHA256: config_digest,
        CONFIG_PATH: str(Path(config._source_path).resolve()) if config._source_path else "",
        DATASET_DIGEST: ingest.data.tags.get("pdmflow.dataset_digest", UNKNOWN),
        DATASET_SOURCE: ingest.data.params.get("source", UNKNOWN),
        INGEST_RUN: ingest.info.run_id,
        FEATURES_RUN: features.info.run_id,
        FEATURE_SPEC_SHA256: sha256(spec_text),
        TUNE_RUN: _tune_run_id(train),
        BEST_PARAMS: json.dumps({"family": family, "params": params}, sort_keys=True),
        TRAIN_RUN: train.info.run_id,
        EVALUATE_RUN: evaluation.info.run_id,
        SEEDS: json.dumps(seeds),
    }


@dataclass(frozen=True)
class Lineage:
    """The lineage of one registered version, read back from its tags."""

    model: str
    version: str
    tags: dict[str, str]

    @property
    def git_commit(self) -> str:
        return self.tags[GIT_COMMIT]

    @property
    def config_uri(self) -> str:
        return self.tags[CONFIG_URI]

    @property
    def config_digest(self) -> str:
        return self.tags[CONFIG_SHA256]

    @property
    def dataset_digest(self) -> str:
        return self.tags[DATASET_DIGEST]

    @property
    def dataset_source(self) -> str:
        return self.tags[DATASET_SOURCE]

    @property
    def tune_run_id(self) -> str:
        return self.tags[TUNE_RUN]

    @property
    def evaluate_run_id(self) -> str:
        return self.tags[EVALUATE_RUN]


def read_lineage(model: str, version: str) -> Lineage:
    """The lineage tags of `model` version `version`; StepInputError when it has none."""
    try:
        found = MlflowClient().get_model_version(model, str(version))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise StepInputError(f"model {model} has no version {version}") from None
        raise
    missing = [tag for tag in REQUIRED if tag not in found.tags]
    if len(missing) == len(REQUIRED):
        raise StepInputError(
            f"model {model} version {version} has no lineage tags ({PREFIX}*): it was "
            "registered before pdmflow recorded lineage, so it cannot be reproduced"
        )
    if missing:
        raise StepInputError(
            f"model {model} version {version} lacks the lineage tag(s) {', '.join(missing)}: "
            "it cannot be reproduced"
        )
    return Lineage(model, str(version), dict(found.tags))
