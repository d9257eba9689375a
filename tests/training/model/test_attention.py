"""Region attention backends agree with the paper's dense formulation; window/global modes.

FlexAttention specifics (block tables, the compile cache) are in test_flex.py.
"""

from __future__ import annotations

import pytest
import torch

from rat.training.choices import ATTENTIONS
from rat.training.model.attention import (
    RegionAttention,
    WindowAttention,
    region_attention,
    resolve_backend,
    window_partition,
    window_reverse,
)
from rat.training.model.attention_plan import plan_region_attention, region_ids

SCALE = 8**-0.5
TOL = 1e-4
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blocky(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Spatially coherent label maps: random rectangles painted over each other, (B, h*w)."""
    g = _generator(seed)
    lab = torch.zeros(b, h, w, dtype=torch.int64)
    for i in range(b):
        for r in range(1, 8):
            y0, x0 = torch.randint(0, h - 1, (2,), generator=g).tolist()
            dy, dx = torch.randint(1, h // 2, (2,), generator=g).tolist()
            lab[i, y0 : y0 + dy, x0 : x0 + dx] = r * 11 + i
    return lab.reshape(b, -1)


def _hard_cases() -> dict[str, torch.Tensor]:
    g = _generator(1)
    n = 96
    tiny = torch.arange(n).repeat_interleave(torch.randint(1, 4, (n,), generator=g))[:n]
    mixed = torch.stack([torch.zeros(n, dtype=torch.int64), torch.randint(0, 40, (n,), generator=g)])
    return {
        "random": torch.randint(0, 6, (2, n), generator=g),
        "one region": torch.zeros(2, n, dtype=torch.int64),
        "every token its own region": torch.arange(2 * n).view(2, n),
        "many tiny regions": tiny[torch.randperm(n, generator=g)].view(1, n),
        "different region counts per image": mixed,
        "non-consecutive negative ids": torch.randint(0, 5, (2, n), generator=g) * 1000 - 2500,
        "blocky maps": _blocky(3, 12, 8),
        "uint8 ids": torch.randint(0, 256, (2, n), generator=g).to(torch.uint8),
    }


def _run(labels: torch.Tensor, backend: str, dtype=torch.float32, heads=4, d=8, seed=0, **kw):
    """Output and (q, k, v) gradients under a fixed random upstream gradient."""
    b, n = labels.shape
    g = _generator(seed)
    q, k, v = (torch.randn(b, heads, n, d, generator=g, dtype=dtype).requires_grad_()
               for _ in range(3))
    upstream = torch.randn(b, heads, n, d, generator=g, dtype=dtype)
    plan = plan_region_attention(labels, backend, **kw)
    out = region_attention(q, k, v, plan, SCALE)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    return out.detach(), grads


def _assert_close(a, b, tol=TOL):
    (out_a, grads_a), (out_b, grads_b) = a, b
    torch.testing.assert_close(out_a, out_b, atol=tol, rtol=0)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, atol=tol, rtol=0)


@pytest.mark.parametrize("case", list(_hard_cases()))
def test_sparse_equals_dense_forward_and_backward(case):
    labels = _hard_cases()[case]
    _assert_close(_run(labels, "sparse"), _run(labels, "dense"))


def test_sparse_equals_dense_float64():
    labels = _blocky(2, 16, 16, seed=3)
    _assert_close(_run(labels, "sparse", torch.float64),
                  _run(labels, "dense", torch.float64), tol=1e-10)


def test_sparse_bfloat16_close_to_float32_dense():
    labels = _blocky(1, 16, 16, seed=4)
    out, _ = _run(labels, "sparse", torch.bfloat16)
    ref, _ = _run(labels, "dense", torch.float32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=0)


def test_dense_with_a_mild_lambda_leaks_across_regions():
    # the mask value matters for 'dense' (so the equivalence tests compare real masking)
    labels = _hard_cases()["random"]
    soft, _ = _run(labels, "dense", region_lambda=-1.0)
    hard, _ = _run(labels, "dense")
    assert (soft - hard).abs().max() > 1e-2


def test_size_classes_cover_every_token_once_with_bounded_padding():
    labels = torch.cat([_blocky(2, 16, 12, seed=5), _hard_cases()["random"].reshape(1, 192)])
    plan = plan_region_attention(labels, "sparse")
    t = labels.numel()
    index, order = plan.index.long(), plan.order.long()
    assert index.numel() == sum(c.slots for c in plan.classes)
    assert torch.equal(index[order], torch.arange(t))  # each token's result slot holds it
    assert torch.equal(torch.unique(index), torch.arange(t))  # every token in some slot
    flat = region_ids(labels).reshape(-1)
    _, counts = torch.unique(flat, return_counts=True)
    work = sum(c.regions * c.length**2 for c in plan.classes)
    assert work <= 2**0.5 * (counts**2).sum()  # padding adds at most 41 %
    start, reals = 0, []
    for c in plan.classes:  # every slot of a region holds a token of that region
        slots = flat[index[start : start + c.slots]].view(c.regions, c.length)
        start += c.slots
        assert (slots == slots[:, :1]).all()
        real = torch.ones(c.slots, dtype=torch.bool) if c.mask is None else c.mask[:, 0, 0].reshape(-1)
        reals.append(real)
    reals = torch.cat(reals)
    assert torch.equal(index[reals].sort().values, torch.arange(t))  # each token once as a real slot
    assert bool(reals[order].all())


def test_region_ids_are_unique_across_images_and_keep_order():
    labels = torch.tensor([[5, -2, 5, 7], [0, 0, 3, -2]])
    ids = region_ids(labels)
    assert ids.dtype == torch.int64
    for i in range(2):  # same order within an image
        assert torch.equal(torch.argsort(ids[i], stable=True), torch.argsort(labels[i], stable=True))
    assert not set(ids[0].tolist()) & set(ids[1].tolist())  # no id shared between images
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        region_ids(labels[0])


def test_sparse_saves_no_quadratic_tensor():
    n = 64 * 64
    labels = _blocky(1, 64, 64, seed=6)
    q, k, v = (torch.randn(1, 2, n, 4, requires_grad=True) for _ in range(3))
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    plan = plan_region_attention(labels, "sparse")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = region_attention(q, k, v, plan, SCALE)
    out.sum().backward()
    assert max(sizes) <= 2 * n * 4 * 2  # O(N * heads * d), far below n * n = 16.8M


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sparse", "flex"])
def test_cuda_backends_equal_dense(backend):
    labels = _blocky(2, 32, 32, seed=9).cuda()
    b, n = labels.shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, 8, n, 32, device="cuda", generator=g).requires_grad_()
               for _ in range(3))
    results = []
    for be in ("dense", backend):
        out = region_attention(q, k, v, plan_region_attention(labels, be), SCALE)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v))))
    _assert_close(results[1], results[0], tol=1e-3)  # TF32 matmuls on CUDA


def test_resolve_backend_and_errors():
    assert resolve_backend("auto", torch.device("cpu"), 16) == "sparse"
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("fast", torch.device("cpu"), 16)
    with pytest.raises(ValueError, match="integer"):
        plan_region_attention(torch.zeros(1, 8), "sparse")
    with pytest.raises(ValueError, match="region_lambda"):
        plan_region_attention(torch.zeros(1, 8, dtype=torch.int64), "sparse", region_lambda=-5.0)
    plan = plan_region_attention(torch.zeros(1, 8, dtype=torch.int64), "sparse")
    q = torch.zeros(1, 2, 16, 4)
    with pytest.raises(ValueError, match="plan is for 1 x 8 tokens"):
        region_attention(q, q, q, plan, SCALE)


def test_window_partition_round_trip():
    x = torch.randn(2, 6, 8, 12)
    win = window_partition(x, 4)
    assert win.shape == (2 * 2 * 3, 16, 6)
    assert torch.equal(win[1, 5], x[0, :, 1, 4 + 1])  # window (0, 1), row 1, col 1
    assert torch.equal(window_reverse(win, 4, 2, 8, 12), x)


def _window_labels(b: int, h: int, w: int, window: int) -> torch.Tensor:
    rows = torch.arange(h) // window
    cols = torch.arange(w) // window
    ids = rows[:, None] * w + cols[None, :]
    return ids.expand(b, h, w).reshape(b, -1)


def test_wmsa_and_msa_modes_are_region_attention_with_window_and_single_region_maps():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 12)
    rmsa = RegionAttention(16, heads=4, mode="rmsa")
    for mode, labels in [("wmsa", _window_labels(2, 8, 12, 4)),
                         ("msa", torch.zeros(2, 96, dtype=torch.int64))]:
        other = RegionAttention(16, heads=4, mode=mode)
        other.load_state_dict(rmsa.state_dict())
        expected = rmsa(x, plan_region_attention(labels, "dense"))
        torch.testing.assert_close(other(x), expected, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="needs a region plan"):
        rmsa(x)


def test_window_attention_is_region_attention_over_windows():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 8)
    wa = WindowAttention(16, heads=4, window=4)
    ra = RegionAttention(16, heads=4)
    # the same projections as 1x1 convs
    ra.qkv.weight.data = wa.qkv.weight.data[:, :, None, None].clone()
    ra.qkv.bias.data = wa.qkv.bias.data.clone()
    ra.project_out.weight.data = wa.proj_out.weight.data[:, :, None, None].clone()
    ra.project_out.bias.data = wa.proj_out.bias.data.clone()
    plan = plan_region_attention(_window_labels(1, 8, 8, 4), "sparse")
    torch.testing.assert_close(wa(x), ra(x, plan), atol=TOL, rtol=0)


def test_attention_modes_are_the_options():
    assert ATTENTIONS == ("rmsa", "wmsa", "msa")
    with pytest.raises(ValueError, match="unknown attention mode 'swin'"):
        RegionAttention(16, heads=4, mode="swin")
