"""Where per-device work runs: in this process (local) or as tasks on a Dask cluster (dask).

`open_engine(config)` gives an engine for the length of a step; the step hands it a frame and a
function of whole devices (`map_device_partitions`). The rooms (features/, ...) never see the
engine or a cluster: they receive frames and return frames, on either engine the same.
"""

from __future__ import annotations

from pdmflow.engine.base import Engine, LocalEngine, device_partitions
from pdmflow.engine.open import CONNECT_TIMEOUT_SECONDS, open_engine

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "Engine",
    "LocalEngine",
    "device_partitions",
    "open_engine",
]
