"""`rat-train compare`: two short runs scored on the same test images, paired; mismatches refused."""

import csv

import pytest
from click.testing import CliRunner
from helpers import TINY_RUN

from rat.training.cli import main
from rat.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(sample_store, sample_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    models = (("rmsa", "ct", "rmsa"), ("wmsa", "ct", "wmsa"), ("path", "pathology", "rmsa"))
    for name, group, attention in models:
        train({**TINY_RUN, "masks": str(sample_store), "root": str(sample_root), "out": str(base / name),
               "group": group, "attention": attention, "iters": 2, "eval_every": 2})
    return base


def test_compare_prints_paired_differences_and_writes_the_table_and_figure(runs, tmp_path):
    result = CliRunner().invoke(main, ["compare", str(runs / "rmsa"), str(runs / "wmsa"), "--csv",
                                       str(tmp_path / "t.csv"), "--figure", str(tmp_path / "box.png"),
                                       "--resamples", "500", "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "sample/ct, split test" and "(2 images, paired against rmsa)" in lines[1]
    assert lines[2].startswith("LQ input") and lines[3].startswith("rmsa") and "(baseline)" in lines[3]
    assert lines[4].startswith("wmsa") and "[" in lines[4]
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 2 and all(r["id"].startswith("ct_") for r in rows)
    assert set(rows[0]) == {"id", "unit", "LQ input:psnr", "LQ input:ssim", "rmsa:psnr", "rmsa:ssim",
                            "wmsa:psnr", "wmsa:ssim"}
    assert (tmp_path / "box.png").read_bytes()[:4] == b"\x89PNG"


def test_models_of_another_group_are_refused_in_one_line(runs):
    result = CliRunner().invoke(main, ["compare", str(runs / "rmsa"), str(runs / "path"), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == ("Error: path: a model of sample/pathology, but rmsa is "
                                                      "one of sample/ct; compare models of one group")


def test_the_same_run_twice_is_refused_and_few_images_are_warned_about(runs):
    result = CliRunner().invoke(main, ["compare", str(runs / "rmsa"), str(runs / "rmsa" / "best.pt"),
                                       "--no-progress"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == "Error: rmsa-2: the same file as rmsa; compare different models"
    result = CliRunner().invoke(main, ["compare", str(runs / "rmsa"), str(runs / "wmsa"), "--resamples",
                                       "200", "--no-progress"])
    assert result.exit_code == 0
    assert ("warning: only 2 paired images: a two-sided Wilcoxon signed-rank test needs at least 6 to reach "
            "p < 0.05 (its smallest p-value is 0.5 here)") in result.output


def test_compare_takes_the_store_by_masks_from_any_folder(runs, sample_store, tmp_path, monkeypatch):
    """--masks names the store (once for all models, or once per model), e.g. when the runs' own are not
    reachable from here."""
    import torch

    for name in ("rmsa", "wmsa"):                      # runs whose recorded store is gone
        ck = torch.load(runs / name / "best.pt", weights_only=True)
        ck["config"]["masks"] = str(tmp_path / "moved.zarr")
        torch.save(ck, tmp_path / f"{name}.pt")
    monkeypatch.chdir(tmp_path)
    args = ["compare", str(tmp_path / "rmsa.pt"), str(tmp_path / "wmsa.pt"), "--resamples", "200",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "moved.zarr: no such store" in result.output
    result = CliRunner().invoke(main, [*args, "--masks", str(sample_store)])
    assert result.exit_code == 0 and "(2 images, paired against rmsa)" in result.output, result.output
    result = CliRunner().invoke(main, [*args, "--masks", str(sample_store), "--masks", str(sample_store)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*args, *["--masks", str(sample_store)] * 3])
    assert result.exit_code == 1 and "--masks: given 3 times for 2 models" in result.output
