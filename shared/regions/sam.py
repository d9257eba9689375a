"""Segment Anything (segment-anything) as a region source: its model types and automatic mask generator.

SAM runs through segment-anything's own ``sam_model_registry`` and ``SamAutomaticMaskGenerator`` (in bounded
memory, :mod:`rat.shared.regions.bounded`); checkpoints are loaded and checked by
:class:`~rat.shared.regions.sam_family.SamFamilyGenerator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rat.shared.regions.sam_config import SAM
from rat.shared.regions.sam_family import SamFamilyGenerator, build_tiny, registry_builders

if TYPE_CHECKING:
    import torch


def build_sam_tiny() -> torch.nn.Module:
    """A SAM of a few hundred thousand parameters built from segment_anything's own modules.

    For tests and offline smoke runs only (random weights give meaningless masks); the whole generation
    path (prompt grid, decoder, NMS, RLE, post-processing) is the real one. Input size 256, embed 32.
    """
    from segment_anything import modeling

    return build_tiny(modeling, modeling.MaskDecoder)


class SamGenerator(SamFamilyGenerator):
    """Label maps from segment-anything's automatic mask generator (vit_b, vit_l, vit_h)."""

    family = SAM
    name = SAM.name

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        from segment_anything import sam_model_registry

        return registry_builders(sam_model_registry, SAM, build_sam_tiny)

    @staticmethod
    def mask_generator() -> type:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
