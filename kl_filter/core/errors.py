"""One exception type for every user-facing failure.

The CLI prints ``kl-filter: error: <message>`` on one line and exits with status 2; library callers catch
:class:`KLFilterError`. Messages name the file (or flag) and the problem.
"""


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


class KLFilterError(Exception):
    """A failure caused by the user's input (a file, a flag, the environment), reported in one line: control
    characters a name brought in (``kl-filter run $'x\\ny'``) are written escaped, as ``\\n``."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__((f"{path}: {message}" if path else message).translate(_CONTROL))


class MissingDependency(KLFilterError):
    """An optional package or asset a filter needs is absent; the message carries the install hint."""
