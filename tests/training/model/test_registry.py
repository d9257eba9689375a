"""Models as plug-ins (rat.training.model.registry): a model in a package of its own
(examples/rat-model-example), installed into a temporary folder only, is listed by `rat-train models`, trained
by `rat-train --model tiny-cnn` and restored from its checkpoint; the builtin models are registered the same
way; the venv is left as it was."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import console_script

from rat.shared import DISTRIBUTION
from rat.shared.errors import ParamError
from rat.training.model.registry import ENTRY_POINT_GROUP, build_network, make_model, model_names, registered

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "rat-model-example"


def test_builtin_models_are_entry_points_of_this_package():
    eps = registered()
    assert model_names()[:2] == ("rat", "rat-small")
    assert eps["rat"].dist.metadata["Name"] == DISTRIBUTION and eps["rat"].group == ENTRY_POINT_GROUP
    rat = build_network("rat", 1)
    assert sum(p.numel() for p in rat.parameters()) == 15_945_025 and rat.uses_labels
    assert not build_network("rat-small", 1, {"attention": "wmsa"}).uses_labels
    assert make_model("rat").provenance()["class"] == "rat.training.model.network:RAT"


def test_unknown_models_and_parameters_are_refused_in_one_line():
    with pytest.raises(ParamError, match="unknown model 'nope'; choose one of rat, rat-small"):
        make_model("nope")
    with pytest.raises(ParamError, match=r"model 'rat' takes no parameter 'depth' \(it takes: attention, "):
        make_model("rat", {"depth": 2})
    # values are checked against the model's own defaults (rat-small's, not RAT's) before anything is built
    with pytest.raises(ParamError, match=r"^model_params: model 'rat-small': width='a' is not an integer "
                                         r"\(default 16\)$"):
        make_model("rat-small", {"width": "a"})
    with pytest.raises(ParamError, match=r"model 'rat': enc_blk_nums=\[1, -1\] is not a list of items each "
                                         r"an integer >= 0 \(default \(2, 2\)\)"):
        make_model("rat", {"enc_blk_nums": [1, -1]})
    # what the class itself cannot build is one line naming the model and its parameters
    with pytest.raises(ParamError, match=r"'rat-small' is not built with .*'heads': 0.*ZeroDivisionError"):
        build_network("rat-small", 1, {"heads": 0})
    assert make_model("rat-small", {"width": 8, "mlp_ratio": 1}).params["width"] == 8   # an int for a float


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("model_plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    return target


def with_plugin(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([console_script("rat-train"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_model_plugin_is_listed_trained_and_restored(plugin_path, sample_store, sample_root, tmp_path):
    done = with_plugin(plugin_path, "models")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("tiny-cnn"))
    assert "region-free" in line and "plug-in: rat-model-example 0.1" in line
    assert "tiny-cnn" not in model_names()                       # this process (and the venv) never saw it
    out = tmp_path / "run"
    done = with_plugin(plugin_path, "--masks", sample_store, "--root", sample_root, "--out", out, "--group",
                       "ct", "--model", "tiny-cnn", "--model-param", "features=4", "--iters", 2,
                       "--eval-every", 2, "--patch-size", 32, "--batch-size", 2, "--workers", 0,
                       "--val-limit", 1, "--no-progress")
    assert done.returncode == 0 and "done: 2 steps" in done.stdout, done.stdout + done.stderr
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["model_args"]["provenance"]["package"] == "rat-model-example"
    assert ck["model_args"]["overrides"] == {"features": 4}
    assert sum(v.numel() for v in ck["model"].values()) == (9 * 4 + 4) + (9 * 16 + 4) + (9 * 4 + 1)
    done = with_plugin(plugin_path, "eval", "--checkpoint", out / "best.pt", "--limit", 1, "--no-progress")
    assert done.returncode == 0 and "LQ input" in done.stdout, done.stdout + done.stderr
    done = with_plugin(plugin_path, "--masks", sample_store, "--out", tmp_path / "bad", "--model", "tiny-cnn",
                       "--attention", "wmsa")
    assert done.returncode != 0 and "model 'tiny-cnn' has no attention setting" in done.stderr + done.stdout


def test_this_packages_models_are_no_plug_ins_and_come_first():
    from rat.training.model.registry import model_names, plugin_origins

    assert not {"rat", "rat-small", "srcnn"} & set(plugin_origins())
    assert model_names()[:2] == ("rat", "rat-small")
