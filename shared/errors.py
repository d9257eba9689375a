"""What every error of the package has in common: one line of text, and parameters named as such.

Library functions raise domain errors (``ImageReadError``, ``ManifestError``, ``StoreError``, ...) whose
message is one line naming the culprit, and :class:`ParamError` for a bad argument, naming the parameter as
the function calls it. Only the command lines turn parameter names into flags (``batch_size`` ->
``--batch-size``) and errors into exit codes.
"""

from __future__ import annotations

import re

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


def unsafe_pickle(error: BaseException) -> str | None:
    """Why ``torch.load(..., weights_only=True)`` refused a file that holds code or objects other than tensors
    and plain values (one line of our own, naming what it found), or None for other failures.

    PyTorch's own message advises loading with ``weights_only=False``, which would run whatever code the
    file holds: never repeat it (:func:`load_failure` for the others).
    """
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(error))
    if found is None:
        return None
    return (f"holds code or objects other than tensors and plain values ({found.group(1)}); refused for "
            "safety and not loaded (only weights and plain settings are ever read)")


def load_failure(error: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words, without PyTorch's advice to load
    with ``weights_only=False``."""
    text = str(error)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        operand = re.search(r"Unsupported operand (\d+)", text)
        return "not a file of tensors and plain values" + (f": pickle instruction {operand.group(1)}"
                                                          if operand else "")
    return f"{type(error).__name__}: {one_line(error)}"


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
