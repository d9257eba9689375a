"""Where the regions of a scan to restore come from (rat.training.inference.region_source): the generator a
model was trained with, built through the generator contract for a plug-in as for a builtin, and its label
maps made and checked by the one function precompute uses too (rat.shared.regions.image_labels)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rat.shared import regions
from rat.shared.datasets import load_dataset
from rat.shared.regions.superpixels import SuperpixelGenerator
from rat.training.inference.inputs import Scan
from rat.training.inference.region_source import RegionSource, trained_generator


def test_the_recorded_generator_is_rebuilt_with_its_recorded_parameters(tiles):
    recorded = {"name": "tiles", "version": "0.1", "params": {"size": 5, "min_value": 0}}
    gen, note = trained_generator(recorded, sam_checkpoint="ignored.pth", device="cpu")
    assert type(gen).__name__ == "TileGenerator" and gen.params == {"size": 5, "min_value": 0} and note == ""
    gen, note = trained_generator(recorded, name="superpixels", sam_checkpoint="ignored.pth")
    assert isinstance(gen, SuperpixelGenerator)
    assert note == "note: regions from superpixels, but the model was trained on tiles regions"


def restorer(recorded):
    group = load_dataset("sample").groups["pathology"]
    return SimpleNamespace(generator=recorded, window=None, group=group, uses_labels=True)


def test_label_maps_are_made_and_checked_as_precompute_makes_them(tiles, monkeypatch):
    source = RegionSource(restorer({"name": "tiles", "params": {"size": 4, "min_value": 0}}))
    scan = Scan(Path("slide.png"), "image", "in/slide.png")
    image = np.full((6, 9, 3), 200.0)
    labels = source.labels(scan, None, image)
    expected = 1 + (np.arange(6)[:, None] // 4) * 3 + np.arange(9)[None, :] // 4     # tile (i, j), row major
    assert np.array_equal(labels, expected)
    monkeypatch.setattr(type(source.generator()), "__call__", lambda self, rgb: np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match=r"^in/slide.png: generator tiles returned \(2, 2\) for an image of "
                                         r"\(6, 9\)$"):
        source.labels(scan, None, image)
    monkeypatch.setattr(type(source.generator()), "__call__", lambda self, rgb: 1 / 0)
    with pytest.raises(regions.GeneratorError, match=r"^in/slide.png slice 3: generator tiles failed "
                                                     r"\(ZeroDivisionError"):
        source.labels(scan, 3, image)
