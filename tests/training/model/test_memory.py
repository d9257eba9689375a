"""Memory policies: the same outputs and gradients as keeping everything, with less stored."""

from __future__ import annotations

import weakref

import pytest
import torch
from helpers import lively
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from rat.training.choices import MEMORY_POLICIES
from rat.training.loss import focal_region_loss
from rat.training.model import memory
from rat.training.model.network import RAT, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class _LiveBytes(TorchDispatchMode):
    """Bytes of the CPU tensor storages created under the mode and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live, self.seen = 0, set()

    def _freed(self, key: int, n: int) -> None:
        self.live -= n
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}  # views of inputs are not new memory
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                s = t.untyped_storage()
                if s.data_ptr() not in self.seen | inputs and s.nbytes():
                    self.seen.add(s.data_ptr())
                    self.live += s.nbytes()
                    weakref.finalize(s, self._freed, s.data_ptr(), s.nbytes())
        return out


def _inputs(b: int = 2, h: int = 32, w: int = 48):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 1, h, w, generator=g)
    labels = torch.randint(0, 5, (b, h, w), generator=g)
    return x, labels


def _step(model: RAT, x, labels):
    model.zero_grad(set_to_none=True)
    y = model(x, labels)
    focal_region_loss(y, x, labels).backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_default_policy_is_the_first_option_and_names_are_checked():
    assert MEMORY_POLICIES[0] == "selective" and tuple(memory.POLICIES) == MEMORY_POLICIES
    assert set(memory.POLICIES) == set(MEMORY_POLICIES)
    assert build_model("rat").memory == "selective" == RAT().memory
    for policy in memory.POLICIES.values():
        assert set(policy) == set(memory.BLOCKS)
        assert set(policy.values()) <= {memory.KEEP, memory.RECOMPUTE, memory.SELECT}
    with pytest.raises(ValueError, match="unknown memory policy 'some'"):
        RAT(memory="some")
    model = build_model("rat-small")
    model.memory = "lots"
    with pytest.raises(ValueError, match="unknown memory policy 'lots'"):
        model(*_inputs(1, 16, 16))


@pytest.mark.parametrize("backend", ["sparse", "dense"])
@pytest.mark.parametrize("policy", ["selective", "full"])
def test_policies_give_the_gradients_of_keeping_everything(policy, backend):
    torch.manual_seed(0)
    model = lively(build_model("rat-small", backend=backend, memory="none"))
    x, labels = _inputs()
    y0, g0 = _step(model, x, labels)
    model.memory = policy
    y1, g1 = _step(model, x, labels)
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=0)
    for name, grad in g0.items():
        torch.testing.assert_close(g1[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_policies_store_less_for_backward():
    torch.manual_seed(0)
    model = lively(build_model("rat-small", width=16, heads=4))
    x, labels = _inputs(2, 64, 64)
    stored = {}
    for policy in ("none", "selective", "full"):
        model.memory = policy
        tracker = _LiveBytes()
        with tracker:
            y = model(x, labels)
        stored[policy] = tracker.live  # what the forward pass leaves for backward (and y)
        y.sum().backward()  # backward still works after being tracked
        del y
    assert stored["full"] < stored["selective"] < 0.6 * stored["none"], stored


def test_without_gradients_every_policy_is_a_plain_call():
    calls = []
    with torch.no_grad():
        out = memory.run(lambda t: calls.append(t) or t * 2, memory.RECOMPUTE, torch.ones(2))
    assert calls and torch.equal(out, torch.full((2,), 2.0))


def test_select_keeps_the_marked_products_and_recomputes_the_rest():
    w1 = torch.randn(64, 256, requires_grad=True)
    w2 = torch.randn(256, 64, requires_grad=True)
    x = torch.randn(256, 256, requires_grad=True)

    def block(x, mark):
        h = memory.kept(torch.mm, x, w1.t()) if mark else x @ w1.t()  # (256, 64): 64 KiB
        return torch.nn.functional.gelu(h) @ w2.t()

    grads, stored = {}, {}
    for how, mark in ((memory.KEEP, False), (memory.RECOMPUTE, False), (memory.SELECT, True),
                      (memory.SELECT, False)):
        tracker = _LiveBytes()
        with tracker:
            y = memory.run(block, how, x, mark)
        stored[how, mark] = tracker.live - y.untyped_storage().nbytes()
        grads[how, mark] = torch.autograd.grad(y.square().sum(), (x, w1, w2))
    h_bytes = 256 * 64 * 4
    assert stored[memory.RECOMPUTE, False] == stored[memory.SELECT, False] < h_bytes
    assert stored[memory.SELECT, True] == stored[memory.SELECT, False] + h_bytes  # h kept
    assert stored[memory.KEEP, False] >= 2 * h_bytes  # h and gelu(h)
    for key, value in grads.items():
        for a, b in zip(value, grads[memory.KEEP, False], strict=True):
            torch.testing.assert_close(a, b, msg=str(key))
