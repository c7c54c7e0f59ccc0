"""One exception type for every user-facing failure.

The CLI prints ``kl-filter: error: <message>`` on one line and exits with status 2; library callers catch
:class:`KLFilterError`. Messages name the file (or flag) and the problem.
"""


class KLFilterError(Exception):
    """A failure caused by the user's input (a file, a flag, the environment), reported in one line."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class MissingDependency(KLFilterError):
    """An optional package or asset a filter needs is absent; the message carries the install hint."""
