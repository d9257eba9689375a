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


def test_a_budget_below_one_prompts_masks_is_said_once(tiny_checkpoint, caplog):
    """--max-memory 1KB cannot hold one mask: a warning says so when the generator is built (the model's
    input size alone needs more); a budget enough for that but not for one prompt on a given image is said
    at that image; a sufficient budget says nothing. The masks are the same either way (test above)."""
    import logging

    from rat.shared.regions.bounded import budget_note, prompt_bytes

    assert prompt_bytes(3, (100, 200)) == 3 * (24 * 100 * 200 + 4 * 1024 ** 2)     # 72 B/pixel + 12.6 MB
    assert budget_note(prompt_bytes(3, (100, 200)), 3, (100, 200)) is None
    with caplog.at_level(logging.WARNING, logger="rat.shared.regions.bounded"):
        gen = build_generator("sam", checkpoint=tiny_checkpoint("sam"), model_type=TEST_MODEL, device="cpu",
                              max_memory=1000, points_per_side=2, **NO_FILTERS)
        gen(images()[0])
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["warning: --max-memory 1 KB is below what one prompt's 3 masks take (786 KB on a "
                     "model's 256 x 256 input alone, before any image): each part holds one prompt, and "
                     "post-processing takes more than the budget"]                  # the tiny model: 256
    caplog.clear()
    budget = prompt_bytes(3, None, 256) + 10                    # enough for the input, not for the image
    with caplog.at_level(logging.WARNING, logger="rat.shared.regions.bounded"):
        gen = build_generator("sam", checkpoint=tiny_checkpoint("sam"), model_type=TEST_MODEL, device="cpu",
                              max_memory=budget, points_per_side=2, **NO_FILTERS)
        assert not caplog.records
        gen(images()[0])
        gen(images()[1])
    assert len(caplog.records) == 1                                # once, at the first image
    assert caplog.records[0].getMessage().startswith(
        f"warning: --max-memory {budget / 1e3:.3g} KB is below what one prompt's 3 masks take (900 KB on a "
        "36 x 44 image)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rat.shared.regions.bounded"):
        build_generator("sam", checkpoint=tiny_checkpoint("sam"), model_type=TEST_MODEL, device="cpu",
                        points_per_side=2, **NO_FILTERS)(images()[0])
    assert not caplog.records
