"""Medical image readers and writer: PNG, JPEG, TIFF, DICOM (file or series directory), NIfTI.

Every reader returns a float32 array in the image's own units (8/16-bit intensities kept as they
are, CT in Hounsfield units) plus an :class:`ImageMeta`. 2-D images are ``(H, W)`` (gray) or
``(H, W, C)`` (colour); volumes are ``(H, W, N)`` (``(H, W, N, C)`` for colour multi-frame DICOM).

- PNG/JPEG (Pillow): 8 and 16 bit; palette and RGBA become RGB, gray+alpha becomes gray.
- TIFF (tifffile): one page per 2-D image; a multi-page file needs ``page=`` (``read_volume``
  stacks equal-shaped pages along the last axis).
- DICOM (pydicom): modality LUT applied (rescale slope/intercept: CT in HU), MONOCHROME1 inverted
  so that high values are bright, spacing from PixelSpacing. A multi-frame file is a volume of its
  frames in file order. Compressed transfer syntaxes need a decoder plugin (``pip install
  rat-restore[dicom]``); RLE Lossless decodes natively.
- DICOM series: a directory of DICOM files (``*.dcm``, ``*.dicom``, ``*.ima``; or, when there are
  none, every file with the DICM preamble) sorted along the slice normal by ImagePositionPatient
  (fallback InstanceNumber, then file name), stacked to ``(H, W, N)``.
- NIfTI (nibabel, ``.nii``/``.nii.gz``): scaling applied, voxel axes as stored.

Headers are checked against ``max_pixels`` before any pixel is decoded (for volumes the whole
volume counts). Every failure is an :class:`ImageReadError` whose message is one line
``"<path>: <reason>"``.

The formats, in one table (suffixes, signatures, opener, writer, geometry), are :mod:`rat.shared.io.formats`;
the entry points are in :mod:`rat.shared.io.images`; the formats' own modules :mod:`rat.shared.io.raster`
(PNG, JPEG, TIFF), :mod:`rat.shared.io.dicom` (files, series), :mod:`rat.shared.io.dicom_write` (pixel data
into a template, derived series), :mod:`rat.shared.io.dicom_geometry` (where DICOM voxels lie; series as ITK
reads them) and :mod:`rat.shared.io.volumes` (NIfTI reading, writing, slicing); the geometry (RAS affines of
what the readers return) in :mod:`rat.shared.io.geometry`, label maps as NIfTI for viewers (one volume per
DICOM series) in :mod:`rat.shared.io.label_volumes`, the shared error and records in
:mod:`rat.shared.io.base`.

This package's ``__init__`` only gathers the public names.
"""

from rat.shared.io.base import DEFAULT_MAX_PIXELS, ImageMeta, ImageReadError, PathLike
from rat.shared.io.dicom import dicom_slice_files, series_files
from rat.shared.io.dicom_write import write_derived_series
from rat.shared.io.geometry import image_affine, slice_affine, to_itk_order, volume_affine
from rat.shared.io.images import is_volume, read_image, read_volume, volume_shape, write_image
from rat.shared.io.volumes import write_nifti

__all__ = [
    "DEFAULT_MAX_PIXELS", "ImageMeta", "ImageReadError", "PathLike", "dicom_slice_files", "image_affine",
    "is_volume", "read_image", "read_volume", "series_files", "slice_affine", "to_itk_order", "volume_affine",
    "volume_shape", "write_derived_series", "write_image", "write_nifti",
]
