"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): what a one-line
    error quotes of an exception from a library."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class PdmflowError(Exception):
    """Base class: the message names the file, column, device or key and what was expected."""

    exit_code = 2


class ConfigError(PdmflowError):
    """A tenant config key is unknown, missing or of the wrong type."""


class DataValidationError(PdmflowError):
    """Input data breaks a check that makes training meaningless."""


class StepInputError(PdmflowError):
    """A step could not find or read the output of the step before it."""


class GateFailure(PdmflowError):
    """The candidate model failed at least one release gate (it stays unpromoted)."""

    exit_code = 3


class TrackingUnreachable(PdmflowError):
    """The tracking server did not answer within tracking.max_wait_seconds (retry later)."""

    exit_code = 4

    def __init__(self, message: str, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step  # the step that was running, when known (for `pdmflow <step>: error`)


class SourceUnreachable(PdmflowError):
    """The SQL source's database went away in the middle of a read (retry later)."""

    exit_code = 4


class EngineUnreachable(PdmflowError):
    """The Dask scheduler (engine.address or PDMFLOW_DASK_ADDRESS) did not answer, has no
    workers, or was lost mid-run (retry later)."""

    exit_code = 4


class ArtifactWriteError(PdmflowError):
    """An artifact could not be written: the artifact store is full, read-only or forbidden."""

    exit_code = 6


class ModelFilesError(PdmflowError):
    """A model's files are missing or corrupt (MLmodel, the ONNX graph, the feature spec)."""
