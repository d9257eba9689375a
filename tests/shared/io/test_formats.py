"""The format table (rat.shared.io.formats): every suffix the package accepts comes from it, and a format
added to it alone is read, written, placed, indexed and restored like the others."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import CT_SMALL
from PIL import Image

from rat.shared.index.build import derived_rel
from rat.shared.io import formats, image_affine, read_image, write_image
from rat.shared.io.base import Source
from rat.shared.io.formats import DICOM, FORMATS, NIFTI, PNG, TIFF, Format
from rat.training.inference.inputs import collect_scans
from rat.training.inference.restore_scans import output_path, regions_path

REPO = Path(__file__).resolve().parents[3]
PACKAGE = ("precompute", "shared", "training")
TABLE = REPO / "shared" / "io" / "formats.py"


def table_sources() -> set[Path]:
    """formats.py and the format modules its entries come from (the package modules it imports)."""
    found = {TABLE}
    for node in ast.walk(ast.parse(TABLE.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rat.shared.io."):
            found.add(REPO / "shared" / "io" / f"{node.module.rsplit('.', 1)[-1]}.py")
    return found


def constants(source: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a module but its docstrings."""
    tree = ast.parse(source.read_text())
    bodies = [n.body for n in ast.walk(tree)
              if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    docstrings = {id(b[0].value) for b in bodies
                  if b and isinstance(b[0], ast.Expr) and isinstance(b[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_every_suffix_and_format_name_the_package_writes_comes_from_the_table():
    """Outside the table and the format modules it takes its entries from, no module spells an image suffix
    (".png", ".nii.gz", ...) or dispatches on a format's name ("dicom", "nifti", ...): they ask the table."""
    suffixes = {s for f in FORMATS.values() for s in f.suffixes}
    names = set(FORMATS)
    own = table_sources()
    assert {p.name for p in own} >= {"formats.py", "raster.py", "dicom.py", "volumes.py"}
    stray = []
    for folder in PACKAGE:
        for source in sorted((REPO / folder).rglob("*.py")):
            if source in own:
                continue
            stray += [f"{source.relative_to(REPO)}:{line} {text!r}" for line, text in constants(source)
                      if text.lower() in suffixes or text in names]
    assert stray == []


def test_the_rule_finds_a_suffix_spelt_outside_the_table(tmp_path):
    source = tmp_path / "consumer.py"
    source.write_text('"""Doc naming .png is fine."""\n\n'
                      'def f(p):\n    return p.endswith((".nii", ".nii.gz"))\n')
    assert [text for _, text in constants(source)] == [".nii", ".nii.gz"]


def test_names_are_read_by_the_longest_suffix_then_by_signature(tmp_path):
    assert formats.by_suffix("a/b/Scan.NII.GZ") is NIFTI and formats.suffix_of("x/Scan.NII.GZ") == ".NII.GZ"
    assert formats.stem_of("scan.nii.gz") == "scan" and formats.stem_of("a.b.xyz") == "a.b"
    assert formats.by_suffix("slide.tiff") is TIFF and formats.by_suffix("notes.txt") is None
    plain = tmp_path / "IM0001"
    plain.write_bytes(CT_SMALL.read_bytes())
    assert formats.detect(plain) is DICOM and formats.detect(tmp_path) is FORMATS["dicom-series"]
    assert formats.output_name("a/x.JPG") == Path("a/x.png") and formats.output_name("x.dcm") == Path("x.dcm")
    assert formats.labels_name(Path("o/x.dcm"), "_regions") == Path("o/x_regions.nii.gz")
    assert formats.labels_name(Path("o/x.tif"), "_regions") == Path("o/x_regions.png")
    assert formats.labels_name(Path("o/series_1"), "_regions") == Path("o/series_1_regions.nii.gz")


# ----------------------------------------------------------------------------- a format added to the table


def _open_pgm(path: Path, page, stack, header_only) -> Source:
    with Image.open(path) as im:
        shape = (im.size[1], im.size[0])
    return Source(format="pgm", shape=shape, volume=False, source_dtype="uint8", spacing=None, modality=None,
                  load=lambda: np.asarray(Image.open(path)).astype(np.float32))


def _write_pgm(tmp: Path, out: Path, arr: np.ndarray, like) -> None:
    Image.fromarray(arr).save(tmp, format="PPM")


PGM = Format("pgm", "PGM", (".pgm",), _open_pgm, signature=lambda head: head[:2] == b"P5", write=_write_pgm,
             dtypes=("uint8",))


@pytest.fixture
def pgm(monkeypatch):
    """The table with one more format: portable graymaps, read and written by Pillow (a module of its own in
    the package; here the test's functions)."""
    monkeypatch.setitem(FORMATS, "pgm", PGM)
    return PGM


def test_a_format_added_to_the_table_is_read_written_and_placed(pgm, tmp_path):
    image = np.arange(12 * 16, dtype=np.float32).reshape(12, 16)
    write_image(tmp_path / "a.pgm", image)
    assert (tmp_path / "a.pgm").read_bytes()[:2] == b"P5"              # Pillow's own portable graymap
    back, meta = read_image(tmp_path / "a.pgm")
    assert meta.format == "pgm" and np.array_equal(back, image)
    (tmp_path / "noname").write_bytes((tmp_path / "a.pgm").read_bytes())
    assert read_image(tmp_path / "noname")[1].format == "pgm"          # by its signature
    assert np.array_equal(image_affine(tmp_path / "a.pgm"), np.eye(4))   # no geometry: 1 mm pixels
    with pytest.raises(Exception, match=r"cannot write this extension \(use .*\.pgm\)"):
        write_image(tmp_path / "a.bmp", image)


def test_a_format_added_to_the_table_is_indexed_and_restored_as_the_others(pgm, tmp_path):
    for name in ("a.pgm", "b.png", "notes.txt"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        if name.endswith(".txt"):
            (tmp_path / "in" / name).write_text("not an image")
        else:
            write_image(tmp_path / "in" / name, np.zeros((4, 4)), dtype="uint8")
    scans, others = collect_scans([str(tmp_path / "in")])
    assert sorted(s.name for s in scans) == ["in/a.pgm", "in/b.png"] and others == []
    assert derived_rel("d", "hq/a.pgm") == ".rat/derived/d/hq/a.pgm"
    scan = next(s for s in scans if s.name.endswith(".pgm"))
    target = output_path(tmp_path / "out", scan)
    assert target == tmp_path / "out" / "in" / "a.pgm" and regions_path(target).name == "a_regions.png"
    lossy = replace(PGM, written_as=PNG.name, labels_as=NIFTI.name)     # one entry says it: nothing else
    FORMATS["pgm"] = lossy
    assert output_path(tmp_path, scan).name == "a.png" and derived_rel("d", "a.pgm").endswith("a.png")
    assert regions_path(tmp_path / "a.pgm").name == "a_regions.nii.gz"
