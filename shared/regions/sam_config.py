"""What configures the SAM family, without importing torch: packages, model types, checkpoints, parameters.

Three generators run a package's own automatic mask generator: ``sam`` (segment-anything), ``sam-hq``
(segment-anything-hq, HQ-SAM) and ``efficientvit-sam`` (efficientsam, EfficientViT-SAM). :class:`SamFamily`
says, for each, which package and class, which model types, which published checkpoints and their SHA-256.

The parameters of a package's automatic mask generator and their defaults are read from the installed
package's source with :mod:`ast`, without importing it: importing these packages imports torch (seconds), and
the command line builds one option per parameter just to show its help. The defaults are those of the
installed version, whatever it is; a test compares them with ``inspect.signature`` of the imported class.
Checkpoints are files the user supplies (argument or ``RAT_SAM_CHECKPOINT``); nothing is downloaded.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from rat.shared.errors import ParamError, RatError

CHECKPOINT_ENV = "RAT_SAM_CHECKPOINT"
#: Default budget of the SAM family's mask post-processing, bytes (:mod:`rat.shared.regions.bounded`).
DEFAULT_MAX_MEMORY = 2 * 10**9
#: A model type of every family built small from the package's own modules, with random weights: for tests
#: and offline smoke runs only (its masks mean nothing).
TEST_MODEL = "test_tiny"


class SamError(RatError, RuntimeError):
    """A one-line problem with a SAM-family package, checkpoint or configuration."""


@dataclass(frozen=True, eq=False)  # one object per family: hashed by identity
class SamFamily:
    """One SAM-family generator: the package that runs it and the checkpoints it takes."""

    name: str                   # generator name, as the store records it
    label: str                  # how messages call the model
    distribution: str           # the package to install (its version is recorded)
    module: str                 # its import name
    generator_source: str       # file of its automatic mask generator, relative to the package
    generator_class: str        # the class in that file
    model_types: tuple[str, ...]
    default_model_type: str
    checkpoints: str            # where the published checkpoints come from, for messages
    extra: str | None = None    # `pip install rat-restore[extra]` installs the package
    #: Published checkpoints: file name -> SHA-256; a file of one of these names and another hash is refused.
    published: Mapping[str, str] = field(default_factory=dict)

    @property
    def install(self) -> str:
        return f"pip install rat-restore[{self.extra}]" if self.extra else f"pip install {self.distribution}"


SAM = SamFamily(
    "sam", "SAM", "segment-anything", "segment_anything", "automatic_mask_generator.py",
    "SamAutomaticMaskGenerator", ("vit_b", "vit_l", "vit_h", TEST_MODEL), "vit_b",
    "sam_vit_b_01ec64.pth (vit_l: sam_vit_l_0b3195.pth, vit_h: sam_vit_h_4b8939.pth) from the "
    "segment-anything project's model checkpoints",
    published={
        "sam_vit_b_01ec64.pth": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        "sam_vit_l_0b3195.pth": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        "sam_vit_h_4b8939.pth": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    })
SAM_HQ = SamFamily(
    "sam-hq", "HQ-SAM", "segment-anything-hq", "segment_anything_hq", "automatic_mask_generator.py",
    "SamAutomaticMaskGenerator", ("vit_b", "vit_l", "vit_h", "vit_tiny", TEST_MODEL), "vit_b",
    "sam_hq_vit_b.pth (vit_l, vit_h, vit_tiny: sam_hq_vit_l.pth, ...) from the HQ-SAM project's model "
    "checkpoints", extra="sam-hq")
EFFICIENTVIT_SAM = SamFamily(
    "efficientvit-sam", "EfficientViT-SAM", "efficientsam", "efficientsam", "models/efficientvit/sam.py",
    "EfficientViTSamAutomaticMaskGenerator", ("l0", "l1", "l2", "xl0", "xl1", TEST_MODEL), "l0",
    "efficientvit_sam_l0.pt (l1, l2, xl0, xl1: efficientvit_sam_l1.pt, ...) from the EfficientViT "
    "project's SAM checkpoints", extra="efficientvit-sam")
#: The SAM family by generator name.
FAMILIES = {f.name: f for f in (SAM, SAM_HQ, EFFICIENTVIT_SAM)}


def checkpoint_help(family: SamFamily = SAM) -> str:
    return (f"download {family.checkpoints} on a machine with internet, then pass it as `checkpoint` or set "
            f"{CHECKPOINT_ENV}; the superpixels `generator` needs no weights")


def resolve_checkpoint(checkpoint: str | Path | None, family: SamFamily = SAM) -> Path:
    """The checkpoint path from the argument or the environment; one-line errors when missing."""
    value = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not value:
        raise SamError(f"no {family.label} checkpoint given: {checkpoint_help(family)}")
    path = Path(value)
    if not path.is_file():
        raise SamError(f"{path}: {family.label} checkpoint not found: {checkpoint_help(family)}")
    return path


def check_model_type(model_type: str, family: SamFamily = SAM) -> None:
    if model_type not in family.model_types:
        raise SamError(f"unknown {family.label} model type {model_type!r}; choose one of "
                       f"{', '.join(family.model_types)}")


#: The values the automatic mask generators' parameters may take, (lowest, highest) with None unbounded:
#: counts of points, prompts and layers, thresholds and ratios of IoUs and scores in 0..1.
PARAM_RANGES: dict[str, tuple[float | None, float | None]] = {
    "points_per_side": (1, None), "points_per_batch": (1, None), "pred_iou_thresh": (0, 1),
    "stability_score_thresh": (0, 1), "stability_score_offset": (0, None), "box_nms_thresh": (0, 1),
    "crop_n_layers": (0, None), "crop_nms_thresh": (0, 1), "crop_overlap_ratio": (0, 1),
    "crop_n_points_downscale_factor": (1, None), "min_mask_region_area": (0, None),
}


def check_values(params: Mapping[str, Any]) -> None:
    """ParamError naming the first parameter outside :data:`PARAM_RANGES`."""
    for name, value in params.items():
        low, high = PARAM_RANGES.get(name, (None, None))
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                (low is not None and value < low) or (high is not None and value > high)):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ParamError(name, f"{value!r}: must be {span}")


#: Generator arguments that are not user parameters.
NOT_PARAMS = frozenset({"self", "model", "point_grids", "output_mode"})


@cache
def generator_defaults(family: SamFamily = SAM) -> dict[str, Any]:
    """{parameter: default} of the family's automatic mask generator ``__init__``, in signature order."""
    spec = importlib.util.find_spec(family.module)
    if spec is None or not spec.submodule_search_locations:
        raise SamError(f"the {family.name} generator needs {family.distribution}: {family.install}")
    source = Path(spec.submodule_search_locations[0]) / family.generator_source
    tree = ast.parse(source.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == family.generator_class)
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
