"""The SAM family as region sources: checkpoints, model types, the package's own generator in bounded memory.

A :class:`SamFamilyGenerator` subclass names its :class:`~rat.shared.regions.sam_config.SamFamily`, how to
build each model type (the package's own builders, random weights) and the package's automatic mask
generator class. We load the state dict ourselves (``torch.load(..., weights_only=True)``) so that the
checkpoint's SHA-256 is computed once and recorded in the store, and so that a missing, wrong or mismatched
file fails with one line instead of a traceback. The package's generator runs through
:func:`~rat.shared.regions.bounded.bounded`: its own masks, post-processed within ``max_memory``, and the
image encoder's attention, on the CPU, within a quarter of it
(:func:`~rat.shared.regions.bounded.bound_attention`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rat.shared.devices import pick_device
from rat.shared.errors import one_line, unsafe_pickle
from rat.shared.hashes import sha256_file
from rat.shared.regions.bounded import bound_attention, bounded
from rat.shared.regions.labels import resolve_rle_masks
from rat.shared.regions.sam_config import (
    DEFAULT_MAX_MEMORY,
    TEST_MODEL,
    SamError,
    SamFamily,
    check_model_type,
    check_values,
    generator_defaults,
    resolve_checkpoint,
)

if TYPE_CHECKING:
    import torch


def build_tiny(modeling: Any, decoder: type, **decoder_args: Any) -> torch.nn.Module:
    """A SAM-family model of a few hundred thousand parameters built from a package's own ``modeling``
    modules, with its mask ``decoder`` class (random weights; tests and offline smoke runs only: the whole
    generation path is the real one). Input size 256, embed 32, one global-attention block."""
    import torch

    size, patch, dim = 256, 16, 32
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2,
            out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=0, global_attn_indexes=(0,),
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size), mask_in_chans=4,
        ),
        mask_decoder=decoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32, **decoder_args,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def registry_builders(registry: dict[str, Callable[..., torch.nn.Module]], family: SamFamily,
                      tiny: Callable[[], torch.nn.Module]) -> dict[str, Callable[[], torch.nn.Module]]:
    """Model builders of a package whose ``sam_model_registry`` builds each model type without weights
    (``checkpoint=None``; the weights are loaded and checked here), plus the test-only tiny model."""
    builders = {name: partial(registry[name], checkpoint=None)
                for name in family.model_types if name in registry}
    return {**builders, TEST_MODEL: tiny}


def read_state_dict(path: Path, family: SamFamily) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, SHA-256) of a checkpoint file; refused when a published name has another hash."""
    import torch

    digest = sha256_file(path)
    expected = family.published.get(path.name)
    if expected is not None and digest != expected:
        raise SamError(f"{path}: SHA-256 {digest} differs from the published {expected} "
                       "(corrupt or incomplete download?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the file's fault
        unsafe = unsafe_pickle(err)
        if unsafe:
            raise SamError(f"{path}: {unsafe}") from None
        raise SamError(f"{path}: not a loadable PyTorch state dict ({type(err).__name__})") from None
    for key in ("model", "state_dict"):    # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SamError(f"{path}: not a state dict ({type(state).__name__})")
    return state, digest


def mismatch(model: torch.nn.Module, state: dict[str, Any]) -> str:
    """What keeps ``state`` from loading into ``model``, in a few words."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensors of other shapes, e.g. {k} {list(state[k].shape)} where the "
                     f"model has {list(own[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} of the model's tensors missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    return "; ".join(parts) or "the tensors do not load"


class SamFamilyGenerator:
    """Label maps from a SAM-family package's automatic mask generator (masks kept as RLE, folded into one
    label map). Subclasses set ``family`` and implement :meth:`model_builders` and :meth:`mask_generator`."""

    family: ClassVar[SamFamily]
    name: ClassVar[str]
    #: The family's parameters are options of their own names (--points-per-side), shared by its members.
    option_prefix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The optional parts of the generator contract (:mod:`rat.shared.regions`), from the family."""
        super().__init_subclass__(**kwargs)
        family = cls.family
        install = f"; {family.install}" if family.extra else ""
        cls.summary = f"{family.label}, {family.distribution}'s automatic mask generator{install}"
        cls.weights_label = family.label
        cls.model_types = tuple(t for t in family.model_types if t != TEST_MODEL)
        cls.default_model_type = family.default_model_type

    @staticmethod
    def model_builders() -> dict[str, Callable[[], torch.nn.Module]]:
        """Model type -> a function that builds that model with random weights (imports the package)."""
        raise NotImplementedError

    @staticmethod
    def mask_generator() -> type:
        """The package's automatic mask generator class (imports the package)."""
        raise NotImplementedError

    @classmethod
    def checkpoint_path(cls, checkpoint: str | Path | None) -> Path:
        """The checkpoint file from the argument or RAT_SAM_CHECKPOINT (one-line errors naming the files)."""
        return resolve_checkpoint(checkpoint, cls.family)

    @classmethod
    def load_model(cls, checkpoint: str | Path, model_type: str | None = None
                   ) -> tuple[torch.nn.Module, str]:
        """Build ``model_type`` and load ``checkpoint`` into it. Returns (model in eval mode, SHA-256)."""
        family = cls.family
        model_type = model_type or family.default_model_type
        check_model_type(model_type, family)
        path = Path(checkpoint)
        state, digest = read_state_dict(path, family)
        model = cls.model_builders()[model_type]()
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError, KeyError) as err:
            reason = mismatch(model, state) if isinstance(state, dict) else one_line(err)
            raise SamError(f"{path}: not a {family.label} {model_type} checkpoint ({reason})") from None
        return model.eval(), digest

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        """The package generator's parameters and defaults (taken as ``**params``)."""
        return generator_defaults(cls.family)

    def __init__(self, checkpoint: str | Path | None = None, model_type: str | None = None,
                 device: str = "auto", max_memory: int = DEFAULT_MAX_MEMORY, **params: Any) -> None:
        family = self.family
        defaults = generator_defaults(family)
        unknown = set(params) - set(defaults)
        if unknown:
            raise SamError(f"unknown {family.label} generator parameter(s): {', '.join(sorted(unknown))}")
        self.params = {**defaults, **params}
        check_values(self.params)
        if self.params["min_mask_region_area"] > 0:
            try:
                import cv2  # noqa: F401
            except ImportError:
                raise SamError("min_mask_region_area > 0 needs OpenCV: pip install rat-restore[opencv]"
                               ) from None
        self.model_type = model_type or family.default_model_type
        check_model_type(self.model_type, family)
        generator_class = bounded(self.mask_generator(), max_memory)
        model, self.checkpoint_sha256 = self.load_model(self.checkpoint_path(checkpoint), self.model_type)
        self.device = pick_device(device)
        if self.device == "cpu":      # host memory; on CUDA the encoder runs as the package has it
            bound_attention(model, max_memory)
        self._generator = generator_class(model.to(self.device), output_mode="uncompressed_rle",
                                          **self.params)
        self._generator._note_budget(None)       # a budget below any image's masks: said at once

    def provenance(self) -> dict[str, Any]:
        """What the store records about this generator (everything that changes its output)."""
        family = self.family
        return {"name": self.name, "package": family.distribution,
                "version": importlib.metadata.version(family.distribution), "model_type": self.model_type,
                "checkpoint_sha256": self.checkpoint_sha256, "params": dict(self.params)}

    def records(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        """The package generator's records (uncompressed-RLE masks) for an (H, W, 3) uint8 image."""
        import torch

        with torch.inference_mode():
            return self._generator.generate(rgb)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) label map, 0 = no mask, 1..L."""
        return resolve_rle_masks(self.records(rgb), rgb.shape[:2])
