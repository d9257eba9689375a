"""`rat-precompute masks / info / verify / show` end to end on the sample dataset (rat.precompute.cli; the
store commands of rat.precompute.cli_store; the picture of `show` from rat.precompute.overlay)."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import DICOM_FILES, console_script

from rat.precompute.cli import main
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.hashes import sha256_file
from rat.shared.index import Entry, load_index, write_index

SAM_FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
            "--box-nms-thresh", "1.0"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def sam_args(ckpt, pps="4"):
    return ["--generator", "sam", "--checkpoint", ckpt, "--model-type", "test_tiny", "--device", "cpu",
            "--points-per-side", pps, *SAM_FAST[2:]]


def test_tiny_sam_through_the_command_line(sample_root, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "s.zarr"
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", out,
                     "--no-progress", *sam_args(tiny_sam_checkpoint))
    assert code == 0, text
    assert "16 done, 0 skipped" in text
    prov = st.provenance(st.open_store(out))
    assert prov["generator"]["checkpoint_sha256"] == sha256_file(tiny_sam_checkpoint)
    assert prov["generator"]["params"]["points_per_side"] == 4
    assert prov["generator"]["params"]["crop_n_layers"] == 0
    assert prov["windows"]["ct"] == {"kind": "fixed", "low": -160.0, "high": 240.0}
    g = st.open_store(out)
    for e in load_index(load_dataset("sample"), sample_root):
        lab = st.read_labels(g, e.id)
        assert lab.shape == e.shape[:2] and lab.dtype == np.uint16
        assert set(np.unique(lab)) <= set(range(lab.max() + 1))
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text
    code, text = run("info", out)
    assert code == 0 and "16 complete" in text and "test_tiny" in text
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", out,
                     "--no-progress", *sam_args(tiny_sam_checkpoint))
    assert code == 0 and "0 done, 16 skipped" in text
    png = tmp_path / "ov.png"
    code, text = run("show", out, "ct_01", "--dataset", "sample", "--root", sample_root, "--out", png)
    assert code == 0 and png.stat().st_size > 1000


def test_other_configuration_is_refused_and_nothing_is_lost(sample_root, tmp_path):
    out = tmp_path / "s.zarr"
    base = ["masks", "--dataset", "sample", "--root", sample_root, "--out", out, "--no-progress",
            "--generator", "superpixels", "--limit", "3"]
    assert run(*base)[0] == 0
    code, text = run(*base, "--sp-n-segments", "9")
    assert code != 0 and "n_segments: 64 -> 9" in text and "--overwrite" in text
    assert st.store_summary(st.open_store(out))["complete"] == 3
    code, text = run(*base, "--sp-n-segments", "9", "--overwrite")
    assert code == 0 and "3 done" in text


def test_selection_split_shard_limit(sample_root, tmp_path):
    out = tmp_path / "s.zarr"
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", out, "--no-progress",
                     "--generator", "superpixels", "--split", "test", "--shard", "1/2")
    assert code == 0 and "2 done" in text
    tests = sorted(e.id for e in load_index(load_dataset("sample"), sample_root) if e.split == "test")
    assert list(st.label_ids(st.open_store(out))) == tests[1::2]
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", out, "--shard", "2/2",
                     "--generator", "superpixels")
    assert code != 0 and "--shard: '2/2'" in text


def test_bad_items_are_skipped_and_reported(sample_copy, tmp_path):
    ds = load_dataset("sample")
    entries = load_index(ds, sample_copy)
    jls = DICOM_FILES / "JPEGLSNearLossless_16.dcm"
    shutil.copy(jls, sample_copy / "ct" / "lq" / "jls.dcm")
    corrupt = sample_copy / "ct" / "lq" / "corrupt.dcm"
    corrupt.write_bytes((sample_copy / entries[0].lq).read_bytes()[:600])
    changed = next(e for e in entries if e.group == "pathology")
    extra = [Entry(id="jls", group="ct", split="train", lq="ct/lq/jls.dcm", hq="ct/hq/ct_00.dcm",
                   slice=None, sha256=sha256_file(sample_copy / "ct/lq/jls.dcm"), shape=(1024, 1024),
                   axis=None),
             Entry(id="corrupt", group="ct", split="train", lq="ct/lq/corrupt.dcm", hq="ct/hq/ct_00.dcm",
                   slice=None, sha256=sha256_file(corrupt), shape=(128, 128), axis=None)]
    crafted = tmp_path / "crafted.csv"  # an index named with --index is used as it is, never rebuilt
    write_index(sorted(entries + extra, key=lambda e: e.id), crafted)
    target = sample_copy / changed.lq
    target.write_bytes(target.read_bytes() + b"\0")      # changed after the index was written
    out = tmp_path / "s.zarr"
    code, text = run("masks", "--dataset", "sample", "--root", sample_copy, "--out", out, "--no-progress",
                     "--generator", "superpixels", "--index", crafted)
    assert code == 1
    assert "15 done, 0 skipped (already complete), 3 failed" in text
    failed = [line for line in text.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 3
    assert any("jls.dcm" in f and "pip install rat-restore[dicom]" in f for f in failed)
    assert any("corrupt.dcm" in f for f in failed)
    assert any(Path(changed.lq).name in f and "changed since the index" in f for f in failed)
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_copy)
    assert code == 1 and "3 of 18 images have problems" in text


def _masks_cmd(root, out, ckpt, *extra, pps="4"):
    return [console_script("rat-precompute"), "masks", "--dataset", "sample", "--root", str(root),
            "--out", str(out), "--no-progress", *[str(a) for a in sam_args(ckpt, pps=pps)], *extra]


def _complete(out):
    try:
        return st.store_summary(st.open_store(out))["complete"]
    except (st.StoreError, KeyError, ValueError, OSError):
        return 0


def test_sigkill_mid_run_then_rerun_completes(sample_root, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "s.zarr"
    proc = subprocess.Popen(_masks_cmd(sample_root, out, tiny_sam_checkpoint, pps="6"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _complete(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0, 0.3))   # somewhere inside the next image
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = _complete(out)
    assert 2 <= done_before < 16
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 1                                     # readers see exactly what is complete
    rerun = subprocess.run(_masks_cmd(sample_root, out, tiny_sam_checkpoint, pps="6"), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{done_before} skipped" in rerun.stdout
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text
    assert not list((out / "labels").rglob("*.partial"))


def test_two_shards_concurrently_equal_one_process(sample_root, tiny_sam_checkpoint, tmp_path):
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    procs = [subprocess.Popen(_masks_cmd(sample_root, two, tiny_sam_checkpoint, "--shard", f"{i}/2"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    single = subprocess.run(_masks_cmd(sample_root, one, tiny_sam_checkpoint), capture_output=True,
                            text=True, timeout=600)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert single.returncode == 0 and all(p.returncode == 0 for p in procs), outputs
    assert all("8 done" in o for o in outputs)
    a, b = st.open_store(one), st.open_store(two)
    assert st.provenance(a)["fingerprint"] == st.provenance(b)["fingerprint"]
    assert list(st.label_ids(a)) == list(st.label_ids(b)) and len(list(st.label_ids(a))) == 16
    for i in st.label_ids(a):
        assert np.array_equal(st.read_labels(a, i), st.read_labels(b, i))
        assert st.record(a, i) == st.record(b, i)
    root_meta = json.loads((two / "zarr.json").read_text())
    assert root_meta["attributes"]["rat"]["dataset"] == "sample"


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_missing_checkpoint_message(sample_root, tmp_path, monkeypatch):
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", tmp_path / "s.zarr")
    assert code != 0 and "no SAM checkpoint given" in text and "superpixels" in text
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("value, reason", [
    ("abc", "n_segments='abc' is not an integer (default 64)"),
    ("[1,2]", "n_segments=[1, 2] is not an integer (default 64)"),
    ("-5", "n_segments=-5 is not an integer >= 0 (default 64)"),
    ("0", "n_segments: 0: must be at least 1"),
    ("2.5", "n_segments=2.5 is not an integer (default 64)"),
])
def test_bad_parameter_values_are_one_line_and_nothing_is_written(sample_root, tmp_path, value, reason):
    """Parameters are checked before the store is created: the corrected run needs no --overwrite."""
    out = tmp_path / "s.zarr"
    base = ["masks", "--dataset", "sample", "--root", sample_root, "--out", out, "--no-progress",
            "--generator", "superpixels", "--limit", "2"]
    code, text = run(*base, "--param", f"n_segments={value}")
    assert code == 1 and text.strip().splitlines() == [f"Error: generator superpixels: {reason}"]
    assert not out.exists()
    code, text = run(*base, "--param", "n_segments=9")
    assert code == 0 and "2 done" in text, text
    assert st.provenance(st.open_store(out))["generator"]["params"]["n_segments"] == 9


def test_an_unknown_parameter_lists_the_generators_parameters(sample_root, tmp_path):
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", tmp_path / "s.zarr",
                     "--no-progress", "--generator", "superpixels", "--param", "bogus=3")
    assert code == 1 and text.strip().splitlines() == [
        "Error: generator superpixels has no parameter 'bogus'; its parameters: method, n_segments, "
        "compactness, sigma, scale, min_size"]
    assert not (tmp_path / "s.zarr").exists()


def test_a_parameter_set_twice_is_refused(sample_root, tmp_path):
    """--param n_segments=9 used to win silently over --sp-n-segments 8."""
    code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", tmp_path / "s.zarr",
                     "--no-progress", "--generator", "superpixels", "--param", "n_segments=9",
                     "--sp-n-segments", "8")
    assert code == 1 and text.strip().splitlines() == [
        "Error: --param n_segments=9 and --sp-n-segments both set n_segments: give it once"]


def test_max_memory_says_exactly_what_it_bounds():
    """--max-memory read like a cap on the whole peak; its help says what it bounds and what it does not."""
    result = CliRunner().invoke(main, ["masks", "--help"], terminal_width=300)
    text = " ".join(result.output.split())
    start = text.index("--max-memory SIZE")
    help_text = text[start:text.index("--chunk", start)]
    assert "bounds the post-processing of each batch of masks at full resolution" in help_text
    assert ("It does not bound the model's weights, the encoder on CUDA, or the prompt decoder's own batch, "
            "which --points-per-batch sets") in help_text


def test_a_rerun_repairs_damaged_maps_and_says_how_many(sample_root, tmp_path):
    out = tmp_path / "s.zarr"
    base = ["masks", "--dataset", "sample", "--root", sample_root, "--out", out, "--no-progress",
            "--generator", "superpixels", "--limit", "4"]
    assert run(*base)[0] == 0
    victim = sorted(p.name for p in (out / "labels").iterdir() if not p.name.endswith(".json"))[1]
    g = st.open_store(out, mode="r+")
    g[f"labels/{victim}/0"][0, 0] = int(g[f"labels/{victim}/0"][0, 0]) + 1
    code, text = run(*base)
    assert code == 0 and "1 done, 3 skipped" in text, text
    assert (f"1 label map(s) recomputed because their bytes no longer matched their records: "
            f"{victim.replace('~', '/')}") in text
    st.read_labels(st.open_store(out), victim.replace("~", "/"))     # its bytes match its record again


def test_two_masks_at_once_compute_each_image_once_and_leave_one_table(sample_root, tmp_path):
    """Two `masks` started together on one store: the later leaves to the earlier what it holds (or finds it
    done), so every image is computed once; both end with one records table, none orphaned."""
    out = tmp_path / "s.zarr"
    args = [console_script("rat-precompute"), "masks", "--dataset", "sample", "--root", str(sample_root),
            "--out", str(out), "--no-progress", "--generator", "superpixels"]
    assert subprocess.run([*args, "--limit", "1"], capture_output=True).returncode == 0   # the store exists
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    texts = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), texts
    done = [int(t.split(" done,")[0].split()[-1]) for t in texts]
    assert sum(done) == 15, texts                                     # 16 images, one made before
    tables = sorted(p.name for p in out.iterdir() if p.name.startswith("records"))
    assert tables == ["records-table"] and not (out / ".rat-runs").exists()
    assert st.store_summary(st.open_store(out))["complete"] == 16
