"""Test-only fault injection: SIGKILL this process right before a named registry call.

tests/faults/ sets PDMFLOW_FAULT_KILL_AT to one of KILL_POINTS to leave the registry exactly as
a crash at that point would; unset, `kill_point` does nothing.
"""

from __future__ import annotations

import os
import signal

from pdmflow.config import fault_kill_point

# The registry calls of a release, in the order promote makes them.
KILL_POINTS = (
    "create_model_version",
    "update_model_version",
    "update_description",
    "transition_to_staging",
    "transition_to_production",
    "set_champion_alias",
    "set_release_tags",
)


def kill_point(call: str) -> None:
    """SIGKILL the process when $PDMFLOW_FAULT_KILL_AT names `call` (a KILL_POINTS entry)."""
    if fault_kill_point() == call:
        os.kill(os.getpid(), signal.SIGKILL)
