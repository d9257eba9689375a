"""bf16 autocast (the trainer's default on CUDA), checked on CPU against float32.

Stated tolerance, for every backend that runs on CPU (dense, sparse; flex forward only):
outputs within 1 % relative L2 error of float32; gradients within 5 % relative L2 error over
all parameters (or q, k, v) together, and every parameter's gradient at cosine similarity
>= 0.95 with its float32 value. bf16 keeps 8 significant bits (relative rounding 2^-9), so
these are a few roundings deep; measured: outputs 0.2-0.3 %, gradients 0.6-1.8 %, cosine >= 0.99
but for the first block's LayerNorm bias (0.975 on one thread: its gradient, a sum over every pixel,
nearly cancels).
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import lively

from rat.training.loss import focal_region_loss
from rat.training.model import flex
from rat.training.model.attention import region_attention
from rat.training.model.attention_plan import plan_region_attention
from rat.training.model.network import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
OUT_TOL, GRAD_TOL, MIN_COSINE = 1e-2, 5e-2, 0.95


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.float().flatten() for t in tensors])


def _labels(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 6, (b, 1, h // 4 + 1, w // 4 + 1), generator=g).float()
    return F.interpolate(coarse, scale_factor=4, mode="nearest")[:, 0, :h, :w].long()


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("policy", ["none", "selective"])
def test_model_under_bf16_autocast_stays_close_to_float32(backend, policy):
    torch.manual_seed(0)
    model = build_model("rat-small", backend=backend, memory=policy)
    g = torch.Generator().manual_seed(1)
    lively(model, generator=g)  # the zero-initialised branch scales awake; g goes on below
    x = torch.randn(2, 1, 32, 48, generator=g)
    labels = _labels(2, 32, 48, seed=2)
    results = []
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = model(x, labels)
        focal_region_loss(y.float(), x, labels).backward()  # the loss in float32, as the trainer
        results.append((y.detach(), [p.grad for p in model.parameters()]))
    (y32, g32), (y16, g16) = results
    assert _rel(y16, y32) < OUT_TOL
    assert _rel(_flat(g16), _flat(g32)) < GRAD_TOL
    for a, b in zip(g16, g32, strict=True):
        if b.norm() > 0:
            assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > MIN_COSINE


def _kernel(backend: str, dtype: torch.dtype, grad: bool = True):
    labels = _labels(2, 16, 32, seed=3).reshape(2, -1)
    b, n = labels.shape
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(b, 8, n, 32, generator=g).to(dtype).requires_grad_(grad) for _ in range(3))
    upstream = torch.randn(b, 8, n, 32, generator=g).to(dtype)
    out = region_attention(q, k, v, plan_region_attention(labels, backend), 8**-0.5)
    grads = torch.autograd.grad(out, (q, k, v), upstream) if grad else ()
    return out.detach(), grads


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_region_attention_kernels_in_bf16(backend):
    out32, g32 = _kernel(backend, torch.float32)
    out16, g16 = _kernel(backend, torch.bfloat16)
    assert out16.dtype == torch.bfloat16
    assert _rel(out16, out32) < OUT_TOL
    assert _rel(_flat(g16), _flat(g32)) < GRAD_TOL


@pytest.mark.slow
@pytest.mark.skipif(not flex.available(), reason="needs FlexAttention (PyTorch >= 2.6)")
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_flex_forward_in_bf16():
    with torch.no_grad():
        out32, _ = _kernel("dense", torch.float32, grad=False)
        out16, _ = _kernel("flex", torch.bfloat16, grad=False)
    assert out16.dtype == torch.bfloat16
    assert _rel(out16, out32) < OUT_TOL
