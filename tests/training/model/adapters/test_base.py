"""Every registered model end to end on the CPU, as a user runs it: `rat-train --model NAME` two steps, then
`export`, `restore` and `eval` of the exported folder (rat.training.model.adapters: base, spandrel_models,
monai_models, ldct_models, torchsr_models, srcnn; rat.training.model.rat_models). Parameter counts equal the
package's own class: spandrel's own loader recognises our networks' state dicts as its architecture, with the
same parameters; the others are built from their packages directly. A model whose package is missing is
skipped, naming it."""

import importlib.util
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY_MODELS

from rat.shared import DISTRIBUTION
from rat.shared.io import read_image
from rat.training.cli import main
from rat.training.model.adapters.base import Fit, Fitted
from rat.training.model.registry import build_network, make_model, model_names

pytestmark = pytest.mark.usefixtures("one_thread")
IMPORT_NAME = {"spandrel": "spandrel", "monai": "monai", "ldct-benchmark": "ldctbench", "torchsr": "torchsr",
               DISTRIBUTION: "rat"}


def need(name: str):
    """Skip (naming the package) when the model's package is not installed; returns the model."""
    model = make_model(name)
    package = model.provenance()["package"]
    if importlib.util.find_spec(IMPORT_NAME[package]) is None:
        pytest.skip(f"{name}: package {package} is not installed ({getattr(model, 'install', '')})")
    return model


def group_of(name: str) -> str:
    return "pathology" if getattr(make_model(name), "channels", None) == (3,) else "ct"


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", [n for n in model_names() if n not in ("rat",)])
def test_trains_exports_restores_and_evaluates(name, sample_store, sample_root, tmp_path):
    model = need(name)
    group = group_of(name)
    out = tmp_path / "run"
    options = []
    for k, v in TINY_MODELS[name].items():
        options += ["--model-param", f"{k}={json.dumps(v)}"]
    run("--masks", sample_store, "--root", sample_root, "--out", out, "--model", name, *options, "--group",
        group, "--iters", 2, "--eval-every", 2, "--patch-size", 32, "--batch-size", 2, "--workers", 0,
        "--val-limit", 1, "--no-progress")
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 2 and ck["model_args"]["name"] == name
    prov = ck["model_args"]["provenance"]
    assert (prov["package"], prov["class"]) == (model.provenance()["package"], model.provenance()["class"])
    folder = tmp_path / "exported"
    run("export", "--checkpoint", out / "last.pt", "--out", folder)
    card = (folder / "README.md").read_text()
    assert name in card and prov["package"] in card
    restored = tmp_path / "restored"
    run("restore", "--checkpoint", folder, "--out", restored, "--limit", 1, "--no-progress")
    outputs = sorted(p for p in restored.rglob("*") if p.is_file())
    assert outputs, "nothing restored"
    image, _ = read_image(outputs[0])
    assert np.isfinite(image).all()
    text = run("eval", "--checkpoint", folder, "--limit", 1, "--csv", tmp_path / "eval.csv", "--no-progress")
    assert "LQ input" in text and (tmp_path / "eval.csv").is_file()


def test_region_free_models_are_never_given_label_maps():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, *args):
            seen.append(len(args))
            return args[0]

    net = Fitted(Spy(), Fit())
    net.uses_labels = False
    from rat.training.inference.tiling import model_labels, predict

    assert model_labels(net, np.zeros((8, 8), np.int64)) is None
    predict(net, torch.zeros(1, 8, 8), None)
    assert seen == [1]


def test_fitted_pads_to_what_the_network_needs_and_crops_back():
    sizes = []

    class Shape(torch.nn.Module):
        def forward(self, x):
            sizes.append(tuple(x.shape))
            return x * 2

    net = Fitted(Shape(), Fit(multiple=16, minimum=40, square=True, extra=(0.25,), residual=True))
    x = torch.rand(1, 2, 21, 35)
    y = net(x)
    assert sizes == [(1, 3, 48, 48)] and y.shape == x.shape
    assert torch.allclose(y, 3 * x)  # input + network(input): the extra channel is dropped


SPANDREL = ["swinir", "swin2sr", "hat", "rcan", "dncnn", "nafnet", "drunet", "scunet", "uformer"]


@pytest.mark.parametrize("name", SPANDREL)
@pytest.mark.parametrize("channels", [1, 3])
def test_spandrel_recognises_our_networks_as_its_own(name, channels):
    """spandrel's loader detects the architecture and every hyper-parameter from the state dict alone, then
    builds its own class: the same architecture, scale 1, the channels, and the same parameters."""
    need(name)
    from spandrel import ModelLoader

    net = build_network(name, channels).net  # the paper-sized defaults
    found = ModelLoader().load_from_state_dict(net.state_dict())
    assert found.architecture.id == make_model(name).arch and found.scale == 1
    assert found.input_channels == channels
    assert sum(p.numel() for p in found.model.parameters()) == sum(p.numel() for p in net.parameters())


def _package_class(name: str, channels: int):
    """The packages' own classes, built directly from the packages with the adapters' documented defaults."""
    if name == "restormer":
        from monai.networks.nets.restormer import Restormer

        return Restormer(spatial_dims=2, in_channels=channels, out_channels=channels, dim=48,
                         num_blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), num_refinement_blocks=4)
    if name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=channels, out_channels=channels, spatial_dims=2)
    if name == "basicunet":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=channels, out_channels=channels)
    if name == "edsr":
        from torchsr.models import edsr_baseline

        return edsr_baseline(scale=1, pretrained=False)
    import importlib

    method = {"ldct-resnet": "resnet"}.get(name, name)
    return importlib.import_module(f"ldctbench.methods.{method}.network").Model(Namespace())


@pytest.mark.parametrize("name", ["restormer", "swinunetr", "basicunet", "edsr", "redcnn", "cnn10", "wganvgg",
                                  "qae", "ldct-resnet"])
def test_parameter_counts_equal_the_package_class(name):
    need(name)
    channels = 3 if name == "edsr" else 1
    ours = build_network(name, channels)
    theirs = _package_class(name, channels)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [tuple(t.shape) for t in ours.net.state_dict().values()] == [
        tuple(t.shape) for t in theirs.state_dict().values()]


def test_srcnn_is_the_paper_915_network():
    net = build_network("srcnn", 1).net
    # 9x9x1x64 + 64, 1x1x64x32 + 32, 5x5x32x1 + 1 (Dong et al. 2014, 9-1-5)
    assert sum(p.numel() for p in net.parameters()) == 9 * 9 * 64 + 64 + 64 * 32 + 32 + 5 * 5 * 32 + 1


def test_a_model_for_other_channels_is_refused_in_one_line():
    from rat.shared.errors import ParamError

    need("redcnn")
    with pytest.raises(ParamError, match="redcnn .* restores 1-channel images, not 3-channel"):
        build_network("redcnn", 3)
    with pytest.raises(ParamError, match="takes no parameter 'depth'"):
        make_model("dncnn", {"depth": 3})
