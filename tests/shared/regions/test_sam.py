"""The real SAM code path with a tiny randomly initialised SAM saved as a checkpoint file
(rat.shared.regions.sam; its parameters, defaults and checkpoint rules from rat.shared.regions.sam_config)."""

import numpy as np
import pytest
import torch
from helpers import authors_labels
from segment_anything import SamAutomaticMaskGenerator

from rat.shared.hashes import sha256_file
from rat.shared.regions import sam as S
from rat.shared.regions.sam_config import SamError

FAST = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0}


def test_checkpoint_loads_and_is_hashed(tiny_sam_checkpoint):
    model, digest = S.SamGenerator.load_model(tiny_sam_checkpoint, "test_tiny")
    assert digest == sha256_file(tiny_sam_checkpoint) and len(digest) == 64
    ref = torch.load(tiny_sam_checkpoint, weights_only=True)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_label_map_equals_resolving_sams_own_binary_masks(tiny_sam_checkpoint):
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(128, 60, (48, 64, 3)), 0, 255).astype(np.uint8)
    gen = S.SamGenerator(tiny_sam_checkpoint, model_type="test_tiny", device="cpu", **FAST)
    labels = gen(rgb)
    model, _ = S.SamGenerator.load_model(tiny_sam_checkpoint, "test_tiny")
    records = SamAutomaticMaskGenerator(model, **FAST).generate(rgb)   # binary masks, SAM's own output
    assert len(records) > 3
    expected = authors_labels([r["segmentation"] for r in records])
    assert labels.shape == (48, 64) and labels.dtype == np.uint16
    assert (labels == expected).all()
    prov = gen.provenance()
    assert prov["model_type"] == "test_tiny" and prov["params"]["points_per_side"] == 6
    assert prov["params"]["crop_n_layers"] == 0          # defaults recorded too
    assert prov["package"] == "segment-anything" and prov["version"] == "1.0"


def test_published_name_with_other_hash_is_refused(tiny_sam_checkpoint, tmp_path):
    for name in ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"):
        fake = tmp_path / name
        fake.write_bytes(tiny_sam_checkpoint.read_bytes())
        with pytest.raises(SamError, match=f"{name}: SHA-256 .* differs from the published"):
            S.SamGenerator.load_model(fake, "vit_b")


def test_bad_checkpoints_give_one_line(tiny_sam_checkpoint, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(SamError, match="junk.pth: not a loadable") as err:
        S.SamGenerator.load_model(junk, "test_tiny")
    assert "\n" not in str(err.value)
    with pytest.raises(SamError, match="sam_tiny.pth: not a SAM vit_b checkpoint .*other shapes") as err:
        S.SamGenerator.load_model(tiny_sam_checkpoint, "vit_b")
    assert "\n" not in str(err.value)
    with pytest.raises(SamError, match="unknown SAM model type 'vit_x'; choose one of vit_b, vit_l"):
        S.SamGenerator.load_model(tiny_sam_checkpoint, "vit_x")


def test_unknown_parameter_and_device():
    with pytest.raises(SamError, match="points_per_sid"):
        S.SamGenerator("x.pth", points_per_sid=3)
    if not torch.cuda.is_available():
        from rat.shared.devices import pick_device
        from rat.shared.errors import ParamError

        with pytest.raises(ParamError, match="device: cuda asked, but torch sees no CUDA"):
            pick_device("cuda")
