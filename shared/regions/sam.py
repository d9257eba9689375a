"""Segment Anything as a region source: checkpoint loading, model types, the automatic mask generator.

SAM runs through `segment-anything`'s own `sam_model_registry` and `SamAutomaticMaskGenerator`. We load the
state dict ourselves (`torch.load(..., weights_only=True)`) so that the checkpoint's SHA-256 is computed once
and recorded in the store, and so that a wrong file fails with one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rat.shared.devices import pick_device
from rat.shared.errors import one_line
from rat.shared.hashes import sha256_file
from rat.shared.regions.labels import resolve_rle_masks
from rat.shared.regions.sam_config import (
    PUBLISHED_SHA256,
    SAM_MODEL_TYPES,
    SamError,
    generator_defaults,
    resolve_checkpoint,
)


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


def _builders() -> dict[str, Callable[[], torch.nn.Module]]:
    from segment_anything import sam_model_registry

    builders = {name: partial(sam_model_registry[name], checkpoint=None)
                for name in SAM_MODEL_TYPES if name in sam_model_registry}
    builders["vit_tiny"] = build_sam_tiny
    return builders


def load_sam(checkpoint: str | Path, model_type: str = "vit_b") -> tuple[torch.nn.Module, str]:
    """Build `model_type` and load `checkpoint` into it. Returns (model in eval mode, SHA-256 of the file)."""
    path = Path(checkpoint)
    if model_type not in SAM_MODEL_TYPES:
        raise SamError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(SAM_MODEL_TYPES)}")
    digest = sha256_file(path)
    expected = PUBLISHED_SHA256.get(path.name)
    if expected is not None and digest != expected:
        raise SamError(f"{path}: SHA-256 {digest} differs from the published {expected} "
                       "(corrupt or incomplete download?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise SamError(f"{path}: not a loadable PyTorch state dict ({type(err).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = _builders()[model_type]()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise SamError(f"{path}: not a SAM {model_type} checkpoint ({one_line(err)})") from None
    return model.eval(), digest


class SamGenerator:
    """Label maps from SAM's automatic mask generator (masks kept as RLE, folded into one label map)."""

    name = "sam"

    def __init__(self, checkpoint: str | Path | None = None, model_type: str = "vit_b",
                 device: str = "auto", **params: Any) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        defaults = generator_defaults()
        unknown = set(params) - set(defaults)
        if unknown:
            raise SamError(f"unknown SAM generator parameter(s): {', '.join(sorted(unknown))}")
        self.params = {**defaults, **params}
        if self.params["min_mask_region_area"] > 0:
            try:
                import cv2  # noqa: F401
            except ImportError:
                raise SamError("min_mask_region_area > 0 needs OpenCV: pip install rat[opencv]") from None
        path = resolve_checkpoint(checkpoint)
        model, self.checkpoint_sha256 = load_sam(path, model_type)
        self.model_type = model_type
        self.device = pick_device(device)
        self._generator = SamAutomaticMaskGenerator(
            model.to(self.device), output_mode="uncompressed_rle", **self.params)

    def provenance(self) -> dict[str, Any]:
        """What the store records about this generator (everything that changes its output)."""
        return {"name": self.name, "params": dict(self.params), "model_type": self.model_type,
                "checkpoint_sha256": self.checkpoint_sha256}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) label map, 0 = no mask, 1..L."""
        with torch.inference_mode():
            records = self._generator.generate(rgb)
        return resolve_rle_masks(records, rgb.shape[:2])
