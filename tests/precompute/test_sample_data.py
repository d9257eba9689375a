"""The sample dataset (rat.precompute.sample_data), its index, and the two CLI commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from rat.precompute.cli import main
from rat.precompute.sample_data import ct_small_path, make_sample_data
from rat.shared.datasets import load_dataset, split_units
from rat.shared.datasets.degrade import derive_lq
from rat.shared.hashes import sha256_file
from rat.shared.index import (
    index_path,
    load_index,
    problems_path,
    read_hq,
    read_lq,
    write_index,
)
from rat.shared.index.build import build_index
from rat.shared.index.entries import write_problems
from rat.shared.io import read_image

CT_RMSE_HU = (15.0, 100.0)  # documented range of the simulated low-dose noise (degrade.py)


def all_files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def index_dataset(root: Path):
    ds = load_dataset("sample")
    entries, problems = build_index(ds, root, progress=False)
    write_index(entries, index_path(ds, root))
    write_problems(problems, problems_path(index_path(ds, root)))
    return ds, entries, problems


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample dataset made and indexed twice, in two folders."""
    roots = [tmp_path_factory.mktemp(f"run{i}") / "data" for i in range(2)]
    written = make_sample_data(roots[0])
    make_sample_data(roots[1], seed=0)
    ds, entries, problems = index_dataset(roots[0])
    index_dataset(roots[1])
    return ds, roots, written, entries, problems


def test_same_seed_same_bytes_in_two_folders(sample):
    _, (a, b), written, _, _ = sample
    files_a, files_b = all_files(a), all_files(b)
    assert files_a == files_b  # images, README, derived LQ, index and problems files
    assert ".rat/sample.csv" in files_a and ".rat/derived/sample/pathology/hq/ihc_00.png" in files_a
    assert sorted(p.relative_to(a).as_posix() for p in written) == sorted(
        f for f in files_a if not f.startswith(".rat/"))


def test_another_seed_other_images(sample, tmp_path):
    _, (a, _), _, _, _ = sample
    make_sample_data(tmp_path, seed=1)
    assert sha256_file(tmp_path / "ct" / "lq" / "ct_00.dcm") != sha256_file(a / "ct/lq/ct_00.dcm")
    assert sha256_file(tmp_path / "pathology/hq/ihc_00.png") != sha256_file(
        a / "pathology/hq/ihc_00.png")


def test_index_is_complete_paired_and_split_as_defined(sample):
    ds, (root, _), _, entries, problems = sample
    assert problems == []
    assert [e.id for e in entries] == [f"ct_{i:02d}" for i in range(8)] + [
        f"ihc_{i:02d}" for i in range(8)]
    for e in entries:
        group = "ct" if e.id.startswith("ct") else "pathology"
        assert e.group == group and (root / e.lq).is_file() and (root / e.hq).is_file()
        assert e.shape == ((128, 128) if group == "ct" else (192, 192, 3))
        assert e.sha256 == sha256_file(root / e.lq) and e.slice is None
    assert {e.hq.rsplit(".", 1)[1] for e in entries if e.group == "pathology"} == {"png", "tif"}
    assert load_index(ds, root) == entries
    for name, group in ds.groups.items():
        mine = {e.id: e.split for e in entries if e.group == name}
        assert list(mine.values()).count("test") == 2
        assert mine == split_units(group.split, mine)


def test_ct_lq_is_noisy_hq_with_the_templates_hu_tags(sample):
    _, (root, _), _, entries, _ = sample
    template = pydicom.dcmread(ct_small_path())
    rmses = []
    for e in (e for e in entries if e.group == "ct"):
        hq, hq_meta = read_hq(e, root)
        lq, lq_meta = read_lq(e, root)
        assert lq_meta.modality == "CT" and lq_meta.spacing == hq_meta.spacing
        ds = pydicom.dcmread(root / e.lq)
        assert (ds.RescaleSlope, ds.RescaleIntercept) == (template.RescaleSlope,
                                                         template.RescaleIntercept)
        np.testing.assert_array_equal(lq, ds.pixel_array * float(ds.RescaleSlope)
                                      + float(ds.RescaleIntercept))
        assert ds.SOPInstanceUID != template.SOPInstanceUID
        diff = lq - hq
        rmses.append(float(np.sqrt(np.mean(diff**2))))
        assert abs(diff.mean()) < 5  # noise, not a bias
    assert all(CT_RMSE_HU[0] < r < CT_RMSE_HU[1] for r in rmses), rmses
    # HQ variants are CT_small itself, moved: same HU values, different arrangements
    original, _ = read_image(ct_small_path())
    hqs = [read_hq(e, root)[0] for e in entries if e.group == "ct"]
    assert len({h.tobytes() for h in hqs}) == 8
    assert all(np.isin(h, original).all() for h in hqs)


def test_derived_pathology_lq_equals_degrade_of_hq(sample):
    _, (root, _), _, entries, _ = sample
    for e in (e for e in entries if e.group == "pathology"):
        hq, meta = read_hq(e, root)
        lq, lq_meta = read_lq(e, root)
        assert lq_meta.format == meta.format and e.lq.startswith(".rat/derived/sample/")
        np.testing.assert_array_equal(lq, derive_lq(hq, "bicubic_x4", "uint8"))
        assert np.abs(lq - hq).mean() > 1  # really degraded


def test_readme_says_where_images_came_from(sample):
    text = (sample[1][0] / "README.txt").read_text()
    assert "ihc.png" in text and "CT_small.dcm" in text and "seed 0" in text


def test_unpaired_and_unreadable_files_are_listed_and_left_out(sample, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(sample[1][0], root, ignore=shutil.ignore_patterns(".rat"))
    (root / "pathology/hq/ihc_99.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    shutil.copy(root / "ct/hq/ct_00.dcm", root / "ct/hq/ct_99.dcm")  # HQ without LQ
    shutil.copy(root / "ct/lq/ct_00.dcm", root / "ct/lq/ct_98.dcm")  # LQ without HQ
    shutil.copy(root / "ct/hq/ct_01.dcm", root / "ct/hq/ct_97.dcm")
    data = (root / "ct/lq/ct_01.dcm").read_bytes()
    (root / "ct/lq/ct_97.dcm").write_bytes(data[: len(data) // 2])  # truncated LQ
    ds, entries, problems = index_dataset(root)
    assert len(entries) == 16 and not any(e.id.endswith(("97", "98", "99")) for e in entries)
    assert [p.path for p in problems] == ["ct/hq/ct_99.dcm", "ct/lq/ct_97.dcm", "ct/lq/ct_98.dcm",
                                          "pathology/hq/ihc_99.png"]
    assert problems[0].reason.startswith("no LQ file pairs with it")
    assert problems[2].reason.startswith("no HQ file pairs with it")
    assert all("\n" not in p.reason for p in problems)
    listed = problems_path(index_path(ds, root)).read_text().splitlines()
    assert listed[0] == "path,reason" and len(listed) == 5


def test_cli_sample_data_and_index(tmp_path, sample):
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(main, ["sample-data", str(data), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "wrote 25 files" in result.output
    result = runner.invoke(main, ["index", "--dataset", "sample", "--root", str(data),
                                  "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "16 images indexed, 0 problem(s)" in result.output
    for group in ("ct", "pathology"):
        assert f"{group}: train 5, val 1, test 2" in result.output
    first_run = sample[1][0] / ".rat/sample.csv"
    assert (data / ".rat/sample.csv").read_bytes() == first_run.read_bytes()

    custom = tmp_path / "elsewhere" / "idx.csv"
    result = runner.invoke(main, ["manifest", "--dataset", "sample", "--root", str(data),
                                  "--index", str(custom), "--no-progress"])
    assert result.exit_code == 0 and custom.is_file()
    assert (custom.parent / "idx.problems.csv").is_file()

    result = runner.invoke(main, ["index", "--dataset", "nosuch", "--root", str(data)])
    assert result.exit_code != 0 and "nosuch: not a .toml file" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["index", "--dataset", "sample", "--root", str(empty),
                                  "--no-progress"])
    assert result.exit_code != 0 and "no image pairs found" in result.output
    listed = runner.invoke(main, ["--help"]).output       # `manifest`: the older name, still accepted
    assert "  index " in listed and "manifest" not in listed
