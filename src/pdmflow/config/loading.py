"""Reading a tenant config from YAML (the only place that does), and the few settings
read from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pdmflow.config.base import SECRET_QUERY_KEYS
from pdmflow.config.engine import (
    EngineConfig,
    StorageConfig,
    check_scheduler_address,
    check_storage_uri,
)
from pdmflow.config.tenant import TenantConfig
from pdmflow.errors import ConfigError

DEFAULT_CONFIG_PATH = "configs/default.yaml"
_CREDENTIALS = re.compile(r"(://[^/\s:@]*:)[^@\s/]*@")
# The value of a signed or tokened URL's secret query key (?sig=..., &X-Amz-Signature=...).
_SECRET_QUERY_VALUE = re.compile(
    rf"([?&][^=&\s'\"]*(?:{SECRET_QUERY_KEYS})[^=&\s'\"]*=)"
    r"[^&\s'\"]*",
    re.IGNORECASE,
)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"] if part != "schema_") or "<top level>"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    if error["type"] == "value_error" and key == "<top level>":
        # A check across keys: its message names them, the input is the whole file.
        return str(error["ctx"]["error"])
    return f"key '{key}': {error['msg']} (got {_redacted(repr(error.get('input')))})"


def _redacted(text: str) -> str:
    """`text` with the password of any scheme://user:password@host in it replaced by ***: an
    error echoes what it was given, and a URL in a config may carry one."""
    return _SECRET_QUERY_VALUE.sub(r"\1***", _CREDENTIALS.sub(r"\1***@", text))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last silently: a second `gates:` block would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> TenantConfig:
    """Read and validate a tenant YAML file; raise ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path}: file not found")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping of keys at the top level")
    try:
        config = TenantConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"config {path}: {problems}") from None
    config._source_path = str(path)
    config._source_text = text
    return config


def database_password() -> str | None:
    """The database password from the environment, so it never sits in a config file."""
    return os.environ.get("PDMFLOW_DB_PASSWORD")


def _from_environment(
    name: str, configured: str | None, check: Callable[[str, str], str]
) -> str | None:
    """$name when set (checked as the config key would be, a ConfigError naming the variable),
    else the configured value."""
    value = os.environ.get(name)
    if not value:
        return configured
    try:
        return check(value, name)
    except ValueError as error:
        raise ConfigError(str(error)) from None


DASK_ADDRESS_ENV = "PDMFLOW_DASK_ADDRESS"


def dask_address(engine: EngineConfig) -> str | None:
    """The running Dask scheduler to connect to: $PDMFLOW_DASK_ADDRESS when set, else
    engine.address (None: start a local cluster). Read here, where the environment is read."""
    return _from_environment(DASK_ADDRESS_ENV, engine.address, check_scheduler_address)


STORAGE_URI_ENV = "PDMFLOW_STORAGE_URI"


def storage_uri(storage: StorageConfig) -> str | None:
    """Where step outputs that are data go: $PDMFLOW_STORAGE_URI when set, else storage.uri
    (None: the run's artifacts)."""
    return _from_environment(STORAGE_URI_ENV, storage.uri, check_storage_uri)


FAULT_KILL_ENV = "PDMFLOW_FAULT_KILL_AT"


def fault_kill_point() -> str | None:
    """Test-only: the registry call before which promote SIGKILLs itself ($PDMFLOW_FAULT_KILL_AT).

    The one place the fault-injection hook is read; unset (always, outside tests/faults/) it is
    None and nothing happens.
    """
    return os.environ.get(FAULT_KILL_ENV) or None
