"""Shared fixtures: the sample dataset (built once per session) and a tiny SAM checkpoint file."""

import shutil
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The sample dataset with its index, built once. Read-only for tests: copy it to change it."""
    from rat.precompute.sample_data import make_sample_data
    from rat.shared.datasets import load_dataset
    from rat.shared.index import index_path, write_index
    from rat.shared.manifest import build_index

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
    from rat.precompute.runner import run_masks
    from rat.shared.datasets import load_dataset
    from rat.shared.index import load_index
    from rat.shared.regions import build_generator

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
    from rat.shared.regions.sam import build_sam_tiny

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_sam_tiny().state_dict(), path)
    return path


def console_script(name: str) -> str:
    """Path of an installed console script of this environment."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name
