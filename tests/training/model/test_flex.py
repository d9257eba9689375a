"""The ``flex`` backend: block tables without (blocks x blocks) work, one compilation for all
shapes and label maps, and agreement with the dense formulation (forward on CPU; CUDA for the
backward pass)."""

from __future__ import annotations

import shutil

import pytest
import torch

from rat.training.model import flex
from rat.training.model.attention import region_attention
from rat.training.model.attention_plan import plan_region_attention, region_ids, sorted_regions

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not flex.available(), reason="needs FlexAttention (PyTorch >= 2.6)")]
compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                              reason="torch.compile on CPU needs a C++ compiler")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SCALE = 8**-0.5


def _blobs(b: int, h: int, w: int, regions: int, seed: int) -> torch.Tensor:
    """Label maps of nearest-seed regions (spatially coherent, varied sizes), (B, h * w)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for _ in range(b):
        seeds = torch.rand(regions, 2, generator=g) * torch.tensor([h, w])
        d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        out.append(d.argmin(-1).reshape(-1))
    return torch.stack(out)


def _sorted_seg(labels: torch.Tensor, block: int) -> torch.Tensor:
    """Sorted region numbers, padded as the plan pads them (one region per padding block)."""
    _, seg, counts, _ = sorted_regions(region_ids(labels))
    t = seg.numel()
    tp = flex.padded_blocks(t, block, dynamic=True) * block
    return torch.cat([seg, counts.numel() + torch.arange(t, tp) // block - t // block])


def _dense_from_table(num: torch.Tensor, idx: torch.Tensor, nb: int) -> torch.Tensor:
    out = torch.zeros(nb, nb, dtype=torch.bool)
    for qb in range(nb):  # tiny test-side loop to read the table
        out[qb, idx[0, 0, qb, : num[0, 0, qb]].long()] = True
    return out


def _block_sets(num: torch.Tensor, idx: torch.Tensor) -> list[set[int]]:
    """The key blocks each query block lists: {indices[:count]} per row."""
    return [set(idx[0, 0, qb, : num[0, 0, qb]].tolist()) for qb in range(num.shape[-1])]


def _reference_mask(seg: torch.Tensor, block: int):
    """FlexAttention's own block mask of the same-region relation (full-width tables, on the CPU)."""
    def same_region(b, h, q_idx, kv_idx):
        return seg[q_idx] == seg[kv_idx]

    n = seg.numel()
    return flex._module().create_block_mask(same_region, 1, 1, n, n, device="cpu", BLOCK_SIZE=block)


def _maps(block: int) -> dict[str, torch.Tensor]:
    """Token label maps (B, N) of every shape of block table: blobs whose large regions hold full
    blocks in several query blocks (rows with more full than partial blocks and the reverse), one
    region, a region per token, token counts that leave padding."""
    row = torch.arange(4 * block)
    return {
        "blobs": _blobs(2, 24, 20, regions=9, seed=0),
        "large blobs": _blobs(3, 32, 32, regions=5, seed=1),
        "many small": _blobs(2, 16, 24, regions=60, seed=2),
        "one region": torch.zeros(1, 5 * block, dtype=torch.int64),
        "region per token": torch.arange(3 * block).view(1, -1),
        "padding": _blobs(1, 13, 11, regions=3, seed=3),
        "big and small": torch.where(row < 3 * block + 5, 0, row).view(1, -1),
    }


@pytest.mark.parametrize("block", [16, flex.FLEX_BLOCK])
@pytest.mark.parametrize("compact", [False, True])
def test_block_tables_equal_flexattentions_own_block_mask(compact, block):
    seen = {"full rows": 0, "partial wider": 0, "full wider": 0}
    for name, labels in _maps(block).items():
        seg = _sorted_seg(labels, block)
        ref = _reference_mask(seg, block)
        num, idx, full_num, full_idx = flex.block_tables(seg, block, compact)
        # partial and full tables of one width, hence one stride (PyTorch < 2.12 reads both with one)
        assert idx.shape == full_idx.shape and idx.stride() == full_idx.stride(), name
        nb = seg.numel() // block
        assert idx.shape[-1] == (max(2, int(num.max()), int(full_num.max())) if compact else nb), name
        assert int(idx.min()) >= 0 and int(idx.max()) < nb and int(full_idx.max()) < nb, name
        for ours, theirs in (((num, idx), (ref.kv_num_blocks, ref.kv_indices)),
                             ((full_num, full_idx), (ref.full_kv_num_blocks, ref.full_kv_indices)),
                             ((num, idx), (ref.q_num_blocks, ref.q_indices)),  # symmetric relation:
                             ((full_num, full_idx), (ref.full_q_num_blocks, ref.full_q_indices))):
            assert _block_sets(*ours) == _block_sets(*theirs), name
        seen["full rows"] += int((full_num > 0).sum()) > 1
        seen["partial wider"] += bool((num > full_num).any() & (full_num > 0).any())
        seen["full wider"] += bool((full_num > num).any())
    assert all(seen.values()), seen  # every kind of row was compared


def test_plan_tables_of_one_stride_in_both_layouts():
    labels = _blobs(2, 40, 48, regions=6, seed=4)
    for compact in (False, True):
        ids = region_ids(labels)
        perm, seg, counts, _ = sorted_regions(ids)
        mask = flex.flex_plan(2, perm, seg, counts, compact=compact).block_mask
        tables = (mask.kv_indices, mask.full_kv_indices, mask.q_indices, mask.full_q_indices)
        assert len({t.stride() for t in tables}) == 1 and len({t.shape for t in tables}) == 1
        tp = flex.padded_blocks(seg.numel(), flex.FLEX_BLOCK, dynamic=False) * flex.FLEX_BLOCK
        assert mask.seq_lengths == (tp, tp)


def test_compact_tables_grow_with_the_blocks_not_their_square():
    # one 1024 x 1024 latent (a 4096 x 4096 image in one pass): 8192 blocks of 128 tokens
    coarse = _blobs(1, 128, 128, regions=200, seed=1).view(1, 128, 128)
    labels = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2).reshape(1, -1)
    seg = _sorted_seg(labels, flex.FLEX_BLOCK)
    nb = seg.numel() // flex.FLEX_BLOCK
    num, idx, full_num, full_idx = flex.block_tables(seg, flex.FLEX_BLOCK, compact=True)
    assert nb == 8192
    largest = int(torch.bincount(seg).max()) // flex.FLEX_BLOCK + 1  # blocks of the largest region
    assert max(idx.shape[-1], full_idx.shape[-1]) <= 2 * largest + 2  # not 8192
    assert idx.numel() + full_idx.numel() < nb * nb / 10  # one width for both tables


def test_padding_to_whole_blocks():
    assert [flex.padded_blocks(t, 128, dynamic=True) for t in (1, 512, 513, 2400)] == [4, 4, 5, 19]
    assert [flex.padded_blocks(t, 128, dynamic=False) for t in (1, 513, 2400, 4096)] == [4, 8, 32, 32]


def test_plan_layout_round_trips_and_padding_blocks_attend_only_to_themselves():
    labels = _blobs(3, 10, 7, regions=4, seed=2)  # 210 tokens -> 4 blocks of 128 (the minimum)
    plan = plan_region_attention(labels, "flex")
    t = labels.numel()
    assert plan.perm.numel() == plan.seg.numel() == 512
    assert torch.equal(plan.perm[plan.inverse], torch.arange(t))
    ids = region_ids(labels).reshape(-1)[plan.perm[:t]]
    assert bool((ids[1:] >= ids[:-1]).all())  # sorted by (image, region)
    assert plan.block_mask.seq_lengths == (512, 512)
    mask = plan.block_mask
    assert mask.kv_num_blocks[0, 0, 2:].tolist() == [0, 0]  # padding blocks 2 and 3: no
    assert mask.full_kv_num_blocks[0, 0, 2:].tolist() == [1, 1]  # partial pairs, one full
    assert mask.full_kv_indices[0, 0, 2:, 0].tolist() == [2, 3]  # block: themselves


def test_flex_on_cpu_refuses_training():
    labels = _blobs(1, 8, 8, regions=3, seed=3)
    q, k, v = (torch.randn(1, 2, 64, 16, requires_grad=True) for _ in range(3))
    with pytest.raises(ValueError, match="no backward pass on CPU"):
        region_attention(q, k, v, plan_region_attention(labels, "flex"), SCALE)


def _flex_vs_dense(labels: torch.Tensor, heads: int, seed: int, device: str = "cpu") -> None:
    b, n = labels.shape
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(b, heads, n, 16, generator=g, device=device) for _ in range(3))
    with torch.no_grad():
        out = region_attention(q, k, v, plan_region_attention(labels, "flex"), SCALE)
        dense = region_attention(q, k, v, plan_region_attention(labels, "dense"), SCALE)
    torch.testing.assert_close(out, dense, atol=1e-4, rtol=0)


# (batch, h, w, regions): token counts 210, 512, 1400, 1600, 4096 with new label maps each
SHAPES = [(3, 10, 7, 4), (2, 16, 16, 9), (1, 35, 40, 30), (1, 40, 40, 7), (4, 32, 32, 12)]


@pytest.mark.slow
@compiler
def test_cpu_compilations_one_per_power_of_two_blocks():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()                 # forget what other tests compiled: every first size compiles here
    flex.compiled.cache_clear()
    compiled_sizes: set[int] = set()
    for i, (b, h, w, regions) in enumerate(SHAPES):
        before = counters["stats"]["unique_graphs"]
        _flex_vs_dense(_blobs(b, h, w, regions, seed=10 + i), heads=2, seed=i)
        size = flex.padded_blocks(b * h * w, flex.FLEX_BLOCK, dynamic=False)
        new = counters["stats"]["unique_graphs"] - before
        # 210 and 512 tokens share 4 blocks, 1400 and 1600 share 16: new label maps, no new kernel
        assert new == (size not in compiled_sizes), (i, new)
        compiled_sizes.add(size)


@cuda
@pytest.mark.gpu
def test_cuda_one_compilation_serves_every_token_count_and_label_map():
    from torch._dynamo.utils import counters

    _flex_vs_dense(_blobs(*SHAPES[0], seed=9).cuda(), heads=2, seed=0, device="cuda")  # compiles
    before = counters["stats"]["unique_graphs"]
    for i, (b, h, w, regions) in enumerate(SHAPES[1:]):
        _flex_vs_dense(_blobs(b, h, w, regions, seed=20 + i).cuda(), heads=2, seed=i, device="cuda")
    assert counters["stats"]["unique_graphs"] == before


@cuda
@pytest.mark.gpu
def test_cuda_flex_trains_like_dense_with_compact_tables():
    labels = _blobs(2, 40, 48, regions=15, seed=4).cuda()
    plan = plan_region_attention(labels, "flex")
    assert plan.block_mask.kv_indices.shape[-1] < plan.seg.numel() // flex.FLEX_BLOCK
    b, n = labels.shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, 8, n, 32, device="cuda", generator=g).requires_grad_()
               for _ in range(3))
    results = []
    for p in (plan_region_attention(labels, "dense"), plan):
        out = region_attention(q, k, v, p, SCALE)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v))))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-3, rtol=0)
    for a, r in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, r, atol=1e-3, rtol=0)
