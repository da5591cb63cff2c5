"""The tenants a scheduler serves, read from their configs (one config per tenant), and the
fleet's settings."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pdmflow.config import DEFAULT_CONFIG_PATH, ScheduleConfig, load_config
from pdmflow.errors import ConfigError

DEFAULT_STATE_DIR = ".pdmflow"
RUN_NOW_REASON = "manual: scheduler.py --run-now"


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    config_path: str
    schedule: ScheduleConfig


def load_tenants(
    config_paths: Sequence[str] = (),
    config_dir: str | None = None,
    only: Sequence[str] = (),
) -> list[Tenant]:
    """Every tenant in the given configs and in `config_dir/*.yaml` (default: the default
    config), restricted to the ids in `only`. Raises ConfigError naming the file or the id."""
    paths = [str(path) for path in config_paths]
    if config_dir is not None:
        folder = Path(config_dir)
        if not folder.is_dir():
            raise ConfigError(f"--configs {folder}: not a directory")
        found = sorted(str(path) for path in folder.glob("*.yaml"))
        if not found:
            raise ConfigError(f"--configs {folder}: no *.yaml tenant configs in it")
        paths += found
    if not paths:
        paths = [DEFAULT_CONFIG_PATH]
    unique = list(dict.fromkeys(paths, None))  # the same file named twice is one tenant
    tenants = []
    for path in unique:
        config = load_config(path)
        tenants.append(Tenant(config.tenant_id, path, config.schedule))
    known = [tenant.tenant_id for tenant in tenants]
    for tenant_id in only:
        if tenant_id not in known:
            raise ConfigError(
                f"unknown tenant '{tenant_id}' (the configs hold: {', '.join(sorted(known))})"
            )
    selected = [tenant for tenant in tenants if not only or tenant.tenant_id in only]
    first_file: dict[str, str] = {}
    for tenant in selected:
        if tenant.tenant_id in first_file:
            raise ConfigError(
                f"tenant '{tenant.tenant_id}' is in both {first_file[tenant.tenant_id]} and "
                f"{tenant.config_path}: the lock and the state are per tenant, one config per "
                "tenant (name the configs with --config)"
            )
        first_file[tenant.tenant_id] = tenant.config_path
    return selected


@dataclass(frozen=True)
class FleetSettings:
    retries: int = 2
    backoff_seconds: float = 60.0
    n_trials: int | None = None
    # Locks in <state_dir>/locks/<tenant_id>.lock, state in <state_dir>/scheduler/state.json.
    state_dir: str | None = None
    # How to run the pdmflow command line; a wrapper (nice, a container) may stand in front.
    pdmflow_command: tuple[str, ...] = field(
        default_factory=lambda: (sys.executable, "-m", "pdmflow.cli")
    )

    def lock_path(self, tenant_id: str) -> Path:
        return Path(self.state_dir or DEFAULT_STATE_DIR) / "locks" / f"{tenant_id}.lock"
