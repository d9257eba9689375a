"""HQ-SAM (segment-anything-hq) as a region source: its model types and automatic mask generator.

HQ-SAM adds a high-quality output token and fuses early ViT features into SAM's mask decoder; its package
keeps segment-anything's generator interface (``sam_model_registry``, ``SamAutomaticMaskGenerator``), which
runs here in bounded memory (:mod:`rat.shared.regions.bounded`). Model types vit_b, vit_l, vit_h and the light
vit_tiny (TinyViT encoder, needs timm). ``pip install rat-restore[sam-hq]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from rat.shared.regions.sam_config import SAM_HQ, SamError
from rat.shared.regions.sam_family import SamFamilyGenerator, build_tiny, registry_builders

if TYPE_CHECKING:
    import torch


def _package() -> ModuleType:
    """segment_anything_hq, imported quietly (timm warns about the names it imports)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import segment_anything_hq
    except ImportError as err:
        raise SamError(f"the {SAM_HQ.name} generator needs {SAM_HQ.distribution} ({err}): "
                       f"{SAM_HQ.install}") from None
    return segment_anything_hq


def build_sam_hq_tiny() -> torch.nn.Module:
    """An HQ-SAM of a few hundred thousand parameters from segment_anything_hq's own modules (random weights;
    tests and offline smoke runs only). Input size 256, embed 32, one global-attention block."""
    _package()
    from segment_anything_hq import modeling

    return build_tiny(modeling, modeling.MaskDecoderHQ, vit_dim=32)


class SamHqGenerator(SamFamilyGenerator):
    """Label maps from HQ-SAM's automatic mask generator (vit_b, vit_l, vit_h, vit_tiny)."""

    family = SAM_HQ
    name = SAM_HQ.name

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        return registry_builders(_package().sam_model_registry, SAM_HQ, build_sam_hq_tiny)

    @staticmethod
    def mask_generator() -> type:
        return _package().SamAutomaticMaskGenerator
