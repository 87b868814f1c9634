"""User-facing errors.

Anything a user can cause (a missing file, a corrupt PNG, a bad flag) raises
:class:`VidpredError` with a one-line message naming the file or value and what
was expected. The CLI prints it without a traceback and exits non-zero.
"""


class VidpredError(Exception):
    """A clear, one-line, user-facing error."""


class DataError(VidpredError):
    """Bad or missing data on disk."""


class ConfigError(VidpredError):
    """A bad configuration value or flag."""


class CheckpointError(VidpredError):
    """A missing, corrupt or incompatible checkpoint."""


class NonFiniteLossError(VidpredError):
    """Training produced a NaN or infinite loss."""
