"""Helpers the tests import: tiny models made lively, console scripts, schema-1 stores, test data."""

import importlib.util
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import torch

from rat.shared import store as st

#: Files the tests read (state-dict keys and shapes of the authors' model).
DATA = Path(__file__).parent / "data"
#: The repository's benchmark scripts, and the documented region generator plug-in (its own package).
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
REGIONS_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rat-regions-example"
#: Settings of a tiny training run on the sample dataset's CT group (seconds on a CPU).
TINY_RUN = dict(dataset="sample", group="ct", model="rat-small", width=8, patch_size=32, batch_size=2,
                workers=0, val_limit=1, eval_every=100, save_every=100, log_every=1, progress=False)
#: pydicom's own test files (read offline), and the two DICOM files the tests use most.
DICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CT_SMALL = DICOM_FILES / "CT_small.dcm"
MR_SMALL = DICOM_FILES / "MR_small.dcm"


def load_script(name: str):
    """A script of benchmarks/ (``name`` without .py) imported as a module of that name."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_train_args(iters: int = 2, **options) -> list[str]:
    """`rat-train` options of a tiny run: rat-small of width 8 on 32 x 32 patches, batch 2, validated once at
    the end on one image, no worker processes (seconds on a CPU). ``options`` add or change options by name
    (``eval_every=3`` -> ``--eval-every 3``)."""
    settings = {"model": "rat-small", "width": 8, "patch_size": 32, "batch_size": 2, "iters": iters,
                "eval_every": iters, "val_limit": 1, "workers": 0, **options}
    args = [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [*args, "--no-progress"]


#: A small valid dataset definition (one CT group, LQ/HQ DICOM pairs by id) that tests change.
GOOD = """
name = "mine"
[defaults]
patch_size = 64
split = { rule = "seeded", unit = "id", test_count = 1 }
[groups.g]
modality = "CT"
channels = 1
hq = ["hq/{id}.dcm"]
lq = ["lq/{id}.dcm"]
norm_low = -1024
norm_high = 3072
sam_window = { kind = "fixed", low = -160, high = 240 }
"""

#: PET-like volumes: two tiny NIfTI volumes (LQ, HQ) per patient, sliced along axis 1, air left out.
PET_DEF = """
name = "petlike"
description = "two tiny volumes per patient"
[groups.pet]
modality = "PET"
channels = 1
hq = ["{patient}/hq.nii.gz"]
lq = ["{patient}/lq.nii.gz"]
norm_low = 0
norm_high = 20
sam_window = { kind = "percentile", low = 0.5, high = 99.5 }
patch_size = 192
volume = { slice_axis = 1, air_threshold = 0.05 }
split = { rule = "seeded", unit = "patient", seed = 0, test_count = 1 }
"""
#: 8-bit RGB slides as TIFF or PNG (LQ and HQ by id).
EIGHT_BIT = """
name = "slides"
[groups.g]
modality = "pathology"
channels = 3
hq = ["hq/{id}.tif", "hq/{id}.png"]
lq = ["lq/{id}.tif", "lq/{id}.png"]
norm_low = 0
norm_high = 255
sam_window = { kind = "none" }
patch_size = 16
split = { rule = "seeded", unit = "id", test_count = 1 }
"""
#: CT slices in DICOM series folders, one per patient and dose.
CT_SERIES = """
name = "mini"
[groups.ct]
modality = "CT"
channels = 1
hq = ["{patient}/full_dose/{slice}.dcm"]
lq = ["{patient}/quarter_dose/{slice}.dcm"]
id = "{patient}_{slice}"
norm_low = -1024.0
norm_high = 3072.0
data_range = 4096.0
sam_window = { kind = "fixed", low = -160.0, high = 240.0 }
patch_size = 32
[groups.ct.split]
rule = "seeded"
unit = "slice"
test_count = 1
"""


def builtin_variant(folder: Path, name: str, old: str, new: str) -> Path:
    """A copy of builtin definition ``name`` in ``folder`` with ``old`` replaced by ``new`` (which must be
    there): e.g. the PET definition with one test patient."""
    from rat.shared.datasets import load_dataset

    text = load_dataset(name).source.read_text()
    assert old in text, f"{old!r} is not in the {name} definition"
    path = Path(folder) / f"{name}.toml"
    path.write_text(text.replace(old, new))
    return path


def authors_labels(masks) -> np.ndarray:
    """The label map of (K, H, W) boolean masks by the authors' procedure, written plainly: sort by area,
    largest first (a stable sort: ties keep their order), paint in that order (later paints over earlier),
    then number the regions left 1..L in paint order; 0 where no mask covers."""
    masks = np.asarray(masks, dtype=bool)
    anns = sorted(({"seg": m, "area": int(m.sum())} for m in masks), key=lambda a: a["area"], reverse=True)
    painted = np.zeros(masks.shape[1:], dtype=np.int64)
    for i, ann in enumerate(anns, start=1):
        painted[ann["seg"]] = i
    numbered = np.zeros_like(painted)
    for n, value in enumerate(np.unique(painted[painted > 0]), start=1):
        numbered[painted == value] = n
    return numbered


def rle_records(masks) -> list[dict]:
    """(K, H, W) boolean masks as the SAM generator's records with uncompressed-RLE ``segmentation`` and
    ``area``, encoded by segment_anything's own functions."""
    from segment_anything.utils.amg import area_from_rle, mask_to_rle_pytorch

    rles = mask_to_rle_pytorch(torch.from_numpy(np.asarray(masks, dtype=bool)))
    return [{"segmentation": r, "area": area_from_rle(r)} for r in rles]


def lively(model: torch.nn.Module, generator: torch.Generator | None = None, seed: int = 0):
    """Give a RAT's zero-initialised branch scales and last layer random values, so every branch affects
    the output."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ("beta", "gamma", "lambda_ra", "lambda_wa"):
            p.data = torch.randn(p.shape, generator=g) * 0.5
    ending = getattr(model, "ending", None)
    if isinstance(ending, torch.nn.Conv2d):  # own generator: g's draws for the caller stay as they were
        own = torch.Generator().manual_seed(7)
        ending.weight.data = torch.randn(ending.weight.shape, generator=own) * 0.05
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


def prov(**params):
    """A store's root record for superpixel label maps of the sample dataset (``params`` changed)."""
    return st.make_provenance("sample", {"name": "superpixels", "params": {"n_segments": 8, **params}},
                              {"ct": {"kind": "fixed", "low": -160.0, "high": 240.0}})


def entry(image_id, sha="a" * 64, shape=(5, 7)):
    """The fields of an index entry that the store's checks read."""
    return SimpleNamespace(id=image_id, sha256=sha, shape=shape, lq=f"{image_id}.png")


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a local store by relative path, byte for byte, except the consolidated records table
    (a cache of stamps of this store's own files: its array, and its pointer in the root record)."""
    import json

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or rel.startswith("records-"):
            continue
        data = p.read_bytes()
        if rel == "zarr.json":
            doc = json.loads(data)
            doc["attributes"].get("rat", {}).pop("records", None)
            data = json.dumps(doc, sort_keys=True).encode()
        out[rel] = data
    return out


# Kernel checks for the child-process probe (rat.training.model.probe): module-level, so a spawned child can
# unpickle them. Each takes the arguments of rat.training.model.attention.check_backend.
def check_passes(*args):
    return None


def check_disagrees(*args):
    return "differs from sparse by 1 in the output (allowed 0.001)"


def check_raises(*args):
    raise RuntimeError("CUDA error: an illegal memory access was encountered\n"
                       "CUDA kernel errors might be ...")


def check_exits(*args):
    import os

    os._exit(3)


def check_segfaults(*args):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def check_hangs(*args):
    import time

    time.sleep(600)

#: Tiny parameters of every registered model (seconds per step on a CPU at 32 x 32 patches).
TINY_MODELS = {
    "rat": {"width": 8, "num_groups": 1, "layers_per_group": 1, "heads": 2},
    "rat-small": {"width": 8},
    "swinir": {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8},
    "swin2sr": {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8},
    "hat": {"embed_dim": 12, "depths": [1], "num_heads": [2], "num_feat": 8, "window_size": 8,
            "squeeze_factor": 4},
    "rcan": {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    "dncnn": {"nc": 8, "nb": 3},
    "nafnet": {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]},
    "drunet": {"nc": [8, 16, 32, 64], "nb": 1},
    "scunet": {"config": [1] * 7, "dim": 64},
    "uformer": {"embed_dim": 8, "depths": [1] * 9, "num_heads": [1] * 9},
    "restormer": {"dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "basicunet": {"features": [4, 4, 8, 8, 16, 4]},
    "redcnn": {"out_ch": 8},
    "cnn10": {},
    "wganvgg": {},
    "qae": {},
    "ldct-resnet": {"n_channels": 8, "n_blocks": 1},
    "edsr": {"n_resblocks": 1, "n_feats": 8},
    "srcnn": {"n1": 8, "n2": 4},
}
