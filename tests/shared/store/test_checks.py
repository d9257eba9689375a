"""Checks of a store against the images it serves (rat.shared.store.checks)."""

import numpy as np
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

