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


def test_a_rerun_recomputes_exactly_the_maps_whose_bytes_no_longer_match(sample_root, tmp_path, monkeypatch):
    """A damaged label map (its chunk rewritten, its record left) used to count as complete; a rerun now
    recomputes it, and only it, and says so. Maps written by the run are remembered as checked: a rerun of a
    finished store reads no label bytes."""
    from rat.precompute.runner import REPAIRED
    from rat.shared.regions import build_generator
    from rat.shared.store import checks

    ds = load_dataset("sample")
    entries = load_index(ds, sample_root)[:5]
    out = tmp_path / "s.zarr"
    gen = build_generator("superpixels")
    assert all(o.status == "done" for o in run_masks(ds, entries, sample_root, out, gen, progress=False))
    reads = []
    original = checks.read_labels
    monkeypatch.setattr(checks, "read_labels", lambda g, i, **kw: reads.append(i) or original(g, i, **kw))
    assert all(o.status == "skipped" for o in run_masks(ds, entries, sample_root, out, gen, progress=False))
    assert reads == []                                           # nothing read again
    victim = entries[2].id
    before = st.read_labels(st.open_store(out), victim)
    writable = st.open_store(out, mode="r+")
    writable[f"labels/{victim}/0"][0, 0] = int(before[0, 0]) + 1  # the bytes change, the record stays
    outcomes = run_masks(ds, entries, sample_root, out, gen, progress=False)
    assert [(o.image_id, o.status, o.reason) for o in outcomes if o.status != "skipped"] == [
        (victim, "done", REPAIRED)]
    assert reads == [victim]                                     # only the changed map was read
    np.testing.assert_array_equal(st.read_labels(st.open_store(out), victim), before)
    assert st.verify(st.open_store(out), entries) == []


def test_a_run_leaves_to_an_earlier_run_the_images_it_is_computing(sample_root, tmp_path):
    """Two runs on one store: the later one leaves what the earlier holds, computes the rest, and a run
    after both computes nothing twice."""
    from rat.precompute.runner import LEFT
    from rat.shared.regions import build_generator

    ds = load_dataset("sample")
    entries = load_index(ds, sample_root)[:6]
    out = tmp_path / "s.zarr"
    gen = build_generator("superpixels")
    run_masks(ds, entries[:1], sample_root, out, gen, progress=False)     # the store exists
    first, held = st.hold(st.open_store(out, mode="r+"), [e.id for e in entries[1:4]])  # a run at work
    assert held == {}
    outcomes = run_masks(ds, entries, sample_root, out, gen, progress=False)
    left = [o.image_id for o in outcomes if o.status == "skipped" and o.reason.startswith(LEFT)]
    assert left == [e.id for e in entries[1:4]]
    assert [o.image_id for o in outcomes if o.status == "done"] == [e.id for e in entries[4:]]
    first.release()
    outcomes = run_masks(ds, entries, sample_root, out, gen, progress=False)
    assert [o.image_id for o in outcomes if o.status == "done"] == [e.id for e in entries[1:4]]
    assert not (out / ".rat-runs").exists()
