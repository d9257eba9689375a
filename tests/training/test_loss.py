"""Focal region loss against direct per-region computations (the paper's per-image
normalisation and the authors' code's per-batch one); gamma = 0 is L1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rat.training.choices import FR_NORMS
from rat.training.loss import focal_region_loss, region_weights


def _direct(pred, target, labels, gamma, delta):
    """The definition, written out with loops over images and regions (tiny tensors only)."""
    err = (pred - target).abs()
    weight = torch.zeros_like(labels, dtype=err.dtype)
    for i in range(labels.shape[0]):
        ids = labels[i].unique()
        means = {int(r): err[i][:, labels[i] == r].mean() ** delta for r in ids}
        top = max(means.values())
        for r, m in means.items():
            weight[i][labels[i] == r] = m / top if top > 0 else 0.0
    return (err * (1 + gamma * weight[:, None])).mean(), weight


def _authors(pred, target, labels, gamma, delta):
    """The authors' public code's formula, written out: each pixel gets its region's mean
    error ** delta, then the whole batch's map is divided by its maximum (``weight /
    weight.max()``)."""
    err = (pred - target).abs()
    weight = torch.zeros_like(labels, dtype=err.dtype)
    for i in range(labels.shape[0]):
        for r in labels[i].unique():
            region = labels[i] == r
            weight[i][region] = err[i][:, region].mean() ** delta
    weight = weight / weight.max()
    return (err * (1 + gamma * weight[:, None])).mean(), weight


def _tensors(seed=0, b=2, c=3, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    target = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (b, h, w), generator=g) * 17 - 3  # non-consecutive, negative
    labels[1, :2] = 99  # a region only the second image has
    return pred, target, labels


@pytest.mark.parametrize("gamma,delta", [(1e-3, 1.0), (0.5, 1.0), (2.0, 2.0), (1.0, 0.5)])
def test_matches_direct_per_region_computation(gamma, delta):
    pred, target, labels = _tensors()
    expected, weight = _direct(pred, target, labels, gamma, delta)
    got = focal_region_loss(pred, target, labels, gamma=gamma, delta=delta)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(region_weights((pred - target).abs(), labels, delta)[:, 0], weight)


@pytest.mark.parametrize("gamma,delta", [(1e-3, 1.0), (0.5, 1.0), (2.0, 2.0)])
def test_batch_normalisation_is_the_authors_formula(gamma, delta):
    pred, target, labels = _tensors(seed=4)
    target[1] = 3 * target[1]  # images with different error levels: the two norms differ
    expected, weight = _authors(pred, target, labels, gamma, delta)
    got = focal_region_loss(pred, target, labels, gamma=gamma, delta=delta, norm="batch")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    w = region_weights((pred - target).abs(), labels, delta, norm="batch")[:, 0]
    torch.testing.assert_close(w, weight)
    per_image = region_weights((pred - target).abs(), labels, delta, norm="image")[:, 0]
    assert w.amax() == 1 and (w.amax(dim=(1, 2)) < 1).any()  # one image peaks at 1, not each
    assert not torch.allclose(w, per_image)
    image_loss = focal_region_loss(pred, target, labels, gamma=gamma, delta=delta)
    torch.testing.assert_close(image_loss, _direct(pred, target, labels, gamma, delta)[0],
                               rtol=1e-12, atol=0)


def test_norms_agree_for_one_image_and_are_checked():
    pred, target, labels = (t[:1] for t in _tensors(seed=5))
    err = (pred - target).abs()
    assert FR_NORMS == ("image", "batch")
    assert torch.equal(region_weights(err, labels, norm="image"), region_weights(err, labels, norm="batch"))
    with pytest.raises(ValueError, match="unknown focal region loss normalisation 'pixel'"):
        focal_region_loss(pred, target, labels, norm="pixel")


def test_gamma_zero_is_l1_exactly():
    pred, target, labels = _tensors(seed=1)
    pred, target = pred.float(), target.float()
    assert torch.equal(focal_region_loss(pred, target, labels, gamma=0.0), F.l1_loss(pred, target))


def test_weights_are_detached():
    pred, target, labels = _tensors(seed=2)
    pred.requires_grad_()
    gamma = 0.7
    focal_region_loss(pred, target, labels, gamma=gamma).backward()
    with torch.no_grad():
        weight = region_weights((pred - target).abs(), labels)
        expected = torch.sign(pred - target) * (1 + gamma * weight) / pred.numel()
    torch.testing.assert_close(pred.grad, expected)


def test_weights_per_image_peak_at_one_and_zero_error_is_safe():
    pred, target, labels = _tensors(seed=3)
    target[1] = 10 * target[1]  # the second image's errors are far larger
    w = region_weights((pred - target).abs(), labels)
    assert w.shape == (2, 1, 5, 6)
    assert torch.allclose(w.amax(dim=(1, 2, 3)), torch.ones(2, dtype=w.dtype))
    assert (w >= 0).all() and (w <= 1).all()
    loss = focal_region_loss(target, target, labels)
    assert loss.item() == 0.0
    assert torch.equal(region_weights(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3).long()),
                       torch.zeros(1, 1, 3, 3))


def test_bad_inputs_give_clear_errors():
    pred, target, labels = _tensors()
    with pytest.raises(ValueError, match="differ"):
        focal_region_loss(pred, target[:, :1], labels)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 5, 5\) do not match"):
        focal_region_loss(pred, target, labels[:, :, :5])
    with pytest.raises(ValueError, match="integer"):
        focal_region_loss(pred, target, labels.double())
