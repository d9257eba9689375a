"""OME-Zarr metadata (rat.shared.store.ngff): ome-zarr-py's reader opens the label maps."""

import numpy as np
import pytest
from helpers import prov

from rat.shared import store as st


def test_label_maps_are_ome_zarr_label_images(tmp_path):
    """ome-zarr-py's own reader opens a label map as an NGFF label image and lists its regions."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Reader

    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    lab = np.zeros((40, 50), np.uint16)
    lab[:10, :20], lab[20:, 30:], lab[5:8, 40:45] = 1, 2, 7
    st.write_labels(g, "ct_01", lab, "a" * 64, chunk=16, spacing=(0.7, 0.5))
    from rat.shared.store.records import consolidate

    consolidate(g)
    (node, *_) = Reader(parse_url(str(url / "labels" / "ct_01")))()
    assert any(isinstance(spec, Label) for spec in node.specs)
    np.testing.assert_array_equal(np.asarray(node.data[0]), lab)
    assert node.metadata["properties"] == {1: {"area (pixels)": 200}, 2: {"area (pixels)": 400},
                                           7: {"area (pixels)": 15}}
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [0.7, 0.5]
    nodes = list(Reader(parse_url(str(url / "labels")))())  # the labels group lists the label images
    assert any(isinstance(spec, Labels) for n in nodes for spec in n.specs)
    assert sum(isinstance(spec, Label) for n in nodes for spec in n.specs) == 1

