"""Where models run: one rule for SAM, training, evaluation and restore."""

from __future__ import annotations

from rat.shared.errors import ParamError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when torch sees a CUDA device, else "cpu"; "cuda" without one is a ParamError."""
    import torch

    if device not in DEVICES:
        raise ParamError("device", f"{device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", "cuda asked, but torch sees no CUDA device")
    return device
