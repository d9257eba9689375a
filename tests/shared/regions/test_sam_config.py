"""What configures SAM without torch (rat.shared.regions.sam_config): generator defaults, checkpoints."""

import inspect

import pytest
from segment_anything import SamAutomaticMaskGenerator

from rat.shared.regions import sam_config


def test_generator_defaults_come_from_sam():
    d = sam_config.generator_defaults()
    assert d["points_per_side"] == 32 and d["points_per_batch"] == 64
    assert d["pred_iou_thresh"] == 0.88 and d["stability_score_thresh"] == 0.95
    assert "model" not in d and "output_mode" not in d


def test_generator_defaults_equal_the_imported_signature():
    """Read from the source without importing; the same as inspect.signature of the imported class."""
    sig = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    expected = {n: p.default for n, p in sig.items()
                if n not in ("self", "model", "point_grids", "output_mode")}
    assert sam_config.generator_defaults() == expected


def test_missing_checkpoint_says_where_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv(sam_config.CHECKPOINT_ENV, raising=False)
    with pytest.raises(sam_config.SamError, match="no SAM checkpoint given.*superpixels"):
        sam_config.resolve_checkpoint(None)
    with pytest.raises(sam_config.SamError, match="nope.pth: SAM checkpoint not found"):
        sam_config.resolve_checkpoint(tmp_path / "nope.pth")
    monkeypatch.setenv(sam_config.CHECKPOINT_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(sam_config.SamError, match="env.pth"):
        sam_config.resolve_checkpoint(None)

