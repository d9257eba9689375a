"""Compiled blocks (rat.training.model.compiling): the same outputs and gradients as the eager model, under
every memory policy (recompute reruns a compiled block; select becomes keep), and compiled once per shape."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from helpers import lively

from rat.training.model.compiling import COMPILED, compile_blocks
from rat.training.model.network import build_model

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow,
              pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="torch.compile on CPU needs a C++ compiler")]


def _step(model, image, labels, target):
    out = model(image, labels)
    (out - target).abs().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("memory", ["selective", "none"])
def test_compiled_blocks_give_the_eager_outputs_and_gradients(memory):
    torch.manual_seed(0)
    eager = lively(build_model("rat-small", 1, width=8, backend="sparse", memory=memory))
    compiled = compile_blocks(copy.deepcopy(eager))
    assert compiled.compiled_blocks and not eager.compiled_blocks
    assert sum(isinstance(m, COMPILED) for m in compiled.modules()) == 10  # 4 NAFBlocks; 2 x (2 MLPs, W-MSA)
    g = torch.Generator().manual_seed(1)
    image, target = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    labels = torch.randint(0, 5, (2, 32, 32), generator=g)
    for _ in range(2):  # the second step reuses the compiled graphs
        out, grads = _step(eager, image, labels, target)
        got, got_grads = _step(compiled, image, labels, target)
        torch.testing.assert_close(got, out, rtol=1e-4, atol=1e-5)
        assert got_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
        eager.zero_grad(), compiled.zero_grad()
    with torch.no_grad():  # inference (validation, restore) through the same blocks
        torch.testing.assert_close(compiled(image, labels), eager(image, labels), rtol=1e-4, atol=1e-5)


def test_a_block_that_fails_to_compile_runs_eagerly():
    def broken_compiler(graph, example_inputs):
        raise RuntimeError("compiler bug")

    torch.manual_seed(0)
    eager = lively(build_model("rat-small", 1, width=8, backend="sparse"))
    compiled = compile_blocks(copy.deepcopy(eager), backend=broken_compiler)
    image, labels = torch.rand(1, 1, 32, 32), torch.randint(0, 3, (1, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(compiled(image, labels), eager(image, labels))
