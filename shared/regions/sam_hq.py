"""HQ-SAM (segment-anything-hq) as a region source: its model types and automatic mask generator.

HQ-SAM adds a high-quality output token and fuses early ViT features into SAM's mask decoder; its package
keeps segment-anything's generator interface (``sam_model_registry``, ``SamAutomaticMaskGenerator``), which
runs here in bounded memory (:mod:`rat.shared.regions.bounded`). Model types vit_b, vit_l, vit_h and the light
vit_tiny (TinyViT encoder, needs timm). ``pip install rat[sam-hq]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType

import torch

from rat.shared.regions.sam_config import SAM_HQ, TEST_MODEL, SamError
from rat.shared.regions.sam_family import SamFamilyGenerator


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
    from segment_anything_hq.modeling import (
        ImageEncoderViT,
        MaskDecoderHQ,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    size, patch, dim = 256, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2,
            out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=0, global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32, vit_dim=dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


class SamHqGenerator(SamFamilyGenerator):
    """Label maps from HQ-SAM's automatic mask generator (vit_b, vit_l, vit_h, vit_tiny)."""

    family = SAM_HQ
    name = SAM_HQ.name

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        registry = _package().sam_model_registry
        builders = {name: partial(registry[name], checkpoint=None)
                    for name in SAM_HQ.model_types if name in registry}
        builders[TEST_MODEL] = build_sam_hq_tiny
        return builders

    @staticmethod
    def mask_generator() -> type:
        return _package().SamAutomaticMaskGenerator
