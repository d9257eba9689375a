"""Records of many label maps (rat.shared.store.records): the consolidated table is a cache that is never
trusted past a change of the document it was read from."""

import numpy as np
from helpers import prov

from rat.shared import store as st
from rat.shared.store import access
from rat.shared.store.records import POINTER, read_records


def test_the_consolidated_table_gives_the_records_and_a_rewritten_map_is_read_again(tmp_path, monkeypatch):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    for i in range(6):
        st.write_labels(g, f"img{i}", np.full((5, 7), i + 1, np.uint16), f"{i}" * 64)
    st.consolidate(g)
    reader = st.open_store(url)
    assert st.provenance(reader)[POINTER]["entries"] == 6
    ids = [f"img{i}" for i in range(6)] + ["absent"]
    single = {i: st.record(reader, i) for i in ids}                    # one document each: the truth
    reads = []
    real = access.read_documents
    monkeypatch.setattr("rat.shared.store.records.read_documents",
                        lambda store, keys, threads=8: reads.append(list(keys)) or real(store, keys, threads))
    assert read_records(reader, ids) == single
    assert reads == [["labels/absent/zarr.json"]]                    # the others from the table
    st.write_labels(g, "img2", np.full((5, 7), 9, np.uint16), "f" * 64)            # rewritten since
    reads.clear()
    again = read_records(st.open_store(url), ids)
    assert again["img2"]["source_sha256"] == "f" * 64 and again["img3"] == single["img3"]
    assert sorted(reads[0]) == ["labels/absent/zarr.json", "labels/img2/zarr.json"]
    g2 = st.init_store(url, prov(n_segments=9), overwrite=True)                    # another configuration
    assert set(read_records(st.open_store(url), ids).values()) == {None}
    st.consolidate(g2)
    assert st.provenance(st.open_store(url))[POINTER]["entries"] == 0
