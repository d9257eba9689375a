"""`rat-precompute masks --generator sam-hq | efficientvit-sam`: each family's package generator, with its
test model's random weights, writes a store that `verify` passes and `rat-train` reads; provenance recorded;
checkpoints of another model refused in one line; options that do not apply refused (rat.precompute.cli)."""

import pytest
from click.testing import CliRunner
from helpers import TINY_RUN

from rat.precompute.cli import main
from rat.shared import store as st
from rat.shared.hashes import sha256_file
from rat.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0"]
PACKAGES = {"sam-hq": ("segment-anything-hq", "0.3"), "efficientvit-sam": ("efficientsam", "1.0.0")}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def masks(root, out, name, ckpt, *extra):
    return run("masks", "--dataset", "sample", "--root", root, "--out", out, "--no-progress", "--generator",
               name, "--checkpoint", ckpt, "--model-type", "test_tiny", "--device", "cpu", *FAST, *extra)


@pytest.mark.parametrize("name", ["sam-hq", "efficientvit-sam"])
def test_store_that_verify_passes_and_training_reads(name, sample_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "s.zarr"
    code, text = masks(sample_root, out, name, tiny_checkpoint(name), "--max-memory", "50MB")
    assert code == 0 and "16 done, 0 skipped" in text, text
    gen = st.provenance(st.open_store(out))["generator"]
    package, version = PACKAGES[name]
    assert gen["name"] == name and gen["package"] == package and gen["version"].startswith(version[:3])
    assert gen["model_type"] == "test_tiny" and gen["checkpoint_sha256"] == sha256_file(tiny_checkpoint(name))
    assert gen["params"]["points_per_side"] == 3 and gen["params"]["crop_n_layers"] == 0
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text, text
    code, text = run("info", out)
    assert code == 0 and f"generator  {name}  ({package} " in text
    result = train({**TINY_RUN, "masks": str(out), "root": str(sample_root), "out": str(tmp_path / "run"),
                    "iters": 1})
    assert result["step"] == 1


def test_another_generator_is_refused_on_resume(sample_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "s.zarr"
    assert masks(sample_root, out, "sam-hq", tiny_checkpoint("sam-hq"), "--limit", "2")[0] == 0
    code, text = masks(sample_root, out, "efficientvit-sam", tiny_checkpoint("efficientvit-sam"),
                       "--limit", "2")
    assert code != 0 and "generator.name: 'sam-hq' -> 'efficientvit-sam'" in text and "--overwrite" in text


def test_checkpoint_of_another_model_is_refused_in_one_line(sample_root, tiny_checkpoint, tiny_sam_checkpoint,
                                                             tmp_path):
    for name, ckpt, model in (("sam-hq", tiny_sam_checkpoint, "test_tiny"),
                              ("efficientvit-sam", tiny_checkpoint("efficientvit-sam"), "l0")):
        code, text = run("masks", "--dataset", "sample", "--root", sample_root, "--out", tmp_path / "s.zarr",
                         "--generator", name, "--checkpoint", ckpt, "--model-type", model, "--device", "cpu",
                         "--no-progress")
        label = {"sam-hq": "HQ-SAM", "efficientvit-sam": "EfficientViT-SAM"}[name]
        assert code != 0 and text.startswith(f"Error: {ckpt}: not a {label} {model} checkpoint (")
        assert text.count("\n") == 1, text
    assert not (tmp_path / "s.zarr").exists()


def test_options_that_do_not_apply_are_refused(sample_root, tmp_path):
    base = ["masks", "--dataset", "sample", "--root", sample_root, "--out", tmp_path / "s.zarr"]
    code, text = run(*base, "--generator", "superpixels", "--points-per-side", "4")
    assert code != 0 and ("--points-per-side applies to the efficientvit-sam, sam, sam-hq generators, not to "
                          "superpixels") in text
    code, text = run(*base, "--generator", "superpixels", "--max-memory", "1GB")
    assert code != 0 and "--max-memory does not apply to the superpixels generator" in text
    code, text = run(*base, "--generator", "sam-hq", "--sp-n-segments", "4")
    assert code != 0 and "--sp-n-segments applies to the superpixels generator, not to sam-hq" in text
    code, text = run(*base, "--generator", "sam", "--max-memory", "2XB")
    assert code != 0 and "'2XB' is not a size" in text
    code, text = run(*base, "--generator", "sam-hq", "--model-type", "vit_x", "--checkpoint", __file__)
    assert code != 0 and "unknown HQ-SAM model type 'vit_x'; choose one of vit_b, vit_l, vit_h, vit_" in text
    assert not (tmp_path / "s.zarr").exists()
