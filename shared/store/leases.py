"""Runs that write one store at the same time: each holds the images it computes, later runs leave them to it.

Processes on disjoint shards write one store at once by design; two runs over the same images (two `masks`
started by mistake, a rerun while the first still works) would both compute everything. So the coordinator
of a run records, before it computes, a lease ``.rat-runs/<token>.json``: the ids it is about to compute, its
host and process, and a token that orders runs by their start. It then reads the other leases, and leaves
to each live run that started before it the images that run holds (:func:`hold`). Both runs write their
lease before they read the others', so two runs started together agree on which one goes first. A lease is
live while its process runs (same host: the process id is checked) or, for another host, while its
heartbeat (``<token>.beat``, rewritten every :data:`BEAT` seconds) is younger than :data:`STALE_AFTER`; a run
that was killed leaves a lease that is then ignored, and removed by the next run. A run removes its own
lease when it ends (:meth:`Lease.release`).

Leases live in the store, so they work on a shared file system and on object stores alike; on an object
store two runs that start within moments of each other may both compute the same images (no atomic
create-if-absent there), which costs time, never correctness: a label map is a pure function of its
image and the configuration.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync

from rat.shared.store.schema import MISSING

#: Folder of the leases in the store (not a zarr node: readers never see it).
FOLDER = ".rat-runs"
#: Seconds between heartbeats, and the age at which another host's lease counts as abandoned.
BEAT, STALE_AFTER = 60.0, 600.0


def _put(raw: zarr.abc.store.Store, key: str, doc: dict[str, Any]) -> None:
    buf = default_buffer_prototype().buffer.from_bytes(json.dumps(doc).encode())
    sync(raw.set(key, buf))


def _get(raw: zarr.abc.store.Store, key: str) -> dict[str, Any] | None:
    try:
        buf = sync(raw.get(key, default_buffer_prototype()))
        return None if buf is None else json.loads(buf.to_bytes())
    except (*MISSING, OSError, ValueError):
        return None


def _delete(raw: zarr.abc.store.Store, key: str) -> None:
    try:
        sync(raw.delete(key))
    except (*MISSING, OSError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def describe(lease: dict[str, Any]) -> str:
    """A lease's run in a few words: process, host and start."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.get("started", 0)))
    return f"pid {lease.get('pid')} on {lease.get('host')}, started {started}"


@dataclass
class Lease:
    """This run's lease: released (deleted, its heartbeat stopped) with :meth:`release` or ``with``."""

    raw: zarr.abc.store.Store
    token: str
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(BEAT):
            _put(self.raw, f"{FOLDER}/{self.token}.beat", {"time": time.time()})

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for suffix in (".json", ".beat"):
            _delete(self.raw, f"{FOLDER}/{self.token}{suffix}")
        if isinstance(self.raw, zarr.storage.LocalStore):     # the folder goes with the last lease
            try:
                os.rmdir(os.path.join(self.raw.root, FOLDER))
            except OSError:
                pass  # other runs' leases are in it

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _live(lease: dict[str, Any], beat: dict[str, Any] | None) -> bool:
    if lease.get("host") == socket.gethostname():
        return _alive(int(lease.get("pid", 0)))
    last = (beat or {}).get("time", lease.get("started", 0))
    return time.time() - float(last) < STALE_AFTER


def hold(store: zarr.Group, ids: Sequence[str]) -> tuple[Lease, dict[str, str]]:
    """Record that this run computes ``ids`` (see the module doc). Returns its lease and, for the ids a live
    run that started earlier holds, {id: that run described} (this run leaves them to it)."""
    raw = store.store
    token = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    _put(raw, f"{FOLDER}/{token}.json", {"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                                           "started": time.time(), "ids": list(ids)})
    lease = Lease(raw, token)
    held: dict[str, str] = {}
    try:
        names = sorted(collect_aiterator(raw.list_dir(FOLDER)))
    except (*MISSING, OSError):
        names = []
    for name in names:
        if not name.endswith(".json") or name == f"{token}.json":
            continue
        other = _get(raw, f"{FOLDER}/{name}")
        if other is None:
            continue
        if not _live(other, _get(raw, f"{FOLDER}/{name[:-5]}.beat")):
            _delete(raw, f"{FOLDER}/{name}")                     # abandoned by a run that was killed
            _delete(raw, f"{FOLDER}/{name[:-5]}.beat")
            continue
        if str(other.get("token", "")) < token:
            mine = set(ids)
            held.update({i: describe(other) for i in other.get("ids", []) if i in mine and i not in held})
    lease._thread = threading.Thread(target=lease._beat, name="rat-lease-beat", daemon=True)
    lease._thread.start()
    return lease, held
