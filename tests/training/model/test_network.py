"""RAT network: state-dict compatibility with the authors' code, inputs, backends, modes."""

from __future__ import annotations

import ast
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import DATA, lively

from rat.training.choices import MODEL_NAMES
from rat.training.loss import focal_region_loss
from rat.training.model.nafblock import LayerNorm2d, NAFBlock
from rat.training.model.network import MODELS, RAT, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _reference(channels: int) -> tuple[list[tuple[str, tuple[int, ...]]], int, int]:
    """(key, shape) rows of the authors' state dict, and the tensor/parameter counts it states."""
    lines = (DATA / f"rat_state_dict_c{channels}.tsv").read_text().splitlines()
    counts = re.search(r"(\d+) tensors, (\d+) parameters", lines[0])
    rows = []
    for line in lines[2:]:
        key, shape = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape))))
    return rows, int(counts[1]), int(counts[2])


@pytest.mark.parametrize("channels,params", [(1, 15_945_025), (3, 15_947_331)])
def test_default_model_matches_the_reference_state_dict(channels, params):
    rows, n_tensors, n_params = _reference(channels)
    model = RAT(img_channel=channels)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == rows  # same keys, shapes and order
    assert len(ours) == n_tensors == 474
    assert sum(p.numel() for p in model.parameters()) == n_params == params
    assert list(model.buffers()) == []


def test_reference_shaped_checkpoint_loads_strictly():
    rows, _, _ = _reference(1)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in rows}
    model = RAT()
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    x = torch.randn(1, 1, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x, torch.randint(0, 3, (1, 16, 16), generator=g))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_layer_norm_2d_normalises_channels_with_exact_gradients(layout):
    torch.manual_seed(0)
    norm = LayerNorm2d(5).double()
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_()
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias, 1e-6)
    y = norm(x)
    torch.testing.assert_close(y, expected.permute(0, 3, 1, 2))
    assert y.is_contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(norm, (x,))
    assert torch.autograd.gradcheck(lambda w, b: F.linear(norm(x).sum((2, 3)), w.diag() + b),
                                    (norm.weight, norm.bias))


def test_fresh_nafblock_is_the_identity():
    block = NAFBlock(8)
    x = torch.randn(1, 8, 6, 5)
    assert torch.equal(block(x), x)  # beta = gamma = 0


@pytest.mark.parametrize("name", ["rat", "rat-small"])
def test_a_fresh_model_returns_its_input(name):
    """The last layer starts at zero: before training the model is the identity, so training starts from
    the LQ image's scores (a random last layer added a random image to the input)."""
    model = build_model(name, 1)
    image = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(image, torch.randint(0, 5, (2, 32, 48))), image)
    assert model.ending.weight.abs().sum() == 0 and model.ending.bias.abs().sum() == 0


def test_default_configuration():
    model = RAT()
    layer = model.middle_blks[0].layers[0]
    assert model.attention == "rmsa" and model.backend == "auto" and model.memory == "selective"
    assert len(model.middle_blks) == 4 and len(model.middle_blks[0].layers) == 3
    assert layer.ra.heads == 8 and layer.wa.window == 4 and layer.ra.scale == 8**-0.5
    assert model.region_lambda == -1000.0 and model.pad_multiple == 16


def _small(**kw) -> RAT:
    torch.manual_seed(0)
    return lively(build_model("rat-small", **kw))


def test_builders():
    assert tuple(MODELS) == MODEL_NAMES == ("rat", "rat-small")
    small = build_model("rat-small", img_channel=3, width=8)
    assert small.intro.weight.shape == (8, 3, 3, 3)
    assert sum(p.numel() for p in small.parameters()) < 500_000
    assert sum(p.numel() for p in build_model("rat").parameters()) == 15_945_025
    with pytest.raises(ValueError, match="unknown model"):
        build_model("rat-huge")
    with pytest.raises(ValueError, match="unknown attention"):
        RAT(attention="swin")
    with pytest.raises(ValueError, match="unknown attention backend"):
        RAT(backend="cuda")


def test_token_labels_follow_nearest_interpolation():
    model = build_model("rat-small")
    labels = torch.randint(0, 50, (2, 32, 48))
    expected = F.interpolate(labels[:, None].float(), scale_factor=0.25, mode="nearest")
    assert torch.equal(model.token_labels(labels), expected.long().reshape(2, -1))


@pytest.mark.parametrize("size", [(37, 45), (5, 3)])
def test_odd_sizes_keep_shape_and_backends_agree(size):
    model = _small()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, *size, generator=g)
    labels = torch.randint(0, 4, (2, *size), generator=g) * 10 + 7
    results = {}
    for backend in ("dense", "sparse"):
        model.backend = backend
        model.zero_grad()
        y = model(x, labels)
        focal_region_loss(y, x, labels).backward()
        results[backend] = (y.detach(), [p.grad.clone() for p in model.parameters()])
    assert results["dense"][0].shape == x.shape
    torch.testing.assert_close(results["sparse"][0], results["dense"][0], atol=1e-4, rtol=0)
    for a, b in zip(results["sparse"][1], results["dense"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_region_ids_are_arbitrary_but_regions_matter():
    model = _small().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g)
    model = _small(img_channel=3).eval()
    labels = torch.randint(0, 5, (2, 32, 32), generator=g)
    relabel = torch.tensor([900, 3, 70000, 42, 8])  # a bijection onto non-consecutive ids
    with torch.no_grad():
        y = model(x, labels)
        assert torch.allclose(model(x, relabel[labels].to(torch.int32)), y, atol=1e-6)
        assert torch.allclose(model(x, labels.to(torch.uint8)), y, atol=1e-6)
        assert (model(x, labels.flip(-1)) - y).abs().max() > 1e-3


def test_images_of_a_batch_are_independent():
    model = _small().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 32, 32, generator=g)
    labels = torch.stack([torch.zeros(32, 32, dtype=torch.int64),
                          torch.randint(0, 30, (32, 32), generator=g)])
    with torch.no_grad():
        both = model(x, labels)
        for i in range(2):
            torch.testing.assert_close(model(x[i : i + 1], labels[i : i + 1]), both[i : i + 1],
                                       atol=1e-5, rtol=0)


def test_the_network_runs_channels_last_and_returns_a_plain_tensor():
    model = _small(img_channel=3).eval()
    x = torch.randn(1, 3, 20, 24)
    seen = []
    hook = model.middle_blks[0].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        y = model(x, torch.zeros(1, 20, 24, dtype=torch.int64))
    hook.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous() and y.shape == x.shape


@pytest.mark.parametrize("mode", ["wmsa", "msa"])
def test_ablation_modes_run_without_labels(mode):
    model = _small(attention=mode)
    x = torch.randn(1, 1, 20, 24)
    y = model(x)
    assert y.shape == x.shape
    assert model(x, torch.zeros(1, 20, 24, dtype=torch.int64)).shape == x.shape


def test_bad_inputs_give_clear_errors():
    model = _small()
    x = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 32, 31\) do not match image"):
        model(x, torch.zeros(2, 32, 31, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"labels of shape \(32, 32\)"):
        model(x, torch.zeros(32, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        model(x, torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="needs a label map"):
        model(x)
    with pytest.raises(ValueError, match=r"image must be \(B, C, H, W\)"):
        model(x[0], torch.zeros(2, 32, 32, dtype=torch.int64))


def test_small_model_learns_a_toy_restoration():
    torch.manual_seed(0)
    model = build_model("rat-small")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(5)
    clean = torch.rand(2, 1, 32, 32, generator=g)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=g)
    labels = (clean[:, 0] * 4).long()
    losses = []
    for _ in range(30):
        loss = focal_region_loss(model(noisy, labels), clean, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_simple_gate_multiplies_channel_halves_with_exact_gradients(layout):
    from rat.training.model.nafblock import SimpleGate

    x = torch.randn(2, 6, 3, 4, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_()
    y = SimpleGate()(x)
    torch.testing.assert_close(y, x[:, :3] * x[:, 3:])
    assert torch.autograd.gradcheck(SimpleGate(), (x,))
    assert torch.autograd.grad(SimpleGate()(x).sum(), x)[0].is_contiguous(memory_format=layout)
