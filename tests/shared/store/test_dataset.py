"""The dataset a store carries (rat.shared.store.dataset): its definition is the recorded one, or refused."""

import json
import shutil

import pytest
from click.testing import CliRunner

from rat.precompute.cli import main as pre
from rat.shared import store as st


def edited(sample_store, tmp_path, old: str, new: str):
    """A copy of the sample store whose carried definition text was edited in zarr.json (hash left as is)."""
    url = shutil.copytree(sample_store, tmp_path / "edited.zarr")
    meta = json.loads((url / "zarr.json").read_text())
    definition = meta["attributes"]["rat"]["definition"]
    assert old in definition["text"]
    definition["text"] = definition["text"].replace(old, new)
    (url / "zarr.json").write_text(json.dumps(meta))
    return url, definition


@pytest.mark.parametrize("builtin", [True, False])
def test_an_edited_definition_is_refused_wherever_it_is_read(sample_store, sample_root, tmp_path, builtin):
    """The text a store carries is checked against its recorded SHA-256: training, eval and `verify` refuse
    an edited one (a custom definition used to be trained on, a builtin one silently ignored)."""
    url, definition = edited(sample_store, tmp_path, "norm_high = 255.0", "norm_high = 100.0")
    if not builtin:  # a custom definition: the store records it as not builtin
        meta = json.loads((url / "zarr.json").read_text())
        meta["attributes"]["rat"]["definition"]["builtin"] = False
        (url / "zarr.json").write_text(json.dumps(meta))
    group = st.open_store(url)
    with pytest.raises(st.StoreError, match=r"edited.zarr.*the dataset definition it carries \(sample\) does "
                                            r"not match its recorded SHA-256"):
        st.dataset_for(group, None, sample_root)
    with pytest.raises(st.StoreError, match="does not match its recorded SHA-256"):
        st.dataset_for(group, "sample", sample_root)  # another definition named: the store's is still read
    result = CliRunner().invoke(pre, ["verify", str(url), "--root", str(sample_root), "--no-progress"])
    assert result.exit_code == 1
    assert "does not match its recorded SHA-256" in result.output and "ok:" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_recorded_definition_is_read_as_it_is(sample_store, sample_root):
    ds, entries, root = st.dataset_for(st.open_store(sample_store), None, sample_root)
    assert ds.name == "sample" and entries and root == sample_root
