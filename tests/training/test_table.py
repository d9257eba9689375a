"""`rat-train table` (rat.training.table, rat.training.table_report): every row trained by one protocol,
scored once on the test split, paired against RAT as `compare` does, measured (parameters, FLOPs against the
convolution formula), written as CSV, Markdown and a figure grid; a second run reuses the runs."""

import csv
import json
import re

import pytest
from click.testing import CliRunner

from rat.training.cli import main
from rat.training.inference.compare import LQ, paired
from rat.training.table import Recipe, Row, gflops, load_recipe, make_table
from rat.training.table_report import format_table, table_rows

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = {"iters": 2, "batch_size": 2, "patch_size": 32, "eval_every": 2, "workers": 0, "val_limit": 1,
         "progress": False}


def test_table_of_rat_and_baselines_by_the_command(sample_store, sample_root, tmp_path):
    recipe = tmp_path / "t.toml"
    recipe.write_text('notes = ["two steps: a smoke test"]\n[train]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in TRAIN.items() if k != "progress")
        + '[models.rat-small]\nparams = { width = 8 }\n[models.srcnn]\nparams = { n1 = 8, n2 = 4 }\n')
    out = tmp_path / "table"
    args = ["table", "--recipe", str(recipe), "--masks", str(sample_store), "--root", str(sample_root),
            "--group", "ct", "--out", str(out), "--no-progress", "--resamples", "200"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "paired against rat-small" in result.output and "note: two steps: a smoke test" in result.output
    assert {p.name for p in out.iterdir()} >= {"runs", "table.csv", "table.md", "table.png"}
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["model"] for r in rows] == [LQ, "rat-small", "srcnn"]
    assert rows[2]["network"] == "SRCNNNet (rat-restore 0.1.0)" and rows[2]["status"] == "trained"
    # srcnn 9-1-5 with 8 and 4 filters: parameters and the FLOPs of its three convolutions (2 per MAC)
    assert int(rows[2]["params"]) == 81 * 8 + 8 + 8 * 4 + 4 + 25 * 4 + 1
    assert float(rows[2]["gflops"]) == pytest.approx(2 * 256 * 256 * (81 * 8 + 8 * 4 + 25 * 4) / 1e9)
    md = (out / "table.md").read_text()
    assert "| rat-small | RAT (rat-restore 0.1.0) |" in md and "(baseline)" in md and "two steps" in md
    # a second run reuses every run: nothing is trained again
    stamp = (out / "runs" / "srcnn" / "last.pt").stat().st_mtime_ns
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and (out / "runs" / "srcnn" / "last.pt").stat().st_mtime_ns == stamp
    assert [r["status"] for r in csv.DictReader(open(out / "table.csv"))][1:] == ["reused (2 steps)"] * 2
    # `compare` takes a baseline's run like RAT's, with the same paired numbers
    runs = [str(out / "runs" / name) for name in ("rat-small", "srcnn")]
    result = CliRunner().invoke(main, ["compare", *runs, "--no-progress", "--resamples", "200"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("srcnn"))
    assert f"{float(rows[2]['dpsnr']):+.4f}" in line


def test_paired_statistics_are_those_of_compare(sample_store, sample_root, tmp_path):
    recipe = Recipe([Row("dncnn", "dncnn", {"nc": 8, "nb": 3}), Row("rat", "rat-small", {"width": 8}),
                     Row("cnn", "srcnn", {"n1": 4, "n2": 4})], dict(TRAIN))
    common = {"masks": str(sample_store), "root": str(sample_root), "group": "ct"}
    table = make_table(recipe, common, tmp_path / "t", resamples=500, seed=3, say=lambda s: None)
    assert table.baseline == "rat"  # the RAT row, although not first
    rows = {r["model"]: r for r in table_rows(table)}
    base = {s.id: s for s in table.rows[1].split.scores}
    other = {s.id: s for s in table.rows[0].split.scores}
    ids = sorted(base)
    direct = paired([base[i].psnr for i in ids], [other[i].psnr for i in ids], resamples=500, seed=3)
    assert rows["dncnn"]["dpsnr"] == pytest.approx(sum(other[i].psnr - base[i].psnr for i in ids) / len(ids))
    assert (rows["dncnn"]["dpsnr_low"], rows["dncnn"]["dpsnr_p"]) == (direct.low, direct.p)
    assert "(baseline)" in format_table(table).splitlines()[3]  # header, LQ, dncnn, rat
    assert gflops(table.rows[2].restorer, __import__("numpy").zeros((256, 256), int)) == pytest.approx(
        2 * 256 * 256 * (81 * 4 + 4 * 4 + 25 * 4) / 1e9)


def test_recipe_errors_are_one_line(tmp_path):
    from rat.shared.errors import ParamError

    bad = tmp_path / "r.toml"
    bad.write_text("[train]\niters = 2\n")
    with pytest.raises(ParamError, match="no \\[models.<label>\\] tables"):
        load_recipe(bad)
    # the whole recipe is checked when it is read, each fault named by its place, before anything runs
    for text, where, reason in [
        ('[models.a]\nmodel = "dncnn"\nparams = { depth = 2 }\n', r"\[models.a\]",
         "model 'dncnn' takes no parameter 'depth'"),
        ('[models.a]\nmodel = "dncnn"\nparams = { nb = -3 }\n', r"\[models.a\]",
         r"model 'dncnn': nb=-3 is not an integer >= 0 \(default 17\)"),
        ('[models.a]\nmodell = "dncnn"\n', r"\[models.a\] modell",
         r"unknown key \(a row holds model, params\)"),
        ('[models.a]\nparams = 3\n', r"\[models.a\] params", "must be a table"),
        ('[train]\nitrs = 2\n[models.rat]\n', r"\[train\] itrs", "unknown setting"),
        ('[train]\niters = "x"\n[models.rat]\n', r"\[train\] iters", "'x' is not an integer"),
        ('[train]\nout = "elsewhere"\n[models.rat]\n', r"\[train\] out", "is set per row by the table"),
        ('masks = "x"\n[models.rat]\n', "masks", "unknown key"),
    ]:
        bad.write_text(text)
        with pytest.raises(ParamError, match=f"^recipe: {re.escape(str(bad))}: {where}: {reason}"):
            load_recipe(bad)
    # settings wrong together (each of the right kind) are found per row before any row trains
    bad.write_text('[train]\nloss = "foo"\n[models.a]\nmodel = "rat-small"\n')
    with pytest.raises(ParamError, match="^loss: row 'a': 'foo' is not one of"):
        make_table(load_recipe(bad), {"masks": "x"}, tmp_path / "o", say=lambda s: None)
    assert not (tmp_path / "o").exists()
