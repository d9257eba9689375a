"""Segment Anything (segment-anything) as a region source: its model types and automatic mask generator.

SAM runs through segment-anything's own ``sam_model_registry`` and ``SamAutomaticMaskGenerator`` (in bounded
memory, :mod:`rat.shared.regions.bounded`); checkpoints are loaded and checked by
:class:`~rat.shared.regions.sam_family.SamFamilyGenerator`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from rat.shared.regions.sam_config import SAM, TEST_MODEL
from rat.shared.regions.sam_family import SamFamilyGenerator


def build_sam_tiny() -> torch.nn.Module:
    """A SAM of a few hundred thousand parameters built from segment_anything's own modules.

    For tests and offline smoke runs only (random weights give meaningless masks); the whole generation
    path (prompt grid, decoder, NMS, RLE, post-processing) is the real one. Input size 256, embed 32.
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
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
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


class SamGenerator(SamFamilyGenerator):
    """Label maps from segment-anything's automatic mask generator (vit_b, vit_l, vit_h)."""

    family = SAM
    name = SAM.name

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        from segment_anything import sam_model_registry

        builders = {name: partial(sam_model_registry[name], checkpoint=None)
                    for name in SAM.model_types if name in sam_model_registry}
        builders[TEST_MODEL] = build_sam_tiny
        return builders

    @staticmethod
    def mask_generator() -> type:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator


def load_sam(checkpoint: str | Path, model_type: str = "vit_b") -> tuple[torch.nn.Module, str]:
    """Build SAM ``model_type`` and load ``checkpoint`` into it. Returns (model in eval mode, SHA-256)."""
    return SamGenerator.load_model(checkpoint, model_type)
