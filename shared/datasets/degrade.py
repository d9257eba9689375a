"""Simulated low-quality (LQ) images: the TMA resolution loss and a CT low-dose simulation.

TMA (``bicubic_x4``, the paper's section 3.1): the HQ image is downsampled 4x with bicubic
interpolation and upsampled back to its original size with bicubic interpolation. Both resizes
use Pillow's bicubic filter on 32-bit float planes, one plane per channel (Keys' cubic kernel,
a = -0.5, widened by the scale factor when shrinking so that it also low-pass filters, like
MATLAB's ``imresize``). Nothing is quantised in between; :func:`derive_lq` rounds and clips the
result once, to the dtype of the file it will be stored in, so the stored LQ equals
``derive_lq(hq, ...)`` exactly when read back.

CT low dose (:func:`simulate_low_dose_ct`), a noise-insertion simulation on the image:

1. HU to linear attenuation: ``mu = mu_water * (1 + HU / 1000)`` in 1/mm (``mu_water`` = 0.0192
   /mm, water at about 70 keV), clipped at 0 (nothing attenuates less than vacuum).
2. Parallel-beam forward projection with ``skimage.transform.radon`` over ``n_angles`` views
   spread over 180 degrees, times the pixel size: line integrals ``p`` (unitless).
3. Transmitted photon counts are Poisson: ``N ~ Poisson(I0 * exp(-p))`` with ``I0`` incident
   photons per detector bin and view (low ``I0`` = low dose); ``p_noisy = -log(max(N, 1) / I0)``.
4. Filtered back-projection (``skimage.transform.iradon``, ramp filter) of both ``p_noisy`` and
   the noise-free ``p``; their difference is the dose-reduction noise (streaky, correlated, like
   real low-dose CT noise), converted back to HU (``* 1000 / mu_water``) and added to the HQ
   image. Adding only the noise keeps the geometry, resolution and mean of the HQ image: the
   radon/iradon round trip's own blur and ring errors cancel in the difference.

With the sample dataset's settings (128x128 pixels of 0.66 mm, ``I0`` = 5e4, 128 views) the
RMSE between LQ and HQ is about 40 HU; tests accept 15 to 100 HU.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

MU_WATER_PER_MM: float = 0.0192


def bicubic_down_up(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Bicubic downsampling by ``factor`` then bicubic upsampling back to the input size.

    image: (H, W) or (H, W, C) array, any real dtype. Returns float32 of the same shape. The small
    size is ``max(1, round(H / factor)) x max(1, round(W / factor))``.
    """
    from PIL import Image

    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    planes = image[..., None] if image.ndim == 2 else image
    h, w = planes.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))  # Pillow sizes are (W, H)
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(planes.shape[2]):  # one float plane per channel (Pillow has no float RGB)
        plane = Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32))
        down = plane.resize(small, Image.Resampling.BICUBIC)
        out[..., c] = np.asarray(down.resize((w, h), Image.Resampling.BICUBIC))
    return out[..., 0] if image.ndim == 2 else out


DERIVE_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bicubic_x4": partial(bicubic_down_up, factor=4),
}
"""LQ derivation methods a dataset definition may name in ``derive_lq``."""


def quantize(image: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range (returned as float32); floats pass unchanged."""
    dt = np.dtype(dtype)
    if dt.kind not in "iub":
        return image.astype(np.float32, copy=False)
    info = np.iinfo(dt) if dt.kind != "b" else np.iinfo(np.uint8)
    return np.clip(np.round(image), info.min, info.max).astype(np.float32)


def derive_lq(hq: np.ndarray, method: str, dtype: str | np.dtype) -> np.ndarray:
    """The LQ image exactly as it will be stored: ``DERIVE_METHODS[method](hq)`` quantised to dtype.

    hq: (H, W) or (H, W, C) float array in source units; dtype: the stored dtype of the HQ file
    (e.g. "uint8"). Returns float32 of hq's shape.
    """
    try:
        fn = DERIVE_METHODS[method]
    except KeyError:
        known = ", ".join(sorted(DERIVE_METHODS))
        raise ValueError(f"unknown derive_lq method {method!r} (known: {known})") from None
    return quantize(fn(hq), dtype)


def simulate_low_dose_ct(
    hu: np.ndarray,
    rng: np.random.Generator,
    *,
    photons: float = 5e4,
    pixel_mm: float = 1.0,
    n_angles: int | None = None,
    mu_water: float = MU_WATER_PER_MM,
) -> np.ndarray:
    """Low-dose version of a CT slice by Poisson noise insertion in its projections (module doc).

    hu: (H, W) in Hounsfield units. photons: incident photons per detector bin and view (I0).
    pixel_mm: pixel size in mm. n_angles: views over 180 degrees (default max(H, W)).
    Returns float32 (H, W) in HU, same geometry as ``hu``.
    """
    from skimage.transform import iradon, radon

    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {hu.shape}")
    h, w = hu.shape
    size = max(h, w)
    theta = np.linspace(0.0, 180.0, n_angles or size, endpoint=False)
    mu = np.zeros((size, size), dtype=np.float64)  # square canvas, air outside the image
    top, left = (size - h) // 2, (size - w) // 2
    mu[top : top + h, left : left + w] = np.clip(mu_water * (1.0 + hu / 1000.0), 0.0, None)

    line_integrals = radon(mu, theta=theta, circle=False) * pixel_mm  # (detectors, views)
    counts = rng.poisson(photons * np.exp(-line_integrals))
    noisy = -np.log(np.maximum(counts, 1) / photons)

    def fbp(sinogram: np.ndarray) -> np.ndarray:
        return iradon(
            sinogram / pixel_mm, theta=theta, filter_name="ramp", circle=False, output_size=size
        )

    noise_mu = fbp(noisy) - fbp(line_integrals)  # (size, size) in 1/mm
    noise_hu = noise_mu[top : top + h, left : left + w] * (1000.0 / mu_water)
    return (hu + noise_hu).astype(np.float32)


def derive_versions() -> dict[str, str]:
    """Versions of the libraries whose arithmetic derived LQ images depend on (recorded beside them)."""
    import PIL

    return {"Pillow": PIL.__version__, "numpy": np.__version__}
