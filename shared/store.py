"""The label-map store: the contract between precompute and training, and what team members share.

Layout (zarr v3, schema 2)::

    store.zarr/
      zarr.json                root attributes {"rat": provenance}: schema, dataset, generator + params,
                               SAM model type + checkpoint SHA-256, SAM windows, package version, fingerprint;
                               the dataset definition's text, the root it was made from and a pointer to the
                               index (:mod:`rat.shared.store_dataset`)
      index-<sha>              the index (ids, groups, splits, paths, shapes, LQ and HQ SHA-256), UTF-8 JSON
      labels/                  group; attributes {"ome": {"version": "0.5", "labels": [keys]}}
      labels/<key>/            one OME-Zarr (NGFF 0.5) label image per LQ image; attributes {"ome":
                               multiscales + image-label, :mod:`rat.shared.ngff`} and {"rat": record}, the
                               record written last: source SHA-256, shape, dtype, regions, labels SHA-256,
                               fingerprint, complete
      labels/<key>/0           (H, W) uint16/uint32 label map, chunked (256, 256), zstd
      images/<key>/lq, /hq     image cache of schema-1 stores (read, never written: the cache is local now)

Schema 1 (still read) kept the label map itself at ``labels/<key>``, with the record in its attributes, and
no dataset. `<key>` is the image id with "/" written as "~". A label map whose record is missing, not
complete, or made under another fingerprint does not exist for readers; one whose bytes do not match the
record's SHA-256 is reported (:func:`verify`) and never trained on. Only one process writes a given key; root
metadata is created once with an atomic create-if-absent and rewritten only by the coordinator of a run.

Every label map records the fingerprint of the configuration it was computed under, so a store whose
configuration is replaced (``overwrite``) while other processes still write into it stays consistent: what
they write under the old configuration does not exist for readers and is recomputed by the next run.
Transient read errors (object stores) are retried; only a node that is not there reads as missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata

from rat.shared import __version__
from rat.shared.errors import RatError, one_line
from rat.shared.ngff import label_image_attrs

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
DEFAULT_CHUNK = 256
ZSTD_LEVEL = 5
ATTR = "rat"
#: Provenance fields that change what a label map is; the fingerprint hashes exactly these.
IDENTITY_FIELDS = ("dataset", "generator", "windows")
#: Attempts of a read that fails for another reason than a missing node (object stores), and the first wait.
READ_ATTEMPTS, RETRY_WAIT = 4, 0.25
#: What a missing (or half-written, never completed) node raises.
MISSING = (KeyError, FileNotFoundError, json.JSONDecodeError)
T = TypeVar("T")


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


def retrying(what: str, read: Callable[[], T]) -> T:
    """``read()``, tried again (with growing waits) when it fails for another reason than a missing node;
    StoreError naming ``what`` when every attempt failed. Missing nodes (MISSING) are raised at once."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return read()
        except MISSING:
            raise
        except Exception as err:  # noqa: BLE001 - network and server errors come in many types
            if attempt == READ_ATTEMPTS - 1:
                raise StoreError(f"{what}: cannot read ({type(err).__name__}: {one_line(err)}) after "
                                 f"{READ_ATTEMPTS} attempts") from None
            time.sleep(RETRY_WAIT * 2**attempt)
    raise AssertionError("unreachable")


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
        return retrying(str(url), lambda: zarr.open_group(store, mode=mode))
    except (StoreError, *MISSING) as err:
        reason = f"{type(err).__name__}: {one_line(err)}"
        raise StoreError(f"{url}: not a readable zarr store ({reason})") from None


def create_if_absent(store: zarr.abc.store.Store, path: str, attributes: dict[str, Any]) -> None:
    """Atomically create group metadata at `path` unless it exists (first writer wins)."""
    buf = GroupMetadata(attributes=attributes).to_buffer_dict(default_buffer_prototype())["zarr.json"]
    key = f"{path}/zarr.json" if path else "zarr.json"
    zarr.core.sync.sync(store.set_if_not_exists(key, buf))


def provenance(group: zarr.Group) -> dict[str, Any]:
    """The root record of a store (schema 1 or 2); StoreError for anything else."""
    prov = group.attrs.get(ATTR)
    if not isinstance(prov, dict):
        raise StoreError(f"{group.store}: not a RAT label store (no '{ATTR}' root attributes)")
    if prov.get("schema") not in READABLE_SCHEMAS:
        raise StoreError(f"{group.store}: store schema {prov.get('schema')} is not one this version reads "
                         f"({', '.join(map(str, READABLE_SCHEMAS))}); install a newer rat")
    return prov


def upgrade_hint(url: str | Path) -> str:
    return (f"{url} is a schema-1 store: upgrade it in place with `rat-precompute upgrade {url} --dataset "
            "NAME --root DIR` (label maps are kept)")


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
    count as done and are recomputed. A schema-1 store is refused with the way to upgrade it.
    """
    store = _store(url, read_only=False)
    create_if_absent(store, "", {ATTR: prov})
    group = zarr.open_group(store, mode="a")
    have = group.attrs.get(ATTR)
    if not isinstance(have, dict):
        raise StoreError(f"{url}: exists but is not a RAT label store")
    if have.get("schema") == 1:
        raise StoreError(upgrade_hint(url))
    if have.get("fingerprint") != prov["fingerprint"]:
        if not overwrite:
            raise StoreError(
                f"{url}: made with another configuration ({describe_difference(have, prov)}); "
                "use another store, or `overwrite` to recompute every image")
        kept = {k: have[k] for k in ("definition", "root", "index", "derive_versions") if k in have}
        group.attrs[ATTR] = {**prov, **kept}
    create_if_absent(store, "labels", {"ome": {"version": "0.5", "labels": []}})
    return group


# ---------------------------------------------------------------------------------------------------
# label maps


def _label_node(group: zarr.Group, image_id: str) -> tuple[Any, zarr.Array]:
    """(node holding the record, label array) of an image: schema 2 group + its array "0", or the schema-1
    array itself. Raises MISSING errors when it is not there."""
    node = group[f"labels/{image_key(image_id)}"]
    return (node, node["0"]) if isinstance(node, zarr.Group) else (node, node)


def record(group: zarr.Group, image_id: str) -> dict[str, Any] | None:
    """The complete record of a label map made under the store's configuration, else None (missing, half
    written, or of another configuration). Transient read errors are retried, then raise StoreError."""
    def read() -> Any:
        node = group[f"labels/{image_key(image_id)}"]
        return node.attrs.get(ATTR)

    try:
        rec = retrying(f"{group.store}: labels/{image_id}", read)
    except MISSING:
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
                 chunk: int = DEFAULT_CHUNK, fingerprint: str | None = None,
                 spacing: tuple[float, float] | None = None) -> dict[str, Any]:
    """Write one label map as an NGFF label image, its record last. Replaces whatever was at that key.

    ``fingerprint``: of the configuration the map was computed under (default: the store's now); a writer
    passes its own, so that a map is never recorded under a configuration that replaced it meanwhile.
    ``spacing``: (row, col) pixel spacing in mm, for viewers.
    """
    if labels.ndim != 2:
        raise StoreError(f"{image_id}: label map must be 2-D, got shape {labels.shape}")
    key = image_key(image_id)
    counts = np.bincount(labels.ravel())
    node = group.create_group(f"labels/{key}", overwrite=True,
                              attributes={"ome": label_image_attrs(key, counts, spacing)})
    arr = node.create_array("0", shape=labels.shape, dtype=labels.dtype,
                            chunks=(min(chunk, labels.shape[0]), min(chunk, labels.shape[1])),
                            compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), fill_value=0,
                            dimension_names=("y", "x"))
    arr[...] = labels
    rec = {"source_sha256": source_sha256, "shape": list(labels.shape), "dtype": str(labels.dtype),
           "regions": int(np.count_nonzero(counts[1:])), "labels_sha256": labels_sha256(labels),
           "fingerprint": fingerprint or provenance(group)["fingerprint"], "complete": True}
    node.attrs[ATTR] = rec
    return rec


def label_array(group: zarr.Group, image_id: str) -> zarr.Array:
    """The label array of an image (schema 1 or 2), whatever its record; StoreError when missing."""
    try:
        return retrying(f"{group.store}: labels/{image_id}", lambda: _label_node(group, image_id)[1])
    except MISSING:
        raise StoreError(f"{image_id}: no label map in the store") from None


def read_labels(group: zarr.Group, image_id: str, check: bool = True) -> np.ndarray:
    """The label map of `image_id`; StoreError when it is missing, incomplete or (with ``check``) its bytes
    do not match their recorded SHA-256."""
    rec = record(group, image_id)
    if rec is None:
        raise StoreError(f"{image_id}: no complete label map in the store")
    labels = retrying(f"{group.store}: labels/{image_id}", lambda: label_array(group, image_id)[...])
    if check and labels_sha256(labels) != rec["labels_sha256"]:
        raise StoreError(f"{image_id}: label bytes do not match their recorded SHA-256 (corrupted or swapped "
                         "chunk); recompute it with `rat-precompute masks --overwrite`")
    return labels


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
    return label_array(group, entry.id)


def bytes_problem(group: zarr.Group, image_id: str) -> str | None:
    """Whether a complete label map's bytes still match their recorded SHA-256 (one line), or None."""
    try:
        read_labels(group, image_id)
    except StoreError as err:
        return str(err)
    return None


def verify(group: zarr.Group, entries: Iterable[Any], root: str | Path | None = None,
           hash_labels: bool = True, threads: int = 8) -> list[str]:
    """Problems of the store against index entries (one line each, in entry order; empty when all is well).

    Each entry's label map must pass :func:`label_problem`; with `root`, the LQ file on disk is hashed too;
    with `hash_labels`, the label bytes must still match their recorded SHA-256 (read in ``threads``).
    """
    from rat.shared.hashes import source_sha256
    from rat.shared.locate import source_path

    def problem(entry: Any) -> str | None:
        found = label_problem(group, entry)
        if found is None and root is not None:
            path = source_path(root, entry.lq)
            if not path.exists():
                found = f"{entry.id}: LQ file {path} not found"
            elif source_sha256(path) != entry.sha256:
                found = f"{entry.id}: LQ file {path} differs from the label map's source"
        if found is None and hash_labels:
            found = bytes_problem(group, entry.id)
        return found

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return [p for p in pool.map(problem, list(entries)) if p is not None]


def label_ids(group: zarr.Group) -> list[str]:
    """Ids of every label map in the store (schema 1 arrays and schema 2 groups), complete or not, sorted."""
    try:
        labels = group["labels"]
    except KeyError:
        return []
    keys = set(labels.array_keys()) | set(labels.group_keys())
    return sorted(image_id(k) for k in keys)


def summarize(group: zarr.Group) -> dict[str, Any]:
    """Provenance, counts and region statistics of a store."""
    prov = provenance(group)
    ids = label_ids(group)
    records = [record(group, i) for i in ids]
    regions = np.array([r["regions"] for r in records if r is not None], dtype=np.int64)
    stats = ({"min": int(regions.min()), "median": float(np.median(regions)),
              "mean": float(regions.mean()), "max": int(regions.max())} if regions.size else {})
    return {"provenance": {k: v for k, v in prov.items() if k != "definition"}, "label_maps": len(ids),
            "complete": int(sum(r is not None for r in records)),
            "incomplete": [i for i, r in zip(ids, records, strict=True) if r is None],
            "regions": stats}
