"""``--backend auto`` (rat.training.model.attention): flex on CUDA only once it has matched sparse on the
device, else sparse with one warning line saying why.

The check runs on the CPU here with the kernel injected (flex compiles and trains on CUDA only): a flex that
fails, computes other values or gives non-finite ones falls back; a kernel with the right outputs and wrong
gradients is caught (``dense``, which trains on the CPU, stands in for flex there). The tests marked ``gpu``
run the real check on CUDA.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from rat.training.model import attention, flex
from rat.training.model.attention import auto_backend, check_backend, resolve_backend
from rat.training.model.attention_plan import plan_region_attention
from rat.training.model.network import build_model

pytestmark = [pytest.mark.usefixtures("one_thread", "fresh"),
              pytest.mark.skipif(not flex.available(), reason="needs FlexAttention (PyTorch >= 2.6)"),
              pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CPU = torch.device("cpu")
D = 16  # channels per head
LOGGER = "rat.training.model.attention"


@pytest.fixture
def fresh(monkeypatch):
    """No decision of ``auto`` taken yet in this process."""
    monkeypatch.setattr(attention, "_AUTO", {})


def eager(dynamic: bool):
    """FlexAttention without compiling (forward only on the CPU): what the compiled kernel computes."""
    return flex._module().flex_attention


def counted(monkeypatch) -> list:
    calls: list = []
    real = attention.check_backend

    def check(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "check_backend", check)
    return calls


def test_auto_on_the_cpu_is_sparse_and_runs_no_check(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the check ran")

    monkeypatch.setattr(attention, "check_backend", never)
    assert resolve_backend("auto", CPU, D) == "sparse"
    assert resolve_backend("flex", CPU, D) == "flex"  # named backends are taken as they are
    model = build_model("rat-small", 1, width=8)
    with torch.no_grad():
        model(torch.rand(1, 1, 32, 32), torch.randint(0, 3, (1, 32, 32)))  # auto, through the model
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        resolve_backend("fast", CPU, D)
    with pytest.raises(ValueError, match="no region plan for backend 'auto' \\(resolve it first"):
        plan_region_attention(torch.zeros(1, 8, dtype=torch.int64), "auto")


def test_a_flex_that_matches_sparse_is_kept_and_checked_once_per_precision(monkeypatch, caplog):
    monkeypatch.setattr(flex, "compiled", eager)
    calls = counted(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auto_backend(CPU, D) == "flex"
        assert auto_backend(CPU, D) == "flex"
        assert len(calls) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 kernels are other kernels: checked apart
            assert auto_backend(CPU, D) == "flex"
            assert auto_backend(CPU, D) == "flex"
    assert [c[4] for c in calls] == [torch.float32, torch.bfloat16]
    assert caplog.records == []


def _raising(dynamic: bool):
    def kernel(*args, **kwargs):
        raise RuntimeError("InductorError: CppCompileError: C++ compile error\n  (long compiler output)")
    return kernel


def _unmasked(dynamic: bool):
    """A kernel that ignores the regions: every token attends to every token."""
    def kernel(q, k, v, block_mask, scale):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return kernel


def _nan(dynamic: bool):
    def kernel(q, k, v, block_mask, scale):
        return torch.full_like(q, float("nan"))
    return kernel


@pytest.mark.parametrize(("kernel", "reason"), [
    (_raising, "flex failed (RuntimeError: InductorError: CppCompileError: C++ compile error (long compiler "
               "output))"),
    (_unmasked, "flex differs from sparse by "),
    (_nan, "flex gave non-finite values in the output"),
])
def test_a_flex_that_fails_or_is_wrong_falls_back_to_sparse_with_one_warning_line(monkeypatch, caplog, kernel,
                                                                                  reason):
    monkeypatch.setattr(flex, "compiled", kernel)
    calls = counted(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auto_backend(CPU, D) == "sparse"
        assert auto_backend(CPU, D) == "sparse"
    assert len(calls) == 1
    [record] = caplog.records
    line = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in line
    assert line.startswith("region attention on cpu (float32, heads of 16): ")
    assert reason in line and line.endswith("; using sparse instead (the same results, slower)")


def test_the_check_problem_has_every_kind_of_block_row():
    """The rows where PyTorch 2.11 read the full table at wrong offsets: full blocks in several query
    blocks, rows with more full than partial blocks and the reverse (128-token blocks, compact tables)."""
    from rat.training.model.attention import check_problem
    from rat.training.model.attention_plan import region_ids, sorted_regions

    _, seg, _, _ = sorted_regions(region_ids(check_problem()))
    num, _, full_num, _ = (t.flatten() for t in flex.block_tables(seg, flex.FLEX_BLOCK, compact=True))
    assert int((full_num > 0).sum()) >= 4
    assert bool((full_num > num).any()) and bool(((num > full_num) & (num > 1)).any())
    assert bool(((num > 1) & (full_num == 0)).any())


def test_the_check_compares_gradients_where_the_kernel_trains(monkeypatch):
    """``dense`` trains on the CPU: a version of it with the right outputs and wrong gradients is refused."""
    assert check_backend(CPU, D, "dense") is None
    real = attention.dense_region_attention

    def wrong_gradient(q, k, v, bias, scale):
        out = real(q, k, v, bias, scale)
        return out + (q - q.detach()) * 0.5  # same values, d out / d q off by 0.5

    monkeypatch.setattr(attention, "dense_region_attention", wrong_gradient)
    reason = check_backend(CPU, D, "dense")
    assert reason is not None and reason.startswith("differs from sparse by ")
    assert "in the q gradient" in reason
    assert check_backend(CPU, D, "dense", grad=False) is None  # outputs alone agree


def test_the_check_runs_with_gradients_whatever_the_callers_mode():
    """The first use may come from validation (no_grad), restore (inference mode) or a bf16 step."""
    with torch.inference_mode():
        assert check_backend(CPU, D, "dense") is None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert check_backend(CPU, D, "dense", dtype=torch.bfloat16) is None


@cuda
@pytest.mark.gpu
def test_auto_is_flex_on_cuda_in_float32_and_bf16(caplog):
    device = torch.device("cuda", torch.cuda.current_device())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_backend(device, 32) is None                               # outputs and gradients
        assert resolve_backend("auto", device, 32) == "flex"                   # the paper's model
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert resolve_backend("auto", device, 32) == "flex"
    assert caplog.records == []


@cuda
@pytest.mark.gpu
def test_auto_on_cuda_trains_a_model_whose_heads_flex_cannot_take(caplog):
    """FlexAttention's CUDA kernels need heads of 16 channels or more: rat-small of width 8 has heads of 8,
    so auto trains it on sparse, and says why."""
    model = build_model("rat-small", 1, width=8).cuda()
    assert model.head_dim == 8
    image, labels = torch.rand(2, 1, 64, 64, device="cuda"), torch.randint(0, 4, (2, 64, 64), device="cuda")
    with caplog.at_level(logging.WARNING, logger=LOGGER), torch.autocast("cuda", dtype=torch.bfloat16):
        model(image, labels).float().square().mean().backward()
    [record] = caplog.records
    line = record.getMessage()
    assert "heads of 8): flex failed (" in line and "using sparse instead" in line
