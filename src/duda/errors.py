"""Errors a user can act on. The CLI prints their message without a traceback."""


class DudaError(Exception):
    """Base class: the message names the file, key or value and what was expected."""


class ConfigError(DudaError):
    """A configuration key is unknown, missing or of the wrong type."""

    key: str | None = None  # the dotted key it is about, when known (e.g. "data.source.resize[0]")


class DatasetError(DudaError):
    """A dataset folder, file or label map is missing or malformed."""


class CheckpointError(DudaError):
    """A weights file or training checkpoint cannot be used."""


class StoppedBySignal(DudaError):
    """A run stopped by SIGTERM / SIGINT after writing its checkpoint; the CLI exits 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
