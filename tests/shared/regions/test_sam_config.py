"""What configures the SAM family without torch (rat.shared.regions.sam_config): generator defaults read
from each package's source, checkpoints, model types."""

import inspect
import subprocess
import sys

import pytest

from rat.shared.regions import generator_class, sam_config


def test_generator_defaults_come_from_sam():
    d = sam_config.generator_defaults()
    assert d["points_per_side"] == 32 and d["points_per_batch"] == 64
    assert d["pred_iou_thresh"] == 0.88 and d["stability_score_thresh"] == 0.95
    assert "model" not in d and "output_mode" not in d


@pytest.mark.parametrize("name", sorted(sam_config.FAMILIES))
def test_generator_defaults_equal_the_imported_signature(name):
    """Read from the package's source without importing it; the same as inspect.signature of its class."""
    family = sam_config.FAMILIES[name]
    cls = generator_class(name).mask_generator()
    sig = inspect.signature(cls.__init__).parameters
    expected = {n: p.default for n, p in sig.items() if n not in sam_config.NOT_PARAMS}
    assert sam_config.generator_defaults(family) == expected


def test_reading_the_defaults_imports_no_package():
    code = ("import sys; from rat.shared.regions import sam_config as c\n"
            "[c.generator_defaults(f) for f in c.FAMILIES.values()]\n"
            "print([m for m in ('torch', 'segment_anything', 'segment_anything_hq', 'efficientsam') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_checkpoint_says_where_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv(sam_config.CHECKPOINT_ENV, raising=False)
    with pytest.raises(sam_config.SamError, match="no SAM checkpoint given.*sam_vit_b_01ec64.pth.*superpix"):
        sam_config.resolve_checkpoint(None)
    with pytest.raises(sam_config.SamError, match="no HQ-SAM checkpoint given: download sam_hq_vit_b.pth"):
        sam_config.resolve_checkpoint(None, sam_config.SAM_HQ)
    with pytest.raises(sam_config.SamError, match="nope.pth: EfficientViT-SAM checkpoint not found.*"
                                                  "efficientvit_sam_l0.pt"):
        sam_config.resolve_checkpoint(tmp_path / "nope.pth", sam_config.EFFICIENTVIT_SAM)
    monkeypatch.setenv(sam_config.CHECKPOINT_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(sam_config.SamError, match="env.pth"):
        sam_config.resolve_checkpoint(None)


def test_model_types():
    sam_config.check_model_type("vit_tiny", sam_config.SAM_HQ)       # HQ-SAM's light model
    with pytest.raises(sam_config.SamError, match="unknown SAM model type 'vit_tiny'"):
        sam_config.check_model_type("vit_tiny", sam_config.SAM)
    with pytest.raises(sam_config.SamError, match="unknown EfficientViT-SAM model type 'vit_b'; choose one "
                                                  "of l0, l1, l2, xl0, xl1"):
        sam_config.check_model_type("vit_b", sam_config.EFFICIENTVIT_SAM)
