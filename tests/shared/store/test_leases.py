"""Runs that write one store at once (rat.shared.store.leases): a later run leaves to an earlier live run the
images it holds; leases of killed runs (a dead process here, a silent host elsewhere) are ignored, removed."""

import json
import subprocess
import sys
import time

from helpers import prov

from rat.shared import store as st
from rat.shared.store import leases


def test_a_later_run_leaves_what_an_earlier_live_one_holds(tmp_path):
    group = st.init_store(tmp_path / "s.zarr", prov())
    first, held = st.hold(group, ["a", "b", "c"])
    assert held == {}
    second, held = st.hold(group, ["b", "c", "d"])
    assert sorted(held) == ["b", "c"] and held["b"].startswith("pid ")
    third, held = st.hold(group, ["a", "d", "e"])
    assert sorted(held) == ["a", "d"]                 # each from the earliest run that holds it
    for lease in (first, second, third):
        lease.release()
    after, held = st.hold(group, ["a", "b"])
    assert held == {}
    after.release()
    assert not (tmp_path / "s.zarr" / leases.FOLDER).exists()


def test_leases_of_killed_runs_and_silent_hosts_are_ignored_and_removed(tmp_path):
    group = st.init_store(tmp_path / "s.zarr", prov())
    folder = tmp_path / "s.zarr" / leases.FOLDER
    folder.mkdir()
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    old = f"{1:020d}-aaaaaaaa"
    (folder / f"{old}.json").write_text(json.dumps({"token": old, "host": socket.gethostname(),
                                                   "pid": int(dead.stdout), "started": 0, "ids": ["a"]}))
    far, silent = f"{2:020d}-bbbbbbbb", f"{3:020d}-cccccccc"
    for token, beat in ((far, time.time()), (silent, time.time() - 2 * leases.STALE_AFTER)):
        (folder / f"{token}.json").write_text(json.dumps({"token": token, "host": "node-elsewhere", "pid": 1,
                                                         "started": 0, "ids": ["b", "c"]}))
        (folder / f"{token}.beat").write_text(json.dumps({"time": beat}))
    mine, held = st.hold(group, ["a", "b", "c"])
    assert sorted(held) == ["b", "c"] and "node-elsewhere" in held["b"]   # the other host still beats
    assert not (folder / f"{old}.json").exists() and not (folder / f"{silent}.json").exists()
    assert (folder / f"{far}.json").exists()
    mine.release()
