"""Compiled blocks: the network's convolution and token blocks through ``torch.compile``, in place.

Regional compilation: each NAFBlock, each MLP and each W-MSA sublayer is compiled on its own (blocks of one
kind and shape share one compiled graph, so the first step compiles a handful of graphs, not the whole
network). Inductor fuses their normalisations, gates, activations, residuals and casts into few kernels,
and chooses what to keep for backward (it recomputes cheap pointwise work instead of storing it).

Region attention stays outside the compiled graphs: its plan is data (a new label map each step), and its
kernels are fused already (``flex`` is compiled once for every plan; ``sparse`` calls PyTorch's fused
attention). Memory policies apply around the compiled blocks: ``recompute`` reruns a compiled block in
backward; ``select`` becomes ``keep`` for them, as Inductor's own choice of what to store does the same.

Outputs and gradients equal the eager model's up to float rounding (tests/training/model/test_compiling.py).
"""

from __future__ import annotations

import torch
from torch import nn

from rat.training.model.attention import WindowAttention
from rat.training.model.nafblock import NAFBlock
from rat.training.model.network import MLP

#: The block types :func:`compile_blocks` compiles.
COMPILED = (NAFBlock, MLP, WindowAttention)


def compile_blocks(model: nn.Module, **options) -> nn.Module:
    """Compile ``model``'s blocks in place (``options``: :func:`torch.compile`'s; default static shapes);
    returns ``model``.

    Works on any module holding RAT blocks; compiling twice is a no-op. The compilation itself happens at
    the first call of each block, and again for a new shape or mode (training, inference): static shapes,
    as a training run has few (the patch at each level, the validation tiles), and symbolic ones fail to
    compile on the CPU in PyTorch 2.14.
    """
    options = {"dynamic": False, **options}
    # a block that fails to compile (a compiler bug on some GPU or version) runs eagerly, with PyTorch's
    # warning saying why, instead of ending the run: compiling changes the speed, never the results
    torch._dynamo.config.suppress_errors = True
    for module in model.modules():
        if isinstance(module, COMPILED) and getattr(module, "_compiled_call_impl", None) is None:
            module.compile(**options)
    model.compiled_blocks = True
    return model
