"""Overlapping masks -> non-overlapping label maps (rat.shared.regions.labels): the authors' partition,
vectorised; masks come as SAM's records, encoded by segment_anything's own functions."""

import numpy as np
import pytest
import torch
from helpers import authors_labels, rle_records
from segment_anything.utils.amg import mask_to_rle_pytorch
from segment_anything.utils.amg import rle_to_mask as sam_rle_to_mask

from rat.shared.regions.labels import compact, label_dtype, paint_ranks, resolve_rle_masks, rle_to_mask


def resolve(masks: np.ndarray) -> np.ndarray:
    """The label map the SAM-family generators make of these masks."""
    return resolve_rle_masks(rle_records(masks), masks.shape[1:])


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
    lab = resolve(m)
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
    lab = resolve(m)
    assert (lab[1] == lab[2]).all() and lab[1, 0] != lab[0, 0]
    assert same_partition(lab, authors_labels(m))


def test_fully_covered_mask_disappears_and_numbers_stay_consecutive():
    m = np.zeros((3, 5, 5), bool)
    m[0, :3, :3] = True
    m[1, :2, :2] = True
    m[2, :2, :2] = True                                   # covers mask 1 entirely (tie, later wins)
    lab = resolve(m)
    assert sorted(np.unique(lab)) == [0, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_authors_partition_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w, k = 40, 50, 25
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        masks[i, y:y + rng.integers(2, 20), x:x + rng.integers(2, 20)] = True
    lab = resolve(masks)
    assert (lab == authors_labels(masks)).all()           # the same regions, numbered in paint order


def test_random_masks_give_the_authors_labels():
    masks = np.random.default_rng(7).random((20, 30, 40)) > 0.7
    assert (resolve(masks) == authors_labels(masks)).all()


def test_no_masks_and_masks_of_another_shape():
    assert (resolve_rle_masks([], (3, 4)) == 0).all() and resolve_rle_masks([], (3, 4)).shape == (3, 4)
    records = rle_records(np.ones((2, 3, 3), bool))
    with pytest.raises(ValueError, match=r"mask 0 has shape \(3, 3\), expected \(4, 4\)"):
        resolve_rle_masks(records, (4, 4))


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
