"""EfficientViT-SAM (the efficientsam package) as a region source: its model types and mask generator.

EfficientViT-SAM replaces SAM's image encoder by an EfficientViT backbone and keeps SAM's prompt encoder and
mask decoder; its package builds the models with ``create_efficientvit_sam_model(name, pretrained=False)``
(random weights, nothing downloaded) and generates masks with ``EfficientViTSamAutomaticMaskGenerator``, a
subclass of SAM's, which runs here in bounded memory (:mod:`rat.shared.regions.bounded`). Model types l0, l1,
l2, xl0, xl1. ``pip install rat-restore[efficientvit-sam]``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from rat.shared.regions.sam_config import EFFICIENTVIT_SAM, TEST_MODEL, SamError
from rat.shared.regions.sam_family import SamFamilyGenerator

if TYPE_CHECKING:
    import torch


def _missing(err: ImportError) -> SamError:
    return SamError(f"the {EFFICIENTVIT_SAM.name} generator needs {EFFICIENTVIT_SAM.distribution} ({err}): "
                    f"{EFFICIENTVIT_SAM.install}")


def build_efficientvit_sam_tiny() -> torch.nn.Module:
    """An EfficientViT-SAM with a two-stage-deep backbone and a one-layer decoder from the efficientsam
    package's own modules (random weights; tests and offline smoke runs only). Input size 256, embed 32."""
    try:
        from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone
        from efficientsam.models.efficientvit.sam import EfficientViTSam, EfficientViTSamImageEncoder, SamNeck
        from efficientsam.models.nn.norm import build_norm
        from efficientsam.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    except ImportError as err:
        raise _missing(err) from None

    dim = 32
    backbone = EfficientViTLargeBackbone(width_list=[8, 8, 16, 16, 32], depth_list=[0, 0, 0, 1, 1])
    neck = SamNeck(fid_list=["stage4", "stage3", "stage2"], in_channel_list=[32, 16, 16], head_width=16,
                   head_depth=1, expand_ratio=1, middle_op="fmb", out_dim=dim)
    encoder = EfficientViTSamImageEncoder(backbone, neck)
    encoder.norm = build_norm("ln2d", dim)   # the package makes it 256 wide, its models' embedding width
    return EfficientViTSam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64),   # the neck's size
                                     input_image_size=(256, 256), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        image_size=(256, 256),
    ).eval()


class EfficientVitSamGenerator(SamFamilyGenerator):
    """Label maps from EfficientViT-SAM's automatic mask generator (l0, l1, l2, xl0, xl1)."""

    family = EFFICIENTVIT_SAM
    name = EFFICIENTVIT_SAM.name

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        try:
            from efficientsam.sam_model_zoo import create_efficientvit_sam_model
        except ImportError as err:
            raise _missing(err) from None
        builders: dict[str, Callable[[], torch.nn.Module]] = {
            name: partial(create_efficientvit_sam_model, f"efficientvit-sam-{name}", pretrained=False)
            for name in EFFICIENTVIT_SAM.model_types if name != TEST_MODEL}
        builders[TEST_MODEL] = build_efficientvit_sam_tiny
        return builders

    @staticmethod
    def mask_generator() -> type:
        try:
            from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator
        except ImportError as err:
            raise _missing(err) from None
        return EfficientViTSamAutomaticMaskGenerator
