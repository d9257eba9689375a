"""Overlapping masks -> non-overlapping label maps: the authors' partition, vectorised."""

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import area_from_rle, mask_to_rle_pytorch
from segment_anything.utils.amg import rle_to_mask as sam_rle_to_mask

from rat.shared.regions.labels import (
    compact,
    label_dtype,
    paint_ranks,
    resolve_masks,
    resolve_rle_masks,
    rle_to_mask,
)


def authors_procedure(masks: np.ndarray) -> np.ndarray:
    """Sort by area descending, paint in that order (later paints over earlier) - written plainly."""
    anns = sorted(({"seg": m, "area": int(m.sum())} for m in masks), key=lambda a: a["area"], reverse=True)
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    for i, ann in enumerate(anns, start=1):
        out[ann["seg"]] = i
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering, with 0 fixed."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
            and ((pairs[0] == 0) == (pairs[1] == 0)).all())


def test_smallest_mask_wins_and_uncovered_is_zero():
    m = np.zeros((3, 6, 6), bool)
    m[0, :4, :4] = True        # 16 px
    m[1, 1:3, 1:3] = True      # 4 px, nested in 0
    m[2, 3:6, 3:6] = True      # 9 px, overlaps 0 at (3,3)
    lab = resolve_masks(m)
    assert lab.dtype == np.uint16
    assert lab[1, 1] == lab[2, 2] != lab[0, 0]           # nested small mask is its own region
    assert lab[3, 3] == lab[5, 5] != lab[0, 0]           # overlap goes to the 9-px mask, not the 16-px one
    assert lab[5, 0] == 0 and lab[0, 5] == 0             # nothing covers these
    assert sorted(np.unique(lab)) == [0, 1, 2, 3]        # consecutive 1..L
    assert lab[0, 0] == 1                                # numbered in paint order: largest first


def test_ties_go_to_the_later_mask_like_a_stable_sort():
    m = np.zeros((2, 4, 4), bool)
    m[0, :2, :] = True
    m[1, 1:3, :] = True                                   # same area 8, overlap on row 1
    lab = resolve_masks(m)
    assert (lab[1] == lab[2]).all() and lab[1, 0] != lab[0, 0]
    assert same_partition(lab, authors_procedure(m))


def test_fully_covered_mask_disappears_and_numbers_stay_consecutive():
    m = np.zeros((3, 5, 5), bool)
    m[0, :3, :3] = True
    m[1, :2, :2] = True
    m[2, :2, :2] = True                                   # covers mask 1 entirely (tie, later wins)
    lab = resolve_masks(m)
    assert sorted(np.unique(lab)) == [0, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_authors_partition_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w, k = 40, 50, 25
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        masks[i, y:y + rng.integers(2, 20), x:x + rng.integers(2, 20)] = True
    ref = authors_procedure(masks)
    lab = resolve_masks(masks)
    assert same_partition(lab, ref)
    assert (lab == compact(ref)).all()                    # and the same numbers, in paint order


def test_empty_mask_list_and_wrong_shapes():
    assert (resolve_masks([], shape=(3, 4)) == 0).all()
    with pytest.raises(ValueError, match="shape"):
        resolve_masks([])
    with pytest.raises(ValueError, match=r"mask 1 has shape \(3, 3\)"):
        resolve_masks([np.ones((4, 4), bool), np.ones((3, 3), bool)])
    with pytest.raises(ValueError, match="2-D"):
        resolve_masks(np.ones((2, 2, 3, 3), bool))


def test_rle_records_give_the_same_map_as_dense_masks():
    rng = np.random.default_rng(7)
    masks = rng.random((20, 30, 40)) > 0.7
    rles = mask_to_rle_pytorch(torch.from_numpy(masks))
    records = [{"segmentation": r, "area": area_from_rle(r)} for r in rles]
    assert (resolve_rle_masks(records, (30, 40)) == resolve_masks(masks)).all()
    assert (resolve_rle_masks([], (30, 40)) == 0).all()


def test_dtype_grows_past_65535_regions():
    assert label_dtype(65535) == np.uint16 and label_dtype(65536) == np.uint32
    painted = np.arange(70000, dtype=np.int64).reshape(280, 250)
    lab = compact(painted)
    assert lab.dtype == np.uint32 and lab.max() == 69999 and lab[0, 0] == 0


def test_paint_ranks_stable():
    assert paint_ranks([5, 9, 5, 1]).tolist() == [2, 1, 3, 4]


def test_vectorised_rle_decoder_equals_sams():
    rng = np.random.default_rng(3)
    masks = np.concatenate([rng.random((5, 17, 23)) > 0.5, np.zeros((1, 17, 23), bool),
                            np.ones((1, 17, 23), bool)])
    for rle in mask_to_rle_pytorch(torch.from_numpy(masks)):
        assert np.array_equal(rle_to_mask(rle), sam_rle_to_mask(rle))
    with pytest.raises(ValueError, match="sum to"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
