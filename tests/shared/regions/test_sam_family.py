"""Every SAM-family generator through its package's real automatic mask generator class, with the package's
own modules built small and randomly initialised (rat.shared.regions.sam_family; the packages' modules
rat.shared.regions.sam_hq and rat.shared.regions.efficientvit_sam): label maps, provenance, checkpoints."""

import importlib.metadata

import numpy as np
import pytest
import torch
from helpers import authors_labels

from rat.shared.errors import MAX_REASON
from rat.shared.regions import GeneratorError, build_generator, generator_class
from rat.shared.regions.efficientvit_sam import EfficientVitSamGenerator
from rat.shared.regions.sam_config import FAMILIES, TEST_MODEL, SamError
from rat.shared.regions.sam_family import mismatch
from rat.shared.regions.sam_hq import SamHqGenerator

FAST = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
NAMES = sorted(FAMILIES)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(128, 60, (40, 56, 3)), 0, 255).astype(np.uint8)


def test_the_registry_finds_each_family_generator():
    assert generator_class("sam-hq") is SamHqGenerator
    assert generator_class("efficientvit-sam") is EfficientVitSamGenerator


@pytest.mark.parametrize("name", NAMES)
def test_label_map_equals_resolving_the_packages_own_masks(name, tiny_checkpoint, rgb, one_thread):
    ckpt = tiny_checkpoint(name)
    gen = build_generator(name, checkpoint=ckpt, model_type=TEST_MODEL, device="cpu", **FAST)
    labels = gen(rgb)
    cls = generator_class(name)
    model, _ = cls.load_model(ckpt, TEST_MODEL)
    own = cls.mask_generator()(model, **FAST).generate(rgb)      # binary masks, the package's own output
    assert len(own) >= 3
    expected = authors_labels([r["segmentation"] for r in own])
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint16
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("name", NAMES)
def test_provenance_names_package_version_model_checkpoint_and_every_parameter(name, tiny_checkpoint):
    family = FAMILIES[name]
    gen = build_generator(name, checkpoint=tiny_checkpoint(name), model_type=TEST_MODEL, device="cpu",
                          points_per_side=3, max_memory=10**6)
    prov = gen.provenance()
    assert prov["name"] == name and prov["package"] == family.distribution
    assert prov["version"] == importlib.metadata.version(family.distribution)
    assert prov["model_type"] == TEST_MODEL and len(prov["checkpoint_sha256"]) == 64
    assert prov["params"]["points_per_side"] == 3 and prov["params"]["points_per_batch"] == 64
    assert "max_memory" not in prov["params"]          # it changes the memory, never the masks


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_of_another_model_type_is_refused_in_one_line(name, tiny_checkpoint):
    family = FAMILIES[name]
    real = family.default_model_type                   # a real-size model: the tiny weights cannot fit
    with pytest.raises(SamError, match=f"{name}_tiny.pth: not a {family.label} {real} checkpoint") as err:
        build_generator(name, checkpoint=tiny_checkpoint(name), model_type=real, device="cpu")
    assert "\n" not in str(err.value) and len(str(err.value)) <= MAX_REASON + 200


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_of_another_family_is_refused(name, tiny_checkpoint):
    other = next(n for n in NAMES if n != name)
    with pytest.raises(SamError, match=f"not a {FAMILIES[name].label} {TEST_MODEL} checkpoint"):
        build_generator(name, checkpoint=tiny_checkpoint(other), model_type=TEST_MODEL, device="cpu")


@pytest.mark.parametrize("name", NAMES)
def test_missing_checkpoint_and_unknown_parameter(name, monkeypatch, tmp_path):
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    label = FAMILIES[name].label
    with pytest.raises(SamError, match=f"no {label} checkpoint given: download"):
        build_generator(name, device="cpu")
    with pytest.raises(SamError, match=f"gone.pth: {label} checkpoint not found"):
        build_generator(name, checkpoint=tmp_path / "gone.pth")
    with pytest.raises(GeneratorError, match=f"^generator {name} has no parameter 'points_per_sid'; its "
                                             "parameters: checkpoint, model_type, device, max_memory, "
                                             "points_per_side, points_per_batch, "):
        build_generator(name, checkpoint=tmp_path / "gone.pth", points_per_sid=3)


def test_mismatch_says_what_differs():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = {"0.weight": torch.zeros(4, 2), "1.bias": torch.zeros(1)}
    text = mismatch(model, state)
    assert "1 tensors of other shapes, e.g. 0.weight [4, 2] where the model has [3, 2]" in text
    assert "1 of the model's tensors missing, e.g. 0.bias" in text and "1 unexpected, e.g. 1.bias" in text
