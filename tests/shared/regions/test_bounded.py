"""The SAM-family generators in bounded memory make exactly the package's own masks
(rat.shared.regions.bounded): same RLEs, scores, boxes and order, on several images and parameter sets, crop
layers included, for every family, whatever the budget."""

from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from rat.shared.errors import ParamError
from rat.shared.regions import build_generator, generator_class
from rat.shared.regions.bounded import bound_attention, bounded, prompts_per_part
from rat.shared.regions.sam_config import TEST_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

NO_FILTERS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
#: (parameters, budget in bytes): budgets from one prompt per part to a few.
CASES = [
    ({"points_per_side": 5, **NO_FILTERS, "box_nms_thresh": 1.0}, 1),
    ({"points_per_side": 4, "points_per_batch": 7, **NO_FILTERS}, 2 * 10**6),
    ({"points_per_side": 3, "crop_n_layers": 1, **NO_FILTERS, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0},
     1),
    ({"points_per_side": 4, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.2,
      "stability_score_offset": 0.5}, 3 * 10**5),
]


def images() -> list[np.ndarray]:
    """A noisy image, an odd-sized real photograph and a wide real crop."""
    rng = np.random.default_rng(1)
    data = Path(skimage.__file__).parent / "data"
    astronaut = np.asarray(Image.open(data / "astronaut.png").convert("RGB").resize((53, 47)))
    coffee = np.asarray(Image.open(data / "coffee.png").convert("RGB"))[100:140, 50:130]
    return [np.clip(rng.normal(128, 60, (36, 44, 3)), 0, 255).astype(np.uint8), astronaut, coffee]


@pytest.mark.parametrize("name", ["sam", "sam-hq", "efficientvit-sam"])
def test_same_records_as_the_packages_own_generator(name, tiny_checkpoint):
    cls = generator_class(name)
    model, _ = cls.load_model(tiny_checkpoint(name), TEST_MODEL)
    compared = 0
    for params, budget in CASES:
        ours = build_generator(name, checkpoint=tiny_checkpoint(name), model_type=TEST_MODEL, device="cpu",
                               max_memory=budget, **params)
        theirs = cls.mask_generator()(model, output_mode="uncompressed_rle", **params)
        for rgb in images():
            mine, own = ours.records(rgb), theirs.generate(rgb)
            assert mine == own, (params, rgb.shape)       # RLE, area, bbox, scores, points, crop: in order
            compared += len(own)
    assert compared >= 100


def test_vit_attention_layers_are_bounded(tiny_checkpoint):
    counts = {name: bound_attention(generator_class(name).load_model(tiny_checkpoint(name), TEST_MODEL)[0])
              for name in ("sam", "sam-hq", "efficientvit-sam")}
    assert counts == {"sam": 1, "sam-hq": 1, "efficientvit-sam": 0}   # EfficientViT has no ViT attention


def test_parts_follow_the_budget():
    assert prompts_per_part(1, 3, (3249, 3249)) == 1                 # never less than one prompt
    per_mask = 24 * 3249 * 3249 + 4 * 1024 ** 2
    assert prompts_per_part(2 * 10**9, 3, (3249, 3249)) == 2 * 10**9 // (3 * per_mask) == 2
    assert prompts_per_part(2 * 10**9, 3, (512, 512)) == 2 * 10**9 // (3 * (24 * 512**2 + 4 * 1024**2))
    with pytest.raises(ParamError, match="max_memory: 0: a positive number of bytes"):
        bounded(object, 0)
