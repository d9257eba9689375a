"""A SAM-family automatic mask generator in bounded memory: the package's own masks, post-processed in parts.

The packages' generators decode ``points_per_batch`` prompts at once and then, in ``_process_batch``, upsample
all their masks (3 per prompt) to the crop's full resolution before they threshold, score, box and run-length
encode them: on a 3249 x 3249 image, 64 prompts make 192 float masks of 42 MB each (14.7 GiB peak measured).

:func:`bounded` derives a class from the package's generator class that

1. decodes the whole batch with one call of the package's predictor, its upsampling deferred, keeping the
   (B, C, 256, 256) low-resolution logits and (B, C) predicted IoUs: the prompt decoder keeps its batch;
2. runs the package's own ``_process_batch`` on consecutive parts of the batch, as many prompts per part as
   ``max_memory`` allows (at least one), serving each part the logits the decoder made for it, upsampled by
   the package's model.

Every step of ``_process_batch`` treats masks one by one and keeps their order (filters, stability scores,
thresholds, boxes, RLE), and upsampling treats each mask alone, so the parts put end to end are what the
package makes of the whole batch, RLE for RLE, in the same order. The test compares them on images,
parameter sets and crop layers of every family.

What ``max_memory`` bounds, and what it does not: the post-processing of each batch of masks, and on the
CPU the encoder's attention (below). Not the model's weights, not the image encoder on CUDA, and not the
prompt decoder's own batch (the image embedding repeated per prompt, its upscaled features, HQ-SAM's
high-resolution features), which ``points_per_batch`` sets. A budget below one prompt's masks cannot be kept:
the parts then hold one prompt each, and a warning says so once (:func:`budget_note`).

The ViT image encoders (SAM, HQ-SAM) hold every head's (N, N) attention matrix at once, 2-3 times over while
the relative positions are added: 2.3 GiB on the CPU at ViT-B's 64 x 64 tokens. :func:`bound_attention`
makes their attention layers compute a few heads at a time within a quarter of ``max_memory``: the same
products of the same slices, so the same embeddings (the generators do it on the CPU, where host memory is
the limit and batched and sliced matrix products agree bit for bit).
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from rat.shared.errors import ParamError
from rat.shared.regions.sam_config import DEFAULT_MAX_MEMORY

if TYPE_CHECKING:
    import torch

#: Bytes per pixel of the crop that one mask takes while a part is post-processed: float logits and their
#: filtered copy, the stability score's comparisons, the thresholded mask, its transpose and run boundaries
#: (about 19 measured on 3249 x 3249 images), with room for what the image itself holds meanwhile.
BYTES_PER_PIXEL = 24
#: Bytes per pixel of the intermediate upsampling at the model's input size (1024 x 1024 float).
INPUT_BYTES_PER_PIXEL = 4
#: Masks the generators make per prompt (multimask output).
MASKS_PER_PROMPT = 3

log = logging.getLogger(__name__)


def prompt_bytes(masks_per_prompt: int, crop_shape: tuple[int, int] | None, input_size: int = 1024) -> int:
    """Bytes the post-processing of one prompt's masks takes (``crop_shape`` None: at the input size only,
    the least for any image)."""
    crop = 0 if crop_shape is None else BYTES_PER_PIXEL * crop_shape[0] * crop_shape[1]
    return max(1, masks_per_prompt) * (crop + INPUT_BYTES_PER_PIXEL * input_size ** 2)


def prompts_per_part(max_memory: int, masks_per_prompt: int, crop_shape: tuple[int, int],
                     input_size: int = 1024) -> int:
    """How many prompts one part post-processes within ``max_memory`` bytes (at least one)."""
    return max(1, int(max_memory) // prompt_bytes(masks_per_prompt, crop_shape, input_size))


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def budget_note(max_memory: int, masks_per_prompt: int, crop_shape: tuple[int, int] | None,
                input_size: int = 1024) -> str | None:
    """A warning when ``max_memory`` is below one prompt's masks (on a crop of ``crop_shape``; None: at the
    model's input size alone, for any image), else None."""
    need = prompt_bytes(masks_per_prompt, crop_shape, input_size)
    if max_memory >= need:
        return None
    where = (f"{crop_shape[0]} x {crop_shape[1]} image" if crop_shape is not None
             else f"model's {input_size} x {input_size} input alone, before any image")
    return (f"warning: --max-memory {_size(max_memory)} is below what one prompt's {masks_per_prompt} masks "
            f"take ({_size(need)} on a {where}): each part holds one prompt, and post-processing takes "
            "more than the budget")


def _no_upsampling(masks: torch.Tensor, input_size: Any, original_size: Any) -> torch.Tensor:
    """Stands in for the model's ``postprocess_masks`` while decoding: nothing is made at full resolution."""
    return masks[..., :0, :0]


@contextmanager
def _upsampling_deferred(model: torch.nn.Module) -> Iterator[None]:
    model.postprocess_masks = _no_upsampling      # an instance attribute shadows the class's method
    try:
        yield
    finally:
        del model.postprocess_masks


@contextmanager
def _serving(predictor: Any, low_res: torch.Tensor, iou: torch.Tensor) -> Iterator[None]:
    """The predictor answers its next ``predict_torch`` calls with these decoded masks, upsampled."""

    def predict_torch(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks = predictor.model.postprocess_masks(low_res, predictor.input_size, predictor.original_size)
        return masks, iou, low_res

    predictor.predict_torch = predict_torch
    try:
        yield
    finally:
        del predictor.predict_torch


class BoundedMemory:
    """Mixin before a package's automatic mask generator class (see the module doc). ``max_memory``: bytes."""

    max_memory: int = DEFAULT_MAX_MEMORY
    _warned: bool = False

    def _note_budget(self, crop_shape: tuple[int, int] | None, masks_per_prompt: int = MASKS_PER_PROMPT
                     ) -> None:
        """Warn, once per generator, when the budget is below one prompt's masks."""
        if self._warned:
            return
        input_size = int(getattr(self.predictor.model.image_encoder, "img_size", 1024))
        note = budget_note(self.max_memory, masks_per_prompt, crop_shape, input_size)
        if note:
            log.warning(note)
            self._warned = True

    def _decode(self, points: np.ndarray, im_size: tuple[int, ...], multimask_output: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) low-resolution mask logits and (B, C) predicted IoUs of the (B, 2) prompts ``points``,
        prompted as the package's ``_process_batch`` prompts them."""
        import torch

        predictor = self.predictor
        coords = torch.as_tensor(predictor.transform.apply_coords(points, im_size), device=predictor.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
        with _upsampling_deferred(predictor.model):
            _, iou, low_res = predictor.predict_torch(coords[:, None, :], labels[:, None],
                                                      multimask_output=multimask_output, return_logits=True)
        return low_res, iou

    def _process_batch(self, points: np.ndarray, im_size: tuple[int, ...], crop_box: list[int],
                       orig_size: tuple[int, ...], *args: Any) -> Any:
        low_res, iou = self._decode(points, im_size, *args)
        self._note_budget(tuple(im_size), low_res.shape[1])
        step = prompts_per_part(self.max_memory, low_res.shape[1], tuple(im_size))
        parts = []
        for start in range(0, len(points), step):
            part = slice(start, start + step)
            with _serving(self.predictor, low_res[part], iou[part]):
                parts.append(super()._process_batch(points[part], im_size, crop_box, orig_size, *args))
        return parts[0] if len(parts) == 1 else _joined(parts)


def _attention_in_parts(self: torch.nn.Module, x: torch.Tensor, max_memory: int) -> torch.Tensor:
    """The forward of segment-anything's (and HQ-SAM's) ViT ``Attention`` over slices of its batch x heads:
    (B, H, W, C) -> (B, H, W, C), each slice's product, relative positions, softmax and values as the package
    computes them for all at once."""
    import torch

    rel_pos = sys.modules[type(self).__module__].add_decomposed_rel_pos   # the package's own
    B, H, W, _ = x.shape
    qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)         # (B * heads, N, d)
    out = torch.empty_like(q)
    step = max(1, max_memory // (3 * q.element_size() * (H * W) ** 2))     # (N, N) product + 2 temporaries
    for start in range(0, q.shape[0], step):
        part = slice(start, start + step)
        attn = (q[part] * self.scale) @ k[part].transpose(-2, -1)            # (step, N, N)
        if self.use_rel_pos:
            attn = rel_pos(attn, q[part], self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        out[part] = attn.softmax(dim=-1) @ v[part]
    x = out.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
    return self.proj(x)


def bound_attention(model: torch.nn.Module, max_memory: int = DEFAULT_MAX_MEMORY) -> int:
    """Make the ViT attention layers of ``model``'s image encoder (SAM's and HQ-SAM's ``Attention``) work
    within a quarter of ``max_memory``. Returns how many layers; other encoders (TinyViT, EfficientViT) are
    left as they are."""
    layers = [m for m in model.image_encoder.modules()
              if type(m).__name__ == "Attention" and hasattr(m, "rel_pos_h")
              and hasattr(sys.modules[type(m).__module__], "add_decomposed_rel_pos")]
    for layer in layers:
        layer.forward = types.MethodType(lambda self, x: _attention_in_parts(self, x, max_memory // 4), layer)
    return len(layers)


def _joined(parts: list[Any]) -> Any:
    """The package's MaskData of consecutive parts put end to end (no copies of the RLE lists, which the
    package's own ``MaskData.cat`` deep-copies)."""
    import torch

    joined = {}
    for key, first in parts[0].items():
        values = [p[key] for p in parts]
        if isinstance(first, torch.Tensor):
            joined[key] = torch.cat(values)
        elif isinstance(first, np.ndarray):
            joined[key] = np.concatenate(values)
        else:
            joined[key] = [item for value in values for item in value]
    return type(parts[0])(**joined)


def bounded(generator_class: type, max_memory: int = DEFAULT_MAX_MEMORY) -> type:
    """``generator_class`` (a package's automatic mask generator) post-processing within ``max_memory``."""
    if not isinstance(max_memory, int) or max_memory <= 0:
        raise ParamError("max_memory", f"{max_memory!r}: a positive number of bytes")
    return type(f"Bounded{generator_class.__name__}", (BoundedMemory, generator_class),
                {"max_memory": max_memory, "__module__": __name__})
