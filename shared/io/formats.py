"""The image formats, in one table: how a file of each is recognised, opened, written and placed in space.

Everything else asks this table (:data:`FORMATS`, :func:`format_of`, ...): the readers and writers of
:mod:`rat.shared.io.images`, the geometry (:mod:`rat.shared.io.geometry`), the index (derived images), and
restoring (which inputs are images, where outputs and their label maps go). A new format is one module (its
opener, and its writer when it has one) and one :class:`Format` entry here; nothing else names formats.

Recognition: a folder is a DICOM series; a file by the ending of its name (case-insensitive, longest
suffix first: ``.nii.gz`` before anything shorter), else by the signature of its first bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rat.shared.io.base import ImageReadError, PathLike, Source
from rat.shared.io.dicom import DICOM_SUFFIXES, has_preamble, open_dicom, open_series
from rat.shared.io.dicom_geometry import dicom_file_geometry, series_geometry
from rat.shared.io.dicom_write import write_from_template
from rat.shared.io.raster import open_pillow, open_tiff, write_jpeg, write_png, write_tiff
from rat.shared.io.volumes import NIFTI_SUFFIXES, nifti_geometry, open_nifti, write_nifti_like

#: Bytes of a file read to recognise it by its signature.
SIGNATURE_BYTES = 352

#: Opens a file (or folder) from its header: (path, page, stack pages as a volume, header only) -> Source.
Opener = Callable[[Path, "int | None", bool, bool], Source]
#: Writes an (H, W) or (H, W, C) array (in the dtype to store) to a temporary file: (tmp, out, array, like).
Writer = Callable[[Path, Path, np.ndarray, "Path | None"], None]
#: (affine, shape, whether a volume) of what the readers return for a file (:mod:`rat.shared.io.geometry`).
Geometry = Callable[[Path], "tuple[np.ndarray, tuple[int, ...], bool]"]


@dataclass(frozen=True)
class Format:
    """One image format (see the module doc)."""

    name: str                       # as ImageMeta.format says it
    label: str                      # as messages say it
    suffixes: tuple[str, ...]       # file name endings, lower case; the first is the one written
    open: Opener
    signature: Callable[[bytes], bool] | None = None   # recognises the first SIGNATURE_BYTES of a file
    folder: bool = False            # a folder of files (a DICOM series), not a file
    pages: bool = False             # 2-D images picked from a file by page (TIFF)
    write: Writer | None = None     # how write_image writes it (None: not written)
    dtypes: tuple[str, ...] = ()    # what `write` stores; () : the template's (like=) dtype
    default_dtype: str | None = None    # what it stores without a template or dtype (None: the first)
    geometry: Geometry | None = None    # its own affine; None: the diagonal of the reader's spacing
    itk_transposed: bool = True     # ITK (ITK-SNAP, Slicer) indexes its arrays (column, row)
    written_as: str | None = None   # images made from its files are written in this format (lossy JPEG: PNG)
    labels_as: str = "png"          # the format of the label map written beside one of its images
    series: bool = False            # its files are slices of DICOM series (restored into derived series)

    @property
    def suffix(self) -> str:
        """The suffix of files this package writes in the format."""
        return self.suffixes[0]


PNG = Format("png", "PNG", (".png",), lambda p, page, stack, header: open_pillow(p),
             signature=lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
             write=write_png, dtypes=("uint8", "uint16"))
JPEG = Format("jpeg", "JPEG", (".jpg", ".jpeg"), lambda p, page, stack, header: open_pillow(p),
              signature=lambda head: head.startswith(b"\xff\xd8\xff"),
              write=write_jpeg, dtypes=("uint8",), written_as="png")
TIFF = Format("tiff", "TIFF", (".tif", ".tiff"),
              lambda p, page, stack, header: open_tiff(p, page, stack=stack),
              signature=lambda head: head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), pages=True,
              write=write_tiff, default_dtype="float32",
              dtypes=("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"))
DICOM = Format("dicom", "DICOM", DICOM_SUFFIXES,
               lambda p, page, stack, header: open_dicom(p, header_only=header), signature=has_preamble,
               write=write_from_template, geometry=dicom_file_geometry, labels_as="nifti", series=True)
DICOM_SERIES = Format("dicom-series", "DICOM series", (), lambda p, page, stack, header: open_series(p),
                      folder=True, geometry=series_geometry, labels_as="nifti", series=True)
NIFTI = Format("nifti", "NIfTI", NIFTI_SUFFIXES, lambda p, page, stack, header: open_nifti(p),
               signature=lambda head: head[344:348] == b"n+1\0", write=write_nifti_like,
               geometry=nifti_geometry, itk_transposed=False, labels_as="nifti")

#: Every format, by name, in the order signatures are tried: DICOM first, whose 128-byte preamble may hold
#: another format's signature (files that are both DICOM and TIFF exist).
FORMATS: dict[str, Format] = {f.name: f for f in (DICOM, DICOM_SERIES, PNG, JPEG, TIFF, NIFTI)}


def _by_suffix() -> list[tuple[str, Format]]:
    """(suffix, format), longest suffix first."""
    pairs = [(s, f) for f in FORMATS.values() for s in f.suffixes]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def by_suffix(path: PathLike) -> Format | None:
    """The format a file name says (its suffix; no file is read), or None."""
    name = Path(path).name.lower()
    return next((f for s, f in _by_suffix() if name.endswith(s)), None)


def suffix_of(path: PathLike) -> str:
    """The suffix of ``path`` as the table reads it (``.nii.gz`` whole), else its last (``Path.suffix``)."""
    name = Path(path).name
    return next((name[-len(s):] for s, _ in _by_suffix() if name.lower().endswith(s)), Path(path).suffix)


def stem_of(path: PathLike) -> str:
    """The name of ``path`` without :func:`suffix_of`."""
    name = Path(path).name
    return name[: len(name) - len(suffix_of(path))]


def by_signature(path: PathLike) -> Format | None:
    """The format whose signature the first bytes of a file carry, or None (unreadable files too)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SIGNATURE_BYTES)
    except OSError:
        return None
    return next((f for f in FORMATS.values() if f.signature is not None and f.signature(head)), None)


def detect(path: PathLike) -> Format | None:
    """The format of a file or folder (see the module doc), or None when it is none of the table's."""
    p = Path(path)
    if p.is_dir():
        return next(f for f in FORMATS.values() if f.folder)
    return by_suffix(p) or by_signature(p)


def format_of(path: PathLike) -> Format:
    """The format of an existing file or folder (:func:`detect`); ImageReadError naming it when it does not
    exist or is of none of the table's formats."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(path, "no such file or directory")
    fmt = detect(p)
    if fmt is None:
        raise ImageReadError(p, f"unknown image format (extension '{p.suffix}'; expected {readable()})")
    return fmt


def is_image(path: PathLike) -> bool:
    """Whether ``path`` is a file of one of the table's formats (by name or signature)."""
    return Path(path).is_file() and detect(path) is not None


def readable() -> str:
    """The formats read, for messages: ".png, .jpg, ... or a directory holding a DICOM series"."""
    files = [s for f in FORMATS.values() for s in f.suffixes[:1]]
    folders = [f.label for f in FORMATS.values() if f.folder]
    return ", ".join(files) + "".join(f" or a directory holding a {label}" for label in folders)


def writable() -> str:
    """The suffixes :func:`rat.shared.io.write_image` writes, for messages."""
    names = [f.suffix for f in FORMATS.values() if f.write is not None]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def output_name(path: PathLike) -> Path:
    """Where an image made from the file ``path`` goes, given that path: the same, but with the suffix of the
    format it is written in (a JPEG's as PNG: no lossy re-encoding)."""
    p = Path(path)
    fmt = by_suffix(p)
    if fmt is None or fmt.written_as is None:
        return p
    return p.with_name(stem_of(p) + FORMATS[fmt.written_as].suffix)


def labels_name(path: PathLike, tag: str) -> Path:
    """Where the label map of the image (or series folder) ``path`` goes: beside it, ``<stem><tag>`` and the
    suffix of its format's ``labels_as`` (NIfTI for DICOM, NIfTI and folders; PNG for the others)."""
    p = Path(path)
    fmt = by_suffix(p) or (DICOM_SERIES if p.suffix == "" else PNG)
    return p.with_name(f"{stem_of(p)}{tag}{FORMATS[fmt.labels_as].suffix}")
