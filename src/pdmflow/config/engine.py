"""Where the work runs: in this process, or on a Dask cluster (started here or running)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from pdmflow.config.base import _Strict, refuse_url_credentials

# What the engine block accepts as a size, as Dask spells it: 4GiB, 512MiB, 8GB, 1.5e9 (bytes).
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?(?:[eE]\d+)?)\s*([A-Za-z]*)\s*")
_ADDRESS = re.compile(r"(tcp|tls|ws|wss)://[^\s@/]+")


def size_in_bytes(text: str) -> int | None:
    """Bytes of a size such as 4GiB or 512MB; None when it is not one."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def check_scheduler_address(address: str, key: str) -> str:
    """The address unchanged, or ValueError naming `key` and what a scheduler address is."""
    if "@" in address:  # never echo what may be a password
        raise ValueError(
            f"{key}: a Dask scheduler address carries no user name or password (found '@'); "
            "expected one such as tcp://10.0.0.5:8786"
        )
    if not _ADDRESS.fullmatch(address):
        raise ValueError(
            f"{key}: '{address}' is not a Dask scheduler address such as tcp://10.0.0.5:8786"
        )
    return address


class EngineConfig(_Strict):
    """local: every step in this process (the default). dask: the per-device work of a step runs
    as tasks on a Dask cluster, started here (`address: null`) or already running."""

    kind: Literal["local", "dask"] = Field(
        "local",
        description=(
            "local: in this process, as always. dask: per-device work (features, batch "
            "scoring) runs as Dask tasks, on whole devices at a time, and the released "
            "LightGBM model's final fit runs on the workers (lightgbm.dask)."
        ),
    )
    address: str | None = Field(
        None,
        description=(
            "dask: the running scheduler to connect to (tcp://host:8786); null starts a local "
            "cluster of n_workers processes for the run. PDMFLOW_DASK_ADDRESS, when set, "
            "replaces it."
        ),
    )
    n_workers: int = Field(2, ge=1, description="dask, local cluster: worker processes.")
    threads_per_worker: int = Field(1, ge=1, description="dask, local cluster: threads per worker.")
    memory_limit: str = Field(
        "4GiB",
        description=(
            "dask, local cluster: memory per worker (4GiB, 512MiB); a worker past it is "
            "restarted by Dask and its tasks run again."
        ),
    )
    partition_rows: int = Field(
        1_000_000,
        ge=1,
        description=(
            "Readings per task, about: a partition holds whole devices (a device is never "
            "split), so one partition can be larger. Tables in storage (storage.uri) are "
            "written in parts of at most this many rows, and in at least 16 parts of 10,000 "
            "rows or more, so that their parts keep the workers busy."
        ),
    )

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, address: str | None) -> str | None:
        return None if address is None else check_scheduler_address(address, "engine.address")

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, memory_limit: str) -> str:
        size = size_in_bytes(memory_limit)
        if not size:
            raise ValueError(
                f"engine.memory_limit: '{memory_limit}' is not a positive size such as 4GiB "
                "or 512MiB"
            )
        return memory_limit

    @property
    def memory_limit_bytes(self) -> int:
        return size_in_bytes(self.memory_limit) or 0


def check_storage_uri(uri: str, key: str) -> str:
    """The URI unchanged, or ValueError naming `key`: a local directory or an fsspec URL
    (s3://bucket/prefix, gs://..., file:///...), with no user name or password in it."""
    if not uri.strip():
        raise ValueError(
            f"{key}: expected a directory or an fsspec URL such as s3://bucket/pdmflow"
        )
    return refuse_url_credentials(uri, key)


class StorageConfig(_Strict):
    """Where the data a step hands the next (the ingested dataset, the feature tables) live."""

    uri: str | None = Field(
        None,
        description=(
            "null: in each run's artifacts, as always. A local directory or any fsspec URL "
            "(s3://bucket/pdmflow, gs://..., needs that filesystem's package): ingest and "
            "features write partitioned Parquet datasets under "
            "<uri>/<tenant_id>/<step>/<run id>/ and the run references them (mlflow.log_input "
            "with the location and digest) instead of copying them into the artifact store. "
            "PDMFLOW_STORAGE_URI, when set, replaces it."
        ),
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return None if uri is None else check_storage_uri(uri, "storage.uri")
