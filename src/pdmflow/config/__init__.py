"""Typed tenant configuration: the only place that reads YAML.

A tenant config is one YAML file. Every key is declared here; an unknown key or a value of the
wrong type is refused with a one-line message naming the file and the key.

A file per section: data (source, schema, labels), features (features, split), training
(training and its threshold rule, tuning), evaluation (gates, evaluation, monitoring),
operations (schedule, tracking), engine (local or Dask), tenant (the whole config and its
cross-section checks) and loading (YAML and the environment); `from pdmflow.config import ...`
reaches every name.
"""

from __future__ import annotations

from pdmflow.config.base import GATE_RULE, SQL_IDENTIFIER
from pdmflow.config.data import DataConfig, LabelConfig, SchemaConfig, SourceConfig, SyntheticSource
from pdmflow.config.engine import EngineConfig, StorageConfig
from pdmflow.config.evaluation import EvaluationConfig, GateConfig, LiftGate, MonitoringConfig
from pdmflow.config.features import FeatureConfig, SplitConfig
from pdmflow.config.loading import (
    DASK_ADDRESS_ENV,
    DEFAULT_CONFIG_PATH,
    FAULT_KILL_ENV,
    STORAGE_URI_ENV,
    dask_address,
    database_password,
    fault_kill_point,
    load_config,
    storage_uri,
)
from pdmflow.config.operations import RegistryConfig, ScheduleConfig, TrackingConfig
from pdmflow.config.tenant import TenantConfig
from pdmflow.config.training import ThresholdConfig, TrainingConfig, TuningConfig

__all__ = [
    "DASK_ADDRESS_ENV",
    "DEFAULT_CONFIG_PATH",
    "DataConfig",
    "EngineConfig",
    "EvaluationConfig",
    "FAULT_KILL_ENV",
    "FeatureConfig",
    "GATE_RULE",
    "GateConfig",
    "LabelConfig",
    "LiftGate",
    "MonitoringConfig",
    "RegistryConfig",
    "SQL_IDENTIFIER",
    "STORAGE_URI_ENV",
    "ScheduleConfig",
    "SchemaConfig",
    "SourceConfig",
    "SplitConfig",
    "StorageConfig",
    "SyntheticSource",
    "TenantConfig",
    "ThresholdConfig",
    "TrackingConfig",
    "TrainingConfig",
    "TuningConfig",
    "dask_address",
    "database_password",
    "fault_kill_point",
    "load_config",
    "storage_uri",
]
