"""The label-map store's contract: its layout, its configuration fingerprint, its errors and read retries.

Layout (zarr v3, schema 2)::

    store.zarr/
      zarr.json                root attributes {"rat": provenance}: schema, dataset, generator + params,
                               SAM model type + checkpoint SHA-256, SAM windows, package version, fingerprint;
                               the dataset definition's text, the root it was made from and a pointer to the
                               index (:mod:`rat.shared.store.dataset`)
      index-<sha>              the index (ids, groups, splits, paths, shapes, LQ and HQ SHA-256), UTF-8 JSON
      records-table            the consolidated records, a cache (:mod:`rat.shared.store.records`)
      .rat-runs/               leases of the runs writing now (:mod:`rat.shared.store.leases`; no zarr node)
      labels/                  zarr group; attributes {"ome": {"version": "0.5", "labels": [keys]}}
      labels/<key>/            one OME-Zarr (NGFF 0.5) label image per LQ image; attributes {"ome":
                               multiscales + image-label, :mod:`rat.shared.store.ngff`} and {"rat": record},
                               the record written last: source SHA-256, shape, dtype, regions, labels SHA-256,
                               fingerprint, complete
      labels/<key>/0           (H, W) uint16/uint32 label map, chunked (256, 256), zstd

``<key>`` is the image id with "/" written as "~". A label map whose record is missing, not complete, or made
under another fingerprint does not exist for readers; one whose bytes do not match the record's SHA-256 is
reported (:mod:`rat.shared.store.checks`) and never trained on. Only one process writes a given key; root
metadata is created once with an atomic create-if-absent and rewritten only by the coordinator of a run.

Every label map records the fingerprint of the configuration it was computed under, so a store whose
configuration is replaced (``overwrite``) while other processes still write into it stays consistent: what
they write under the old configuration does not exist for readers and is recomputed by the next run.
Transient read errors (object stores) are retried; only a node that is not there reads as missing.

Stores of schema 1 are read through :mod:`rat.shared.store.legacy`, which presents them in this layout.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import zarr

from rat.shared import __version__
from rat.shared.errors import RatError, one_line

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
DEFAULT_CHUNK = 256
ZSTD_LEVEL = 5
ATTR = "rat"
#: Provenance fields that change what a label map is; the fingerprint hashes exactly these.
IDENTITY_FIELDS = ("dataset", "generator", "windows")
#: Attempts of a read that fails for another reason than a missing node (object stores), and the first wait.
READ_ATTEMPTS, RETRY_WAIT = 4, 0.25
#: Concurrent reads of many small objects (records, chunks): local files and object stores alike.
READ_THREADS = 32
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


def provenance(store: zarr.Group) -> dict[str, Any]:
    """The root record of a store (schema 1 or 2); StoreError for anything else."""
    prov = store.attrs.get(ATTR)
    if not isinstance(prov, dict):
        raise StoreError(f"{store.store}: not a RAT label store (no '{ATTR}' root attributes)")
    if prov.get("schema") not in READABLE_SCHEMAS:
        raise StoreError(f"{store.store}: store schema {prov.get('schema')} is not one this version reads "
                         f"({', '.join(map(str, READABLE_SCHEMAS))}); install a newer rat-restore")
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
