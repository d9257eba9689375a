"""A region generator in a package of its own (the documented example, examples/rat-regions-example),
installed into a temporary folder only: `rat-precompute masks --help` lists it and `--generator tiles` uses
it; the venv is left as it was (rat.precompute.cli, rat.shared.regions)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REGIONS_EXAMPLE, console_script

from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import load_index
from rat.shared.regions import generator_names


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The example package installed (pip, its own pyproject) into a folder of its own."""
    target = tmp_path_factory.mktemp("plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "--target", str(target), str(REGIONS_EXAMPLE)], check=True, capture_output=True)
    assert (target / "rat_regions_example" / "__init__.py").is_file()
    return target


def with_plugin(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([console_script("rat-precompute"), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_help_lists_the_plugin_without_loading_it(plugin_path):
    done = with_plugin(plugin_path, "masks", "--help")
    assert done.returncode == 0, done.stderr
    text = "".join(done.stdout.split())                 # help wraps lines at hyphens
    assert "[efficientvit-sam|sam|sam-hq|superpixels|tiles]" in text
    assert "plug-ins:tiles(squaretilesof`size`pixels,anexampleplug-in;rat-regions-example0.1)" in text
    assert "tiles" not in generator_names()            # this process (and the venv) never saw it


def test_masks_with_the_plugin_writes_a_store_that_verify_passes(plugin_path, sample_root, tmp_path):
    out = tmp_path / "tiles.zarr"
    done = with_plugin(plugin_path, "masks", "--dataset", "sample", "--root", str(sample_root), "--out",
                       str(out), "--no-progress", "--generator", "tiles", "--param", "size=32",
                       "--param", "min_value=0")
    assert done.returncode == 0 and "16 done" in done.stdout, done.stdout + done.stderr
    gen = st.provenance(st.open_store(out))["generator"]
    assert gen == {"name": "tiles", "version": "0.1", "params": {"size": 32, "min_value": 0}}
    group = st.open_store(out)
    entry = next(e for e in load_index(load_dataset("sample"), sample_root) if e.group == "ct")
    labels = st.read_labels(group, entry.id)
    h, w = labels.shape
    assert labels.max() == -(-h // 32) * -(-w // 32) and np.array_equal(labels[0, :33], [1] * 32 + [2])
    done = with_plugin(plugin_path, "verify", str(out), "--dataset", "sample", "--root", str(sample_root))
    assert done.returncode == 0 and "ok: 16 label maps" in done.stdout, done.stdout + done.stderr
    done = with_plugin(plugin_path, "masks", "--dataset", "sample", "--root", str(sample_root), "--out",
                       str(out), "--no-progress", "--generator", "tiles", "--param", "size=0")
    assert done.returncode != 0 and "size must be at least 1" in done.stderr + done.stdout


def test_the_plugin_gets_every_feature_a_builtin_gets_with_no_name_of_it_in_the_cli(plugin_path, sample_root,
                                                                                   tmp_path):
    """Help (its summary and origin; one option per parameter with its default), parameters (set by those
    options, refused for another generator, given once), provenance (recorded in the store): as superpixels
    gets them, from the generator contract alone (rat.shared.regions.options)."""
    done = with_plugin(plugin_path, "masks", "--help")
    text = " ".join(done.stdout.split())
    assert "tiles (square tiles of `size` pixels, an example plug-in; rat-regions-example 0.1)" in text
    assert "--tiles-size INTEGER tiles: size (default 64)." in text
    assert "--tiles-min-value INTEGER tiles: min_value (default 0)." in text
    assert "--sp-n-segments INTEGER superpixels: n_segments (default 64)." in text     # a builtin's, alike
    base = ["masks", "--dataset", "sample", "--root", str(sample_root), "--no-progress"]
    out = tmp_path / "tiles.zarr"
    done = with_plugin(plugin_path, *base, "--out", str(out), "--generator", "tiles", "--tiles-size", "48")
    assert done.returncode == 0 and "16 done" in done.stdout, done.stdout + done.stderr
    assert st.provenance(st.open_store(out))["generator"] == {"name": "tiles", "version": "0.1",
                                                             "params": {"size": 48, "min_value": 0}}
    for args, error in (
            (["--generator", "superpixels", "--tiles-size", "48"],
             "--tiles-size applies to the tiles generator, not to superpixels"),
            (["--generator", "tiles", "--sp-n-segments", "4"],
             "--sp-n-segments applies to the superpixels generator, not to tiles"),
            (["--generator", "tiles", "--tiles-size", "48", "--param", "size=8"],
             "--param size=8 and --tiles-size both set size: give it once"),
            (["--generator", "tiles", "--tiles-size", "many"], "'many' is not a valid integer")):
        done = with_plugin(plugin_path, *base, "--out", str(tmp_path / "x.zarr"), *args)
        assert done.returncode != 0 and error in done.stderr, done.stderr
    repo = REGIONS_EXAMPLE.parents[1]
    for source in ("precompute/cli.py", "shared/regions/options.py", "shared/regions/__init__.py",
                   "precompute/cluster.py", "training/inference/region_source.py"):
        code = (repo / source).read_text()
        names = ('"tiles"', "--tiles", "TileGenerator", "rat_regions_example")
        assert not any(name in code for name in names), source
