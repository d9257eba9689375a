"""What every error of the package has in common: one line of text, and parameters named as such.

Library functions raise domain errors (``ImageReadError``, ``ManifestError``, ``StoreError``, ...) whose
message is one line naming the culprit, and :class:`ParamError` for a bad argument, naming the parameter as
the function calls it. Only the command lines turn parameter names into flags (``batch_size`` ->
``--batch-size``) and errors into exit codes.
"""

from __future__ import annotations

#: Longest reason kept in a one-line error (the rest is cut with "...").
MAX_REASON = 240
#: Faults of the user's files that the command lines report in one line, like the package's own errors.
INPUT_FAULTS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def one_line(error: object) -> str:
    """An error (or any text) as one line: whitespace and newlines collapsed, at most MAX_REASON characters.

    An exception without a message gives its type name.
    """
    line = " ".join(str(error).split())
    if not line and isinstance(error, BaseException):
        line = type(error).__name__
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


class RatError(Exception):
    """A problem the user can fix, told in one line (a store, a checkpoint, a cluster, SAM's weights, ...).

    The domain errors derive from it (and from the built-in error they always were), so that the command
    lines show them as one line while real bugs keep their tracebacks. ``exit_status``: the command's.
    """

    exit_status = 1


class ParamError(RatError, ValueError):
    """A bad argument value. ``param`` is the parameter's name in the library's signature."""

    def __init__(self, param: str, reason: str) -> None:
        self.param, self.reason = param, reason
        super().__init__(f"{param}: {reason}")

    def __reduce__(self):  # picklable: dask ships exceptions between processes
        return (type(self), (self.param, self.reason))
