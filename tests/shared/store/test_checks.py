"""Checks of a store against the images it serves (rat.shared.store.checks)."""

import numpy as np
import pytest
from helpers import entry, prov

from rat.shared import store as st


def test_verify_reports_every_kind_of_problem(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "ok", np.ones((5, 7), np.uint16), "a" * 64)
    st.write_labels(g, "other", np.ones((5, 7), np.uint16), "b" * 64)
    st.write_labels(g, "tampered", np.ones((5, 7), np.uint16), "a" * 64)
    g["labels/tampered/0"][0, 0] = 2                # bytes changed after the record
    problems = st.verify(st.open_store(url), [entry("ok"), entry("other"), entry("tampered"),
                                              entry("missing"), entry("ok", shape=(6, 7))])
    assert problems[0].startswith("other: label map made from other LQ bytes")
    assert problems[1].startswith("tampered: label bytes do not match their recorded SHA-256")
    assert problems[2] == "missing: missing or incomplete label map"
    assert "shape" in problems[3]
    assert len(problems) == 4



def test_label_bytes_are_hashed_once_and_again_only_when_their_objects_change(sample_store, sample_root,
                                                                           tmp_path, monkeypatch):
    """check_for_training remembers maps whose bytes matched, by the stamps of their store objects: a second
    check reads no label bytes; a swapped chunk changes the stamps, is read again and caught."""
    import shutil

    from rat.shared.datasets import load_dataset
    from rat.shared.index import load_index
    from rat.shared.store import checks

    url = shutil.copytree(sample_store, tmp_path / "s.zarr")
    ds = load_dataset("sample")
    entries = [e for e in load_index(ds, sample_root) if e.group == "ct"]
    hashed = []
    real = checks._bytes_problem
    monkeypatch.setattr(checks, "_bytes_problem", lambda g, i: hashed.append(i) or real(g, i))
    checks.check_for_training(st.open_store(url), ds, entries, sample_root, "s.zarr")
    assert sorted(hashed) == sorted(e.id for e in entries)               # the first time: every map
    hashed.clear()
    checks.check_for_training(st.open_store(url), ds, entries, sample_root, "s.zarr")
    assert hashed == []                                                   # unchanged: none
    a, b = (url / "labels" / e.id / "0" / "c" / "0" / "0" for e in entries[:2])
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(st.StoreError, match=f"{entries[0].id}: label bytes do not match") as err:
        checks.check_for_training(st.open_store(url), ds, entries, sample_root, "s.zarr")
    assert sorted(hashed) == sorted(e.id for e in entries[:2]) and entries[1].id in str(err.value)
