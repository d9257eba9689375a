"""Shared fixtures (the sample dataset, built once per session; a tiny SAM checkpoint) and small helpers."""

import shutil
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never touch the user's cache folder or data root: a cache of their own, no RAT_DATA_ROOT."""
    import os

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


def lively(model: torch.nn.Module, generator: torch.Generator | None = None, seed: int = 0):
    """Give a RAT's zero-initialised branch scales random values, so every branch affects the output."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ("beta", "gamma", "lambda_ra", "lambda_wa"):
            p.data = torch.randn(p.shape, generator=g) * 0.5
    return model


def console_script(name: str) -> str:
    """Path of an installed console script of this environment."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


def write_schema1_store(url, dataset: str, labels: dict, generator: dict, windows: dict, chunk: int = 256):
    """A label store in the layout of schema 1 (version 0.1 of this package), written with zarr directly:
    root attributes {"rat": provenance} whose fingerprint hashes schema, dataset, generator and windows;
    each label map the array labels/<key> with its record in its attributes. labels: id -> (map, LQ sha)."""
    import hashlib
    import json

    import numpy as np
    import zarr

    identity = {"schema": 1, "dataset": dataset, "generator": generator, "windows": windows}
    fp = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    root = zarr.open_group(zarr.storage.LocalStore(url), mode="w")
    root.attrs["rat"] = {**identity, "chunk": [chunk, chunk], "package_version": "0.1.0", "fingerprint": fp}
    root.require_group("labels")
    root.require_group("images")
    for image_id, (lab, sha) in labels.items():
        arr = root.create_array(f"labels/{image_id.replace('/', '~')}", shape=lab.shape, dtype=lab.dtype,
                                chunks=(min(chunk, lab.shape[0]), min(chunk, lab.shape[1])),
                                compressors=zarr.codecs.ZstdCodec(level=5), fill_value=0)
        arr[...] = lab
        arr.attrs["rat"] = {"source_sha256": sha, "shape": list(lab.shape), "dtype": str(lab.dtype),
                            "regions": int(np.count_nonzero(np.bincount(lab.ravel())[1:])),
                            "labels_sha256": hashlib.sha256(np.ascontiguousarray(lab).tobytes()).hexdigest(),
                            "fingerprint": fp, "complete": True}
    return url
