"""What configures SAM, without importing torch: model types, checkpoints, the generator's parameters.

The parameters of segment-anything's ``SamAutomaticMaskGenerator`` and their defaults are read from the
installed package's source with :mod:`ast`, without importing it: importing segment_anything imports torch
(seconds), and the command line builds one option per parameter just to show its help. The defaults are those
of the installed version, whatever it is; a test compares them with ``inspect.signature`` of the imported
class. Checkpoints are files the user supplies (argument or ``RAT_SAM_CHECKPOINT``); nothing is downloaded.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any

from rat.shared.errors import RatError

#: SAM model types: segment-anything's registry, and a tiny random-weight model for tests.
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "vit_tiny")
CHECKPOINT_ENV = "RAT_SAM_CHECKPOINT"
#: Published checkpoints: file name -> SHA-256. A file with one of these names and another hash is refused.
PUBLISHED_SHA256 = {
    "sam_vit_b_01ec64.pth": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
}
CHECKPOINT_HELP = (
    "download sam_vit_b_01ec64.pth from the segment-anything project's model checkpoints "
    f"on a machine with internet, then pass it as `checkpoint` or set {CHECKPOINT_ENV}; "
    "the superpixels `generator` needs no weights"
)


class SamError(RatError, RuntimeError):
    """A one-line problem with SAM's checkpoint or configuration."""


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The checkpoint path from the argument or the environment; one-line errors when missing."""
    value = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not value:
        raise SamError(f"no SAM checkpoint given: {CHECKPOINT_HELP}")
    path = Path(value)
    if not path.is_file():
        raise SamError(f"{path}: SAM checkpoint not found: {CHECKPOINT_HELP}")
    return path


#: Generator arguments that are not user parameters.
NOT_PARAMS = frozenset({"self", "model", "point_grids", "output_mode"})


@cache
def generator_defaults() -> dict[str, Any]:
    """{parameter: default} of ``SamAutomaticMaskGenerator.__init__``, in signature order."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("segment-anything is not installed (pip install segment-anything)")
    source = Path(spec.submodule_search_locations[0]) / "automatic_mask_generator.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SamAutomaticMaskGenerator")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args.args
    defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
    return {a.arg: _constant(d) for a, d in zip(args, defaults, strict=True)
            if a.arg not in NOT_PARAMS and d is not None}


_ARITHMETIC = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)


def _constant(node: ast.expr) -> Any:
    """A default written as a literal or constant arithmetic (``512 / 1500``), evaluated."""
    expr = ast.Expression(node)
    if not all(isinstance(n, _ARITHMETIC) for n in ast.walk(expr)):
        raise ValueError(f"default {ast.unparse(node)!r} is not a constant")
    return eval(compile(expr, "<default>", "eval"), {"__builtins__": {}})  # noqa: S307 - constants only
