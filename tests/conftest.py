"""Shared fixtures: the sample dataset and its store, built once per session; a tiny SAM checkpoint.

Helpers that tests import are in ``helpers.py``. Tests mirror the package:
``tests/<package>/test_<module>.py`` (``test_<module>_<aspect>.py`` for one aspect of a module,
``test_cli_<command>.py`` for one command); the few files directly in ``tests/`` test the whole: packaging,
the architecture, the design card's commands.
"""

import importlib.metadata
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REGIONS_EXAMPLE

from rat.precompute.runner import run_masks
from rat.precompute.sample_data import make_sample_data
from rat.shared import regions
from rat.shared.datasets import load_dataset
from rat.shared.index import index_path, load_index, write_index
from rat.shared.index.build import build_index
from rat.shared.regions import build_generator, generator_class
from rat.shared.regions.sam import build_sam_tiny
from rat.shared.regions.sam_config import TEST_MODEL


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never touch the user's cache folder or data root: a cache of their own, no RAT_DATA_ROOT."""
    saved = {k: os.environ.get(k) for k in ("RAT_CACHE_DIR", "RAT_DATA_ROOT", "RAT_SAM_CHECKPOINT")}
    os.environ["RAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("RAT_DATA_ROOT", None)
    os.environ.pop("RAT_SAM_CHECKPOINT", None)
    yield Path(os.environ["RAT_CACHE_DIR"])
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The sample dataset with its index, built once. Read-only for tests: copy it to change it."""
    root = tmp_path_factory.mktemp("sample") / "data"
    make_sample_data(root)
    ds = load_dataset("sample")
    entries, problems = build_index(ds, root, progress=False)
    assert not problems
    write_index(entries, index_path(ds, root))
    return root


@pytest.fixture
def sample_copy(sample_root, tmp_path) -> Path:
    """A private copy of the sample dataset (with its index) that a test may change."""
    return Path(shutil.copytree(sample_root, tmp_path / "data", symlinks=False))


@pytest.fixture(scope="session")
def sample_store(sample_root, tmp_path_factory) -> Path:
    """Superpixel label maps of every sample image (no image cache). Read-only: copy it to change it."""
    ds = load_dataset("sample")
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    outcomes = run_masks(ds, load_index(ds, sample_root), sample_root, out, build_generator("superpixels"),
                         progress=False)
    assert all(o.status == "done" for o in outcomes)
    return out


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest, and immune to other processes competing for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory) -> Path:
    """A SAM built from segment_anything's modules with random weights, saved like a real checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_sam_tiny().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """generator name -> checkpoint file of that SAM-family generator's test model (built from the package's
    own modules, random weights, seed 0), made on first use."""
    folder = tmp_path_factory.mktemp("sam_family")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            torch.manual_seed(0)
            model = generator_class(name).model_builders()[TEST_MODEL]()
            made[name] = folder / f"{name}_tiny.pth"
            torch.save(model.state_dict(), made[name])
        return made[name]

    return get


@pytest.fixture
def tiles(monkeypatch) -> str:
    """The registry with the example plug-in ``tiles`` in it (examples/rat-regions-example importable from
    its folder, registered as its package would register it); returns its name."""
    monkeypatch.syspath_prepend(str(REGIONS_EXAMPLE))
    found = dict(regions.registered())
    found["tiles"] = importlib.metadata.EntryPoint("tiles", "rat_regions_example:TileGenerator",
                                                   regions.ENTRY_POINT_GROUP)
    monkeypatch.setattr(regions, "registered", lambda: found)
    return "tiles"
