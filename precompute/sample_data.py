"""A small, deterministic sample dataset built only from real images shipped in installed packages.

Layout under the output folder (described by ``rat.data_manifests/sample.toml``)::

    README.txt                      what this is and where every image came from
    pathology/hq/ihc_NN.png|.tif    RGB uint8 crops of scikit-image's ``data/ihc.png``
    ct/hq/ct_NN.dcm                 variants of pydicom's ``data/test_files/CT_small.dcm``
    ct/lq/ct_NN.dcm                 their simulated low-dose versions

Pathology LQ is not written here: the index derives it (``derive_lq = "bicubic_x4"``), as
for the TMA dataset. CT LQ comes from :func:`rat.shared.datasets.degrade.simulate_low_dose_ct` and is
written with CT_small's tags (HU stored through its RescaleSlope/RescaleIntercept).
Everything depends only on ``seed`` and the two source files: the same bytes on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import skimage

from rat.shared.datasets.degrade import simulate_low_dose_ct
from rat.shared.io import read_image, write_image
from rat.shared.io.formats import DICOM, PNG, TIFF


def ihc_path() -> Path:
    """scikit-image's immunohistochemistry slide (512x512 RGB PNG), shipped with the package."""
    return Path(skimage.__file__).parent / "data" / "ihc.png"


def ct_small_path() -> Path:
    """pydicom's CT_small.dcm (128x128 int16 CT slice with rescale tags), shipped with pydicom."""
    return Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _orient(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """rot90 by k quarter turns in the (H, W) plane, then a left-right flip if flip."""
    out = np.rot90(image, k, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def _shift(image: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Translate (H, W) by (dy, dx) pixels; uncovered pixels take fill (no wrap-around)."""
    h, w = image.shape
    out = np.full_like(image, fill)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def make_sample_data(
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_pathology: int = 8,
    n_tiff: int = 2,
    crop: int = 192,
    n_ct: int = 8,
    max_shift: int = 8,
    photons: float = 5e4,
) -> list[Path]:
    """Write the sample dataset into out_dir (created if needed); returns the files written.

    n_pathology seeded crop x crop crops of ihc.png (random offset, rot90, flip), the last n_tiff
    of them as TIFF, the others PNG. n_ct seeded variants of CT_small.dcm (rot90, flip, shift by
    up to max_shift pixels, uncovered pixels set to the slice's minimum HU) as HQ, and their
    low-dose simulations with ``photons`` incident photons per detector bin and view as LQ.
    """
    out = Path(out_dir)
    path_rng, ct_rng, noise_rng = (np.random.default_rng(s)
                                   for s in np.random.SeedSequence(seed).spawn(3))
    written: list[Path] = []
    notes: list[str] = []

    ihc, _ = read_image(ihc_path())  # (512, 512, 3) float32, 0..255
    if not 0 < crop <= min(ihc.shape[:2]):
        raise ValueError(f"crop must be in 1..{min(ihc.shape[:2])}, got {crop}")
    (out / "pathology" / "hq").mkdir(parents=True, exist_ok=True)
    for i in range(n_pathology):
        y, x = (int(v) for v in path_rng.integers(0, np.array(ihc.shape[:2]) - crop + 1))
        k, flip = int(path_rng.integers(4)), bool(path_rng.integers(2))
        image = _orient(ihc[y : y + crop, x : x + crop], k, flip)
        ext = TIFF.suffix if i >= n_pathology - n_tiff else PNG.suffix
        path = out / "pathology" / "hq" / f"ihc_{i:02d}{ext}"
        write_image(path, image, dtype="uint8")
        written.append(path)
        notes.append(f"{path.relative_to(out).as_posix()}: ihc.png rows {y}:{y + crop}, "
                     f"cols {x}:{x + crop}, rot90 x{k}{', flipped left-right' if flip else ''}")

    template = ct_small_path()
    hu, meta = read_image(template)  # (128, 128) float32 in HU
    pixel_mm = float(meta.spacing[0]) if meta.spacing else 1.0
    for sub in ("hq", "lq"):
        (out / "ct" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_ct):
        k, flip = int(ct_rng.integers(4)), bool(ct_rng.integers(2))
        dy, dx = (int(v) for v in ct_rng.integers(-max_shift, max_shift + 1, size=2))
        hq = _shift(_orient(hu, k, flip), dy, dx, fill=float(hu.min()))
        lq = simulate_low_dose_ct(hq, noise_rng, photons=photons, pixel_mm=pixel_mm)
        name = f"ct_{i:02d}{DICOM.suffix}"
        write_image(out / "ct" / "hq" / name, hq, like=template)
        write_image(out / "ct" / "lq" / name, lq, like=template)
        written += [out / "ct" / "hq" / name, out / "ct" / "lq" / name]
        notes.append(f"ct/hq/{name}: CT_small.dcm rot90 x{k}"
                     f"{', flipped left-right' if flip else ''}, shifted by ({dy}, {dx}) px; "
                     f"ct/lq/{name}: its low-dose simulation")

    readme = out / "README.txt"
    readme.write_text(_readme(seed, photons, notes), encoding="utf-8")
    return [readme, *written]


def _readme(seed: int, photons: float, notes: list[str]) -> str:
    lines = [
        "RAT sample dataset (made by `rat-precompute sample-data`, seed "
        f"{seed}; the same seed gives the same bytes).",
        "",
        "A tiny paired dataset for trying the pipeline end to end, built only from real images",
        "that ship inside installed Python packages (nothing downloaded). Dataset definition:",
        "`--dataset sample` (rat/data_manifests/sample.toml).",
        "",
        "Sources:",
        "- pathology: scikit-image data/ihc.png, immunohistochemical (IHC) staining of colonic",
        "  glands (FHL2 protein revealed with DAB, hematoxylin counterstain), acquired at the",
        "  Center for Microscopy And Molecular Imaging (CMMI); no known copyright restrictions.",
        "  HQ = seeded RGB crops; LQ is derived by `rat-precompute index` with the TMA",
        "  degradation (4x bicubic down, bicubic up) into .rat/derived/sample/.",
        "- ct: pydicom data/test_files/CT_small.dcm, a 128x128 CT slice (int16, RescaleSlope 1,",
        "  RescaleIntercept -1024, 0.66 mm pixels). HQ = seeded variants (rot90, flip, shift);",
        "  LQ = low-dose simulation (rat.shared.datasets.degrade.simulate_low_dose_ct): HU -> attenuation,",
        "  radon projection, Poisson noise on transmitted counts with I0 = "
        f"{photons:g} photons per bin",
        "  and view, filtered back-projection of the noise, added to the HQ slice in HU. Both",
        "  written with CT_small's tags (orientation tags are not updated for rot90/flip).",
        "",
        "Files:",
        *(f"- {n}" for n in notes),
        "",
    ]
    return "\n".join(lines)
