"""What both command lines share: option sets, the error handler, the exit status of batch jobs.

Library functions raise one-line errors (:class:`~rat.shared.errors.RatError`) and
:class:`~rat.shared.errors.ParamError` naming their parameters; :func:`cli_errors` turns them, and the known
faults of input files (missing, not readable), into click errors naming flags instead. Anything else is a bug
and keeps its traceback. Heavy modules (torch, segment_anything, zarr, dask) are imported by the commands that
use them, never here: help stays instant.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click

from rat.shared.datasets.load import builtin_datasets
from rat.shared.datasets.splits import SPLITS
from rat.shared.errors import INPUT_FAULTS, ParamError, RatError, one_line

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, status: int = 1) -> None:
    """Stop the command with ``message`` and exit status ``status``."""
    error = click.ClickException(message)
    error.exit_code = status
    raise error


def flag(param: str, flags: Mapping[str, str] | None = None) -> str:
    """The command-line flag of a library parameter: ``batch_size`` -> ``--batch-size``."""
    return (flags or {}).get(param) or f"--{param.replace('_', '-')}"


#: How library messages refer to a parameter: its name in backticks, e.g. "pass `overwrite` to ...".
_PARAM_REF = re.compile(r"`([a-z][a-z0-9_]*)`")


def with_flags(text: str, flags: Mapping[str, str] | None = None) -> str:
    """A library message with its parameter references (`name`) written as flags (--name)."""
    return _PARAM_REF.sub(lambda m: flag(m.group(1), flags), text)


@contextmanager
def cli_errors(flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn the package's one-line errors (RatError) and known input faults (a missing file, a permission
    error: :data:`~rat.shared.errors.INPUT_FAULTS`) into click errors that name flags instead of parameters:
    a ParamError's parameter, and parameters referred to as `name` in any message (``flags`` maps names
    whose flag is spelled otherwise, e.g. ``{"n_workers": "--workers"}``). Other exceptions are bugs: they
    keep their traceback."""
    try:
        yield
    except ParamError as err:
        fail(with_flags(f"{flag(err.param, flags)}: {err.reason}", flags))
    except RatError as err:
        fail(with_flags(str(err), flags), err.exit_status)
    except INPUT_FAULTS as err:
        fail(one_line(err))


class LazyHelp(click.Option):
    """An option whose help text is a function, called only when the help is read: it may import what it
    names (a default held by a heavy module) without slowing every start of the command."""

    def __init__(self, *args, help: Callable[[], str], **kwargs) -> None:
        self._make_help: Callable[[], str] | None = help
        super().__init__(*args, **kwargs)

    @property
    def help(self) -> str | None:
        if self._make_help is not None:
            self._help, self._make_help = self._make_help(), None
        return self._help

    @help.setter
    def help(self, value: str | None) -> None:
        self._help = value


def alias(command: click.Command, name: str) -> click.Command:
    """``command`` under an older ``name``: the same command, hidden from the list of commands."""
    old = copy.copy(command)
    old.name, old.hidden = name, True
    return old


def _stack(func: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        func = option(func)
    return func


def dataset_options(required: bool = True, root_required: bool = True) -> Callable:
    """--dataset, --root and --index: which images, found through the dataset's index."""
    names = ", ".join(builtin_datasets())
    return lambda func: _stack(func, [
        click.option("--dataset", required=required,
                     help=f"Builtin dataset ({names}) or path to a dataset definition .toml."),
        click.option("--root", required=root_required, type=click.Path(file_okay=False, path_type=Path),
                     help="Data root that the definition's file patterns are relative to."),
        click.option("--index", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Per-image index file, used as it is (default: <root>/.rat/<name>.csv, built "
                          "and kept up to date automatically)."),
    ])


def selection_options(split_default: str | None = None) -> Callable:
    """--split, --limit and --shard: a subset of the index."""
    shown = f" (default {split_default})" if split_default else " (default all)"
    return lambda func: _stack(func, [
        click.option("--split", type=click.Choice([*SPLITS, "all"]), default=split_default,
                     help=f"Only this split{shown}."),
        click.option("--limit", type=click.IntRange(min=0), default=None,
                     help="At most N images (first by id, after --split and --shard)."),
        click.option("--shard", default=None, help="i/n: this process takes every n-th image from the i-th."),
    ])


def masks_option(*aliases: str, required: bool = True, help: str) -> Callable:
    """--masks STORE: the label store (directory, .zip or fsspec URL); ``aliases`` are older spellings."""
    return click.option("--masks", *aliases, "masks", required=required, metavar="STORE", help=help)


def progress_option(func: Callable) -> Callable:
    return click.option("--progress/--no-progress", default=True, help="Show a progress bar.")(func)


def exit_status(any_failed: bool) -> None:
    """Batch jobs exit with status 1 when any item failed (the others were kept)."""
    if any_failed:
        raise SystemExit(1)


#: Units of byte sizes on the command line (decimal and binary).
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
    """``"2GB"``, ``"500 MiB"``, ``"1.5e9"`` -> bytes (ValueError naming the text otherwise)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text), re.IGNORECASE)
    if match is None or match.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 2GB, 500MB, 1GiB)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be positive")
    return value


class ByteSize(click.ParamType):
    """A size in bytes, written with a unit (2GB, 500MB, 1GiB) or as a number of bytes."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_bytes(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)
