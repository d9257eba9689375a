"""The store's contract (rat.shared.store.schema): keys of image ids, retried reads."""

import numpy as np
import pytest
import zarr
from helpers import prov

from rat.shared import store as st
from rat.shared.store import schema


class Flaky(zarr.storage.WrapperStore):
    """A store whose reads fail `failures` times (as an object store's connection resets) before working."""

    def __init__(self, store, failures):
        super().__init__(store)
        self.failures = failures

    async def get(self, key, prototype, byte_range=None):
        if key.startswith("labels/x") and self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("connection reset by peer")
        return await super().get(key, prototype, byte_range)


def test_image_ids_that_cannot_be_keys():
    assert st.image_key("a/b") == "a~b" and st.image_id("a~b") == "a/b"
    for bad in ("a~b", "__x", ""):
        with pytest.raises(st.StoreError):
            st.image_key(bad)


def test_transient_read_errors_are_retried_not_taken_for_missing(tmp_path, monkeypatch):
    url = tmp_path / "s.zarr"
    st.write_labels(st.init_store(url, prov()), "x", np.ones((5, 7), np.uint16), "a" * 64)
    monkeypatch.setattr(schema, "RETRY_WAIT", 0.001)
    local = zarr.storage.LocalStore(url, read_only=True)
    flaky = zarr.open_group(Flaky(local, failures=2), mode="r")
    assert st.record(flaky, "x")["complete"]          # two resets, then the record
    dead = zarr.open_group(Flaky(local, failures=10**6), mode="r")
    with pytest.raises(st.StoreError, match=r"labels/x: cannot read \(ConnectionResetError.*after 4 attempt"):
        st.record(dead, "x")                          # not None: `masks` must not recompute it
    assert st.record(zarr.open_group(local, mode="r"), "absent") is None

