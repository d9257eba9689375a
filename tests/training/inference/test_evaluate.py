"""Whole-image evaluation: tiling, metrics against scikit-image, tables, restore round trips, and the figures
of `eval --figure` (rat.training.figures)."""

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from rat.shared.datasets import load_dataset
from rat.shared.index import load_index
from rat.shared.index.locate import source_path
from rat.shared.io import read_image
from rat.shared.store import open_store
from rat.training.cli import main
from rat.training.data import load_full
from rat.training.inference.scores import (
    Score,
    format_table,
    score_image,
    summarize_scores,
    write_scores_csv,
)
from rat.training.inference.tiling import predict, tile_starts
from rat.training.model.network import build_model
from rat.training.normalisation import to_source

SAMPLE = load_dataset("sample")
CT, PATHOLOGY = SAMPLE.groups["ct"], SAMPLE.groups["pathology"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(sample_store) -> Path:
    return sample_store


class Pointwise(nn.Module):
    """A model without spatial context: tiling must not change its output at all."""

    attention = "rmsa"

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, image, labels):
        return image * self.scale + labels[:, None].to(image.dtype) * 0.01


@pytest.mark.parametrize(("size", "tile", "overlap"),
                         [(70, 32, 8), (512, 512, 32), (100, 33, 0), (3249, 512, 32)])
def test_tiles_cover_the_image_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + tile == max(size, tile)
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(size, tile, tile)


def test_tiled_inference_equals_one_pass_for_a_local_model():
    torch.manual_seed(0)
    image, labels = torch.rand(3, 70, 90), torch.randint(0, 9, (70, 90))
    model = Pointwise()
    whole = model(image[None], labels[None])[0]
    tiled = predict(model, image, labels, tile=32, overlap=8, batch=3)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)
    assert not torch.allclose(predict(model, image, torch.roll(labels, 1, 1), tile=32, overlap=8), whole)


def test_small_images_take_one_pass_of_the_real_model():
    torch.manual_seed(0)
    model = build_model("rat-small", 1, width=8).eval()
    image, labels = torch.rand(1, 40, 56), torch.randint(0, 4, (40, 56))
    with torch.no_grad():
        direct = model(image[None], labels[None])[0]
    assert torch.equal(predict(model, image, labels, tile=64), direct)
    tiled = predict(model, image, labels, tile=32, overlap=8)
    assert tiled.shape == (1, 40, 56) and torch.isfinite(tiled).all()


@pytest.mark.parametrize("group", [CT, PATHOLOGY])
def test_metrics_equal_scikit_image_in_source_units(group):
    rng = np.random.default_rng(0)
    c = group.channels
    hq = torch.from_numpy(rng.random((c, 48, 40), dtype=np.float32))
    lq = hq + 0.05 * torch.from_numpy(rng.standard_normal((c, 48, 40)).astype(np.float32))
    restored = hq + 0.02 * torch.from_numpy(rng.standard_normal((c, 48, 40)).astype(np.float32))
    restored[:, 0, 0] = 1.7  # beyond norm_high: clipped before scoring
    s = score_image("x", lq, hq, restored, group)

    def source(t, clip):
        a = t.double().numpy() * (group.norm_high - group.norm_low) + group.norm_low
        a = np.clip(a, group.norm_low, group.norm_high) if clip else a
        return a[0] if c == 1 else a.transpose(1, 2, 0)

    target, pred = source(hq, False), source(restored, True)
    axis = None if c == 1 else -1
    assert s.psnr == peak_signal_noise_ratio(target, pred, data_range=group.data_range)
    assert s.ssim == structural_similarity(target, pred, data_range=group.data_range, channel_axis=axis)
    assert s.lq_psnr == peak_signal_noise_ratio(target, source(lq, False), data_range=group.data_range)
    assert s.lq_ssim == structural_similarity(target, source(lq, False), data_range=group.data_range,
                                              channel_axis=axis)
    mse = np.mean((target - pred) ** 2)
    assert s.psnr == pytest.approx(10 * np.log10(group.data_range**2 / mse), rel=1e-12)
    assert s.psnr > s.lq_psnr


def test_tables_report_mean_and_std_over_images(tmp_path):
    scores = [Score("a", 30.0, 0.8, 25.0, 0.7), Score("b", 34.0, 0.9, 27.0, 0.75)]
    s = summarize_scores(scores)
    assert s["restored"] == {"psnr": 32.0, "psnr_std": 2.0, "ssim": pytest.approx(0.85),
                             "ssim_std": pytest.approx(0.05)}
    assert s["lq"]["psnr"] == 26.0 and s["lq"]["psnr_std"] == 1.0
    table = format_table(scores)
    assert "LQ input" in table and "32.0000 +- 2.0000" in table and "26.0000 +- 1.0000" in table
    rows = list(csv.DictReader(open(write_scores_csv(scores, tmp_path / "m.csv"))))
    assert [r["id"] for r in rows] == ["a", "b", "mean", "std"]
    assert float(rows[2]["psnr"]) == 32.0 and float(rows[3]["lq_psnr"]) == 1.0
    with pytest.raises(ValueError, match="no images"):
        summarize_scores([])


def bare_checkpoint(tmp_path, channels):
    torch.manual_seed(3)
    model = build_model("rat-small", channels, width=8)
    path = tmp_path / f"c{channels}.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_restore_writes_source_formats(store, sample_root, tmp_path):
    g = open_store(store)
    for group in (CT, PATHOLOGY):
        model, ck = bare_checkpoint(tmp_path, group.channels)
        out = tmp_path / "restored"
        result = run("restore", "--checkpoint", ck, "--model", "rat-small", "--masks", store, "--dataset",
                     "sample", "--root", sample_root, "--group", group.name, "--split", "all", "--out", out,
                     "--tile", "64", "--overlap", "16", "--no-progress")
        assert result.exit_code == 0, result.output
        assert "8 restored" in result.output
        entries = [e for e in load_index(SAMPLE, sample_root) if e.group == group.name]
        formats, series = set(), set()
        for e in entries:
            lq_path = source_path(sample_root, e.lq)
            written = out / group.name / f"{e.id}{lq_path.suffix}"
            pixels, meta = read_image(written)
            _, lq_meta = read_image(lq_path)
            formats.add(meta.format)
            assert (meta.format, meta.source_dtype, pixels.shape) == (lq_meta.format, lq_meta.source_dtype,
                                                                      e.shape)
            lq, _, labels = load_full(g, e, sample_root, group)
            expected = to_source(predict(model, torch.as_tensor(lq), torch.as_tensor(labels), 64, 16), group)
            np.testing.assert_allclose(pixels, expected, atol=0.5 + 1e-3)  # rounded to the stored integers
            if meta.format == "dicom":  # a new derived series in the same study
                new, old = pydicom.dcmread(written), pydicom.dcmread(lq_path)
                for tag in ("PatientID", "StudyInstanceUID", "RescaleIntercept", "RescaleSlope",
                            "PixelSpacing", "BitsStored", "ImagePositionPatient", "ImageOrientationPatient"):
                    assert new.get(tag) == old.get(tag), tag
                assert new.SOPInstanceUID != old.SOPInstanceUID
                assert new.SeriesInstanceUID != old.SeriesInstanceUID
                assert list(new.ImageType)[:2] == ["DERIVED", "SECONDARY"]
                series.add(new.SeriesInstanceUID)
        assert formats == ({"dicom"} if group is CT else {"png", "tiff"})
        assert len(series) == (1 if group is CT else 0)  # the files of one source series: one new series


def test_eval_cli_writes_csv_and_figure(store, sample_root, tmp_path):
    _, ck = bare_checkpoint(tmp_path, 3)
    result = run("eval", "--checkpoint", ck, "--model", "rat-small", "--masks", store, "--dataset", "sample",
                 "--root", sample_root, "--group", "pathology", "--tile", "128", "--overlap", "32",
                 "--figure", tmp_path / "fig.png", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "LQ input" in result.output and "(2 images)" in result.output
    rows = list(csv.DictReader(open(tmp_path / "eval_pathology_test.csv")))
    assert [r["id"] for r in rows][-2:] == ["mean", "std"] and len(rows) == 4
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    result = run("eval", "--checkpoint", tmp_path / "missing.pt", "--masks", store, "--dataset", "sample",
                 "--root", sample_root, "--group", "ct")
    assert result.exit_code != 0 and "missing.pt' does not exist" in result.output


def test_a_run_that_recorded_relative_paths_is_evaluated_from_another_folder(sample_store, sample_root,
                                                                             tmp_path, monkeypatch):
    """Runs made before locations were recorded resolved hold `sample.zarr` and `runs/ct`: `eval` of
    their checkpoint from another working directory finds the store where the run was started."""
    import shutil

    from rat.training.trainer import train

    work = tmp_path / "work"
    shutil.copytree(sample_store, work / "sample.zarr")
    monkeypatch.chdir(work)
    train({"masks": "sample.zarr", "root": str(sample_root), "out": "runs/ct", "dataset": "sample",
           "group": "ct", "model": "rat-small", "width": 8, "patch_size": 32, "batch_size": 2, "iters": 1,
           "workers": 0, "val_limit": 1, "progress": False})
    path = work / "runs" / "ct" / "last.pt"
    ck = torch.load(path, weights_only=True)
    ck["config"].update(masks="sample.zarr", out="runs/ct")     # as older versions recorded them
    torch.save(ck, path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(path), "--csv", str(tmp_path / "e.csv"),
                                       "--no-progress"])
    assert result.exit_code == 0 and "LQ input" in result.output, result.output
