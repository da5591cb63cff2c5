"""What a child run's exit status means to the scheduler: a final verdict or a retry, and the
worst of several."""

from __future__ import annotations

from collections.abc import Sequence

from pdmflow.errors import GateFailure, PdmflowError

# Exit status when another process holds the tenant's lock (EX_TEMPFAIL: try again later).
LOCKED_EXIT = 75
# `pdmflow monitor`: drift or an accuracy drop; its last stdout line is "retrain advised: ...".
RETRAIN_ADVISED_EXIT = 5
# Verdicts are final: retrying the same data or config changes nothing. Anything else (1, 4 =
# tracking server unreachable (TrackingUnreachable), 6 = artifact store full or read-only, a
# crash) is retried with backoff.
RETRAIN_VERDICTS = frozenset({0, PdmflowError.exit_code, GateFailure.exit_code})
MONITOR_VERDICTS = frozenset({0, PdmflowError.exit_code, RETRAIN_ADVISED_EXIT})


def retrain_outcome(status: int) -> str:
    if status == 0:
        return "released"
    if status == GateFailure.exit_code:
        return "rejected by gates"
    if status == LOCKED_EXIT:
        return "skipped: locked"
    return f"failed exit {status}"


def worst_status(statuses: Sequence[int]) -> int:
    """The exit status of several retrains: any failure beats bad input, which beats a skipped
    (locked) run, a gate rejection, then success."""
    order = {0: 0, GateFailure.exit_code: 1, LOCKED_EXIT: 2, PdmflowError.exit_code: 3}
    worst = max(statuses, key=lambda status: order.get(status, 4), default=0)
    return 128 - worst if worst < 0 else worst  # killed by signal N: 128 + N, as a shell says
