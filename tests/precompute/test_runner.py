"""The batch runner (rat.precompute.runner): what a generator returns is checked, and a generator that fails
on one image fails that image only."""

import numpy as np

from rat.precompute.runner import run_masks
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import load_index


class Faulty:
    """A plug-in generator that returns float labels for one image, negative ones for another, and raises a
    TypeError (a bug of its own) on a third; whole tiles of 16 pixels otherwise."""

    name = "faulty"
    params = {"size": 16}

    def __init__(self, float_for: int, negative_for: int, raise_for: int) -> None:
        self.calls, self.float_for, self.negative_for, self.raise_for = 0, float_for, negative_for, raise_for

    def provenance(self) -> dict:
        return {"name": self.name, "params": dict(self.params)}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        h, w = rgb.shape[:2]
        labels = 1 + (np.arange(h)[:, None] // 16) * 100 + np.arange(w)[None, :] // 16
        if self.calls == self.float_for:
            return labels.astype(np.float64)
        if self.calls == self.negative_for:
            return -labels
        if self.calls == self.raise_for:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return labels.astype(np.uint16)


def test_float_negative_or_failing_labels_fail_that_image_only(sample_root, tmp_path):
    ds = load_dataset("sample")
    entries = [e for e in load_index(ds, sample_root) if e.group == "ct"][:5]
    outcomes = run_masks(ds, entries, sample_root, tmp_path / "s.zarr", Faulty(2, 3, 4), progress=False)
    status = [o.status for o in outcomes]
    assert status == ["done", "failed", "failed", "failed", "done"]
    a, b, c = (outcomes[k] for k in (1, 2, 3))
    assert a.reason == (f"{a.image_id}: generator faulty returned float64 labels; a label map holds integers "
                        "(0 = no region, 1..L)")
    assert b.reason.startswith(f"{b.image_id}: generator faulty returned negative labels (")
    assert c.reason == (f"{c.image_id}: generator faulty failed (TypeError: unsupported operand type(s) for "
                        "+: 'int' and 'str')")
    group = st.open_store(tmp_path / "s.zarr")
    assert st.record(group, a.image_id) is None and st.record(group, outcomes[4].image_id) is not None
