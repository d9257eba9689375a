"""The label-map store: the contract between precompute and training, and what team members share.

Layout (zarr v3)::

    store.zarr/
      zarr.json                root attributes {"rat": provenance}: schema, dataset, generator + params,
                               SAM model type + checkpoint SHA-256, SAM windows, package version, fingerprint
      labels/<key>             (H, W) uint16/uint32 label map, chunked (256, 256), zstd;
                               attributes {"rat": record} written last: source SHA-256, shape, regions,
                               labels SHA-256, fingerprint, complete
      images/<key>/lq, /hq     optional image cache for training (chunked like labels, original dtype)

`<key>` is the image id with "/" written as "~". A label map whose record is missing, not complete, or made
under another fingerprint does not exist for readers. Only one process writes a given key; root metadata is
created once with an atomic create-if-absent and never rewritten except by an explicit overwrite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata

from rat.shared import __version__
from rat.shared.errors import RatError

SCHEMA_VERSION = 1
DEFAULT_CHUNK = 256
ZSTD_LEVEL = 5
ATTR = "rat"
#: Provenance fields that change what a label map is; the fingerprint hashes exactly these.
IDENTITY_FIELDS = ("schema", "dataset", "generator", "windows")


class StoreError(RatError, RuntimeError):
    """A one-line problem with a store (missing, incompatible, incomplete, tampered)."""


def image_key(image_id: str) -> str:
    """Store key of an image id (ids may hold "/", zarr node names may not)."""
    if "~" in image_id or image_id.startswith("__") or image_id in ("", ".", ".."):
        raise StoreError(f"image id {image_id!r} cannot be stored (no '~', no leading '__')")
    return image_id.replace("/", "~")


def image_id(key: str) -> str:
    return key.replace("~", "/")


def fingerprint(provenance: Mapping[str, Any]) -> str:
    """SHA-256 of the identity fields of a provenance record (canonical JSON)."""
    identity = {k: provenance.get(k) for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def make_provenance(dataset: str, generator: Mapping[str, Any], windows: Mapping[str, Any],
                    chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Root record of a store: identity fields + fingerprint + informative fields."""
    prov: dict[str, Any] = {"schema": SCHEMA_VERSION, "dataset": dataset,
                            "generator": json.loads(json.dumps(dict(generator), default=str)),
                            "windows": json.loads(json.dumps(dict(windows), default=str)),
                            "chunk": [chunk, chunk], "package_version": __version__}
    prov["fingerprint"] = fingerprint(prov)
    return prov


def _store(url: str | Path, read_only: bool) -> zarr.abc.store.Store:
    text = str(url)
    if text.endswith(".zip"):
        if not read_only:
            raise StoreError(f"{text}: zip stores are read-only hand-over files; write to a directory")
        if not Path(text).is_file():
            raise StoreError(f"{text}: no such store")
        return zarr.storage.ZipStore(text, mode="r")
    if "://" in text and not text.startswith("file://"):
        try:
            return zarr.storage.FsspecStore.from_url(text, read_only=read_only)
        except ImportError as err:
            raise StoreError(f"{text}: {err}; for s3:// install rat[s3]") from None
    path = Path(text.removeprefix("file://"))
    if read_only and not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no such store (no zarr.json)")
    return zarr.storage.LocalStore(path, read_only=read_only)


def open_store(url: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store read-only (`mode="r"`) or for writing (`"a"`). Local path, `.zip` file or fsspec URL."""
    store = _store(url, read_only=(mode == "r"))
    try:
        return zarr.open_group(store, mode=mode)
    except Exception as err:  # noqa: BLE001
        raise StoreError(f"{url}: not a readable zarr store ({type(err).__name__}: {err})") from None


def _create_if_absent(store: zarr.abc.store.Store, path: str, attributes: dict[str, Any]) -> None:
    """Atomically create group metadata at `path` unless it exists (first writer wins)."""
    buf = GroupMetadata(attributes=attributes).to_buffer_dict(default_buffer_prototype())["zarr.json"]
    key = f"{path}/zarr.json" if path else "zarr.json"
    zarr.core.sync.sync(store.set_if_not_exists(key, buf))


def provenance(group: zarr.Group) -> dict[str, Any]:
    prov = group.attrs.get(ATTR)
    if not isinstance(prov, dict):
        raise StoreError(f"{group.store}: not a RAT label store (no '{ATTR}' root attributes)")
    if prov.get("schema") != SCHEMA_VERSION:
        raise StoreError(f"{group.store}: store schema {prov.get('schema')} is not {SCHEMA_VERSION}")
    return prov


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def describe_difference(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """Which identity fields differ, as `field.sub: stored -> asked` (one line)."""
    a = _flatten({k: have.get(k) for k in IDENTITY_FIELDS}, "")
    b = _flatten({k: want.get(k) for k in IDENTITY_FIELDS}, "")
    return "; ".join(f"{k[1:]}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


def init_store(url: str | Path, prov: dict[str, Any], overwrite: bool = False) -> zarr.Group:
    """Open `url` for writing label maps made under `prov`, creating the root record if absent.

    An existing store made under another configuration is refused (one line naming the differences),
    unless `overwrite`, which replaces the root record: items of the old configuration then no longer
    count as done and are recomputed.
    """
    store = _store(url, read_only=False)
    _create_if_absent(store, "", {ATTR: prov})
    group = zarr.open_group(store, mode="a")
    have = group.attrs.get(ATTR)
    if not isinstance(have, dict):
        raise StoreError(f"{url}: exists but is not a RAT label store")
    if have.get("fingerprint") != prov["fingerprint"]:
        if not overwrite:
            raise StoreError(
                f"{url}: made with another configuration ({describe_difference(have, prov)}); "
                "use another store, or `overwrite` to recompute every image")
        group.attrs[ATTR] = prov
    for sub in ("labels", "images"):
        _create_if_absent(store, sub, {})
    return group


def record(group: zarr.Group, image_id: str) -> dict[str, Any] | None:
    """The complete record of a label map made under the store's configuration, else None."""
    try:
        arr = group[f"labels/{image_key(image_id)}"]
        rec = arr.attrs.get(ATTR)
    except (KeyError, FileNotFoundError, ValueError, json.JSONDecodeError):
        return None
    except Exception:  # noqa: BLE001 - a half-written node is simply not there
        return None
    if not isinstance(rec, dict) or not rec.get("complete"):
        return None
    if rec.get("fingerprint") != group.attrs.get(ATTR, {}).get("fingerprint"):
        return None
    return rec


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 of a label map's C-order bytes (dtype and shape are recorded beside it)."""
    return hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()


def write_labels(group: zarr.Group, image_id: str, labels: np.ndarray, source_sha256: str,
                 chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Write one label map, its record last. Replaces whatever was at that key (partial or stale)."""
    if labels.ndim != 2:
        raise StoreError(f"{image_id}: label map must be 2-D, got shape {labels.shape}")
    key = f"labels/{image_key(image_id)}"
    arr = group.create_array(key, shape=labels.shape, dtype=labels.dtype,
                             chunks=(min(chunk, labels.shape[0]), min(chunk, labels.shape[1])),
                             compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL),
                             fill_value=0, overwrite=True)
    arr[...] = labels
    rec = {"source_sha256": source_sha256, "shape": list(labels.shape), "dtype": str(labels.dtype),
           "regions": int(np.count_nonzero(np.bincount(labels.ravel())[1:])),
           "labels_sha256": labels_sha256(labels),
           "fingerprint": provenance(group)["fingerprint"], "complete": True}
    arr.attrs[ATTR] = rec
    return rec


def read_labels(group: zarr.Group, image_id: str) -> np.ndarray:
    """The label map of `image_id`; StoreError when it is missing or incomplete."""
    if record(group, image_id) is None:
        raise StoreError(f"{image_id}: no complete label map in the store")
    return group[f"labels/{image_key(image_id)}"][...]


def label_ids(group: zarr.Group) -> Iterator[str]:
    """Ids of every label array in the store, complete or not, sorted."""
    try:
        labels = group["labels"]
    except KeyError:
        return iter(())
    return iter(sorted(image_id(k) for k in labels.array_keys()))


def label_problem(group: zarr.Group, entry: Any) -> str | None:
    """Why the label map of an index entry cannot be used (one line), or None.

    It must exist with a complete record made under the store's configuration, from the entry's LQ bytes
    (the index's SHA-256), with the entry's (H, W).
    """
    rec = record(group, entry.id)
    if rec is None:
        return f"{entry.id}: missing or incomplete label map"
    if rec["source_sha256"] != entry.sha256:
        return f"{entry.id}: label map made from other LQ bytes than the index's {entry.lq}"
    if list(rec["shape"]) != list(entry.shape[:2]):
        return f"{entry.id}: label map shape {rec['shape']} != image shape {list(entry.shape[:2])}"
    return None


def checked_labels(group: zarr.Group, entry: Any) -> zarr.Array:
    """The label array of an index entry; StoreError naming the problem of :func:`label_problem`."""
    problem = label_problem(group, entry)
    if problem is not None:
        raise StoreError(problem)
    return group[f"labels/{image_key(entry.id)}"]


def verify(group: zarr.Group, entries: Iterator[Any] | list[Any], root: str | Path | None = None,
           hash_labels: bool = True) -> list[str]:
    """Problems of the store against index entries (one line each; empty when all is well).

    Each entry's label map must pass :func:`label_problem`; with `root`, the LQ file on disk is hashed too;
    with `hash_labels`, the label bytes must still match their recorded SHA-256.
    """
    from rat.shared.io import sha256_file

    problems = []
    for entry in entries:
        problem = label_problem(group, entry)
        if problem is None and root is not None:
            path = Path(root) / entry.lq
            if not path.exists():
                problem = f"{entry.id}: LQ file {path} not found"
            elif sha256_file(path) != entry.sha256:
                problem = f"{entry.id}: LQ file {path} differs from the label map's source"
        if problem is None and hash_labels:
            labels = group[f"labels/{image_key(entry.id)}"][...]
            if labels_sha256(labels) != record(group, entry.id)["labels_sha256"]:
                problem = f"{entry.id}: label bytes do not match their recorded SHA-256"
        if problem is not None:
            problems.append(problem)
    return problems


def summarize(group: zarr.Group) -> dict[str, Any]:
    """Provenance, counts and region statistics of a store."""
    prov = provenance(group)
    ids = list(label_ids(group))
    records = [record(group, i) for i in ids]
    regions = np.array([r["regions"] for r in records if r is not None], dtype=np.int64)
    stats = ({"min": int(regions.min()), "median": float(np.median(regions)),
              "mean": float(regions.mean()), "max": int(regions.max())} if regions.size else {})
    return {"provenance": prov, "label_maps": len(ids),
            "complete": int(sum(r is not None for r in records)),
            "incomplete": [i for i, r in zip(ids, records, strict=True) if r is None],
            "regions": stats}
