"""Schema-1 stores (rat.shared.store.legacy): read in the schema-2 layout, refused for writing."""

import numpy as np
import pytest
from helpers import entry, write_schema1_store

from rat.shared import store as st


def test_schema_1_stores_still_read_and_are_refused_for_writing(tmp_path):
    generator = {"name": "superpixels", "params": {"n_segments": 8}}
    lab = (np.arange(35).reshape(5, 7) % 3).astype(np.uint16)
    url = write_schema1_store(tmp_path / "v1.zarr", "sample", {"a/b": (lab, "a" * 64)}, generator, {})
    r = st.open_store(url)
    assert st.provenance(r)["schema"] == 1
    assert st.record(r, "a/b")["regions"] == 2
    np.testing.assert_array_equal(st.read_labels(r, "a/b"), lab)
    assert st.label_ids(r) == ["a/b"]
    assert st.verify(r, [entry("a/b")]) == []
    with pytest.raises(st.StoreError, match="schema-1 store: upgrade it in place with `rat-precompute"):
        st.init_store(url, st.make_provenance("sample", generator, {}))

