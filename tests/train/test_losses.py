"""Invariances, masks and known values of the training losses."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.train.losses import (
    affine_invariant_loss,
    cutmix_loss,
    depth_loss,
    feature_alignment_loss,
    gradient_matching_loss,
    median_mad_normalize,
    ranking_loss,
    silog_loss,
)

B, H, W = 3, 24, 20


def _rand(*shape, seed=0, lo=0.1, hi=2.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


@pytest.fixture
def target():
    return _rand(B, H, W, seed=1)


@pytest.fixture
def mask():
    m = _rand(B, H, W, seed=2) > 0.6          # ~70% valid
    m[:, 0, 0] = True
    return m


RELATIVE = [affine_invariant_loss, gradient_matching_loss, depth_loss]


def test_normalisation_matches_median_and_mad(target):
    d = target[0]
    t = d.flatten().median()                   # torch: lower median
    s = (d - t).abs().mean()
    out = median_mad_normalize(target, torch.ones_like(target, dtype=torch.bool))[0]
    torch.testing.assert_close(out, (d - t) / s)


@pytest.mark.parametrize("loss", RELATIVE)
def test_zero_at_target(loss, target, mask):
    assert loss(target.clone(), target, mask).item() < 1e-6


@pytest.mark.parametrize("scale, shift", [(3.0, 1.0), (0.01, -5.0), (250.0, 40.0)])
@pytest.mark.parametrize("loss", RELATIVE)
def test_invariant_to_positive_scale_and_shift(loss, target, mask, scale, shift):
    pred = _rand(B, H, W, seed=7)
    base = loss(pred, target, mask)
    assert base.item() > 0.1
    assert abs(loss(scale * pred + shift, target, mask).item() - base.item()) < 1e-6 * max(1.0, base.item()) * 10


def test_gradient_loss_zero_for_affine_transform_of_target(target, mask):
    assert gradient_matching_loss(4.0 * target + 2.0, target, mask).item() < 1e-5
    # ...but not for a flipped (negative scale) one: disparity order matters
    assert gradient_matching_loss(-target, target, mask).item() > 0.1


def test_affine_invariant_known_value():
    # target [0, 1, 2, 3]: lower median 1, MAD (1+0+1+2)/4 = 1 -> [-1, 0, 1, 2]
    # pred   [0, 1, 3, 2]: same median and MAD           -> [-1, 0, 2, 1]; mean |diff| = 0.5
    target = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    pred = torch.tensor([[[0.0, 1.0, 3.0, 2.0]]])
    assert affine_invariant_loss(pred, target).item() == pytest.approx(0.5)


def test_trim_ignores_planted_outlier_region(target):
    full = torch.ones_like(target, dtype=torch.bool)
    pred = target.clone()
    # Plant an outlier region (5% of pixels) by permuting the values inside it: median and MAD
    # of the prediction are unchanged, so all error sits in the planted region.
    region = torch.zeros(H, W, dtype=torch.bool)
    region[:4, :6] = True                               # 24 / 480 = 5%
    vals = pred[:, region]
    pred[:, region] = vals.flip(-1)
    assert affine_invariant_loss(pred, target, full).item() > 0.01
    assert affine_invariant_loss(pred, target, full, trim=0.1).item() < 1e-6


def test_trim_removes_the_pixels_from_the_gradient_term_too(target):
    """V2 ignores a pseudo-label's largest-loss pixels for the whole loss: the gradient-matching term
    pairs only kept pixels, so a planted outlier region costs nothing in either term."""
    full = torch.ones_like(target, dtype=torch.bool)
    pred = target.clone()
    region = torch.zeros(H, W, dtype=torch.bool)
    region[:4, :6] = True
    pred[:, region] = pred[:, region].flip(-1)
    assert gradient_matching_loss(pred, target, full).item() > 0.01            # the region's edges, untrimmed
    assert depth_loss(pred, target, full, trim=0.1).item() < 1e-5                 # float noise only
    assert depth_loss(pred, target, full).item() > 0.01
    # the same as scoring the gradient term on the kept pixels by hand
    keep = ~region.expand(B, H, W)
    by_hand = gradient_matching_loss(pred, target, full, keep=keep) + affine_invariant_loss(pred, target, full, trim=0.1)
    assert depth_loss(pred, target, full, trim=0.1, gradient_weight=1.0).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_trim_per_sample_drops_largest_errors_exactly():
    target = torch.arange(10.0).view(1, 1, 10)
    pred = target.clone()
    pred[0, 0, 9], pred[0, 0, 8] = 8.0, 9.0             # swap: same normalisation, two errors
    untrimmed = affine_invariant_loss(pred, target).item()
    assert untrimmed > 0
    # 10 pixels, trim 0.1 keeps 9: one of the two equal errors remains -> half the error mass over 9 pixels
    assert affine_invariant_loss(pred, target, trim=0.1).item() == pytest.approx(untrimmed * 10 / 2 / 9)


@pytest.mark.parametrize("loss", RELATIVE + [lambda p, t, m: silog_loss(p, t, m)])
def test_values_under_the_mask_never_change_the_loss(loss, target, mask):
    pred = _rand(B, H, W, seed=3)
    base = loss(pred, target, mask)
    noise_p, noise_t = _rand(B, H, W, seed=4, hi=50.0), _rand(B, H, W, seed=5, hi=50.0)
    pred2 = torch.where(mask, pred, noise_p)
    target2 = torch.where(mask, target, noise_t)
    target2[~mask & (noise_t > 25)] = float("nan")
    torch.testing.assert_close(loss(pred2, target2, mask), base)


@pytest.mark.parametrize("loss", RELATIVE + [lambda p, t, m: silog_loss(p, t, m)])
def test_all_masked_is_zero_without_nan(loss, target):
    pred = _rand(B, H, W, seed=3).requires_grad_()
    out = loss(pred, target, torch.zeros_like(target, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() == 0


@pytest.mark.parametrize("loss", RELATIVE)
def test_all_masked_sample_contributes_zero(loss, target, mask):
    pred = _rand(B, H, W, seed=3)
    m = mask.clone()
    m[1] = False
    per = loss(pred, target, m, reduction="none")
    assert per[1].item() == 0.0 and torch.isfinite(per).all()
    # the batch mean is over the samples that have labels
    assert loss(pred, target, m).item() == pytest.approx((per[0] + per[2]).item() / 2, rel=1e-6)


def test_nan_labels_are_masked_out(target, mask):
    pred = _rand(B, H, W, seed=3)
    nan_target = torch.where(mask, target, torch.full_like(target, float("nan")))
    torch.testing.assert_close(depth_loss(pred, nan_target), depth_loss(pred, target, mask))


@pytest.mark.parametrize("loss", RELATIVE)
def test_gradients_flow_only_to_valid_pixels(loss, target, mask):
    pred = _rand(B, H, W, seed=3).requires_grad_()
    loss(pred, target, mask).backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[mask].abs().sum() > 0
    assert pred.grad[~mask].abs().sum() == 0


def test_depth_loss_weights_gradient_two_to_one(target, mask):
    pred = _rand(B, H, W, seed=3)
    expected = affine_invariant_loss(pred, target, mask) + 2 * gradient_matching_loss(pred, target, mask)
    torch.testing.assert_close(depth_loss(pred, target, mask), expected)


# ----------------------------------------------------------------------------- CutMix

def test_cutmix_weighting_equals_formula(target, mask):
    pred = _rand(B, H, W, seed=3)
    target_b = _rand(B, H, W, seed=9)
    box = torch.zeros(B, H, W, dtype=torch.bool)
    box[0, 2:10, 3:15] = True            # 96 / 480
    box[1] = True                         # all from a
    # sample 2: no box -> all from b
    per_a = affine_invariant_loss(pred, target, mask & box, reduction="none")
    per_b = affine_invariant_loss(pred, target_b, ~box, reduction="none")
    w = torch.tensor([96 / 480, 1.0, 0.0])
    expected = w * per_a + (1 - w) * per_b
    got = cutmix_loss(pred, target, target_b, box, mask, None, reduction="none")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(cutmix_loss(pred, target, target_b, box, mask, None), expected.mean())
    # each region against its own label: perfect on both regions -> 0
    mixed = torch.where(box, 5 * target + 1, 2 * target_b + 3)
    assert cutmix_loss(mixed, target, target_b, box, mask, None).item() < 1e-6


def test_cutmix_passes_loss_options():
    t = torch.arange(10.0).view(1, 1, 10)
    p = t.clone()
    p[0, 0, 9], p[0, 0, 8] = 8.0, 9.0
    box = torch.zeros(1, 1, 10, dtype=torch.bool)
    assert cutmix_loss(p, t, t, box, loss_fn=depth_loss, gradient_weight=0.0).item() > 0


# ----------------------------------------------------------------------------- features

def test_feature_loss_zero_for_identical_features():
    f = _rand(2, 37, 16, seed=1, lo=-1, hi=1)
    assert feature_alignment_loss(f, f.clone()).item() == 0.0


def test_feature_loss_ignores_already_aligned_positions():
    teacher = _rand(1, 8, 16, seed=1, lo=-1, hi=1)
    student = teacher.clone()
    student[0, :4] = -teacher[0, :4]                     # 4 positions opposite: cos = -1 -> 1 - cos = 2
    student[0, 4:] = teacher[0, 4:] + 0.01               # already aligned (cos > 0.85): excluded
    assert feature_alignment_loss(student, teacher).item() == pytest.approx(2.0, abs=1e-5)
    # with alpha = 1 every position counts
    all_cos = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
    assert feature_alignment_loss(student, teacher, alpha=1.0).item() == pytest.approx(1 - all_cos.mean().item(), abs=1e-6)


def test_feature_loss_channel_first_and_gradient():
    teacher = _rand(2, 16, 5, 5, seed=1, lo=-1, hi=1)
    student = _rand(2, 16, 5, 5, seed=2, lo=-1, hi=1).requires_grad_()
    loss = feature_alignment_loss(student, teacher, dim=1)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- ranking

def test_ranking_loss_known_value_and_sign():
    pred = torch.zeros(1, 4, 4)
    pred[0, 0, 0], pred[0, 3, 3] = 2.0, 0.0        # (0,0) has larger disparity -> closer
    right = torch.tensor([[0, 0, 3, 3, 1]])
    wrong = torch.tensor([[0, 0, 3, 3, 2]])
    assert ranking_loss(pred, right, normalize=False).item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert ranking_loss(pred, wrong, normalize=False).item() == pytest.approx(math.log1p(math.exp(2.0)))


def test_ranking_loss_ignores_padding_outside_and_masked_pairs():
    pred = _rand(2, 6, 6, seed=1)
    pairs = torch.tensor([[[0, 0, 5, 5, 1], [0, 0, 1, 1, 0], [9, 0, 1, 1, 1]],
                          [[2, 2, 3, 3, 2], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]]])
    mask = torch.ones(2, 6, 6, dtype=torch.bool)
    base = ranking_loss(pred, pairs, mask, normalize=False, reduction="none")
    only = ranking_loss(pred, pairs[:, :1], mask, normalize=False, reduction="none")
    torch.testing.assert_close(base, only)
    mask[1, 3, 3] = False                       # sample 1's only pair touches a masked pixel
    assert ranking_loss(pred, pairs, mask, normalize=False, reduction="none")[1].item() == 0.0
    pred = pred.requires_grad_()
    ranking_loss(pred, pairs, mask).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0].abs().sum() > 0


# ----------------------------------------------------------------------------- SiLog

def test_silog_known_values(target, mask):
    assert silog_loss(target, target, mask).item() == 0.0
    # a global scale error k: g = -log k everywhere -> sqrt(g² (1 - λ)) = |log k| sqrt(0.5)
    assert silog_loss(2 * target, target, mask).item() == pytest.approx(math.log(2) * math.sqrt(0.5), rel=1e-5)
    pred = (1.5 * target).requires_grad_()
    silog_loss(pred, target, mask).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[~mask].abs().sum() == 0


def test_gradient_loss_known_value_uses_only_pairs_of_valid_pixels():
    # target [0, 1, ., 3] -> median 1, MAD 1 -> [-1, 0, ., 2]
    # pred   [0, 2, ., 3] -> median 2, MAD 1 -> [-2, 0, ., 1];  R = [-1, 0, ., -1]
    # the only horizontal pair of valid pixels is (0, 1): |0 - (-1)| = 1, over 3 valid pixels
    target = torch.tensor([[[0.0, 1.0, 99.0, 3.0]]])
    pred = torch.tensor([[[0.0, 2.0, -7.0, 3.0]]])
    mask = torch.tensor([[[True, True, False, True]]])
    assert gradient_matching_loss(pred, target, mask, scales=1).item() == pytest.approx(1 / 3)
    # scale 2 (step 2) sees pixels 0 and 2 only; pixel 2 is masked -> no pair, adds 0
    assert gradient_matching_loss(pred, target, mask, scales=2).item() == pytest.approx(1 / 3)


def test_bf16_inputs_are_scored_in_float32(target, mask):
    pred = _rand(B, H, W, seed=3)
    low = pred.bfloat16()
    out = depth_loss(low, target, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, depth_loss(low.float(), target, mask))


def test_ranking_loss_normalised_is_scale_and_shift_invariant():
    pred = _rand(2, 6, 6, seed=1)
    pairs = torch.tensor([[0, 0, 5, 5, 1], [1, 2, 3, 4, 2], [2, 2, 0, 5, 1]])
    base = ranking_loss(pred, pairs)
    torch.testing.assert_close(ranking_loss(7.0 * pred + 3.0, pairs), base)
    assert not torch.allclose(ranking_loss(7.0 * pred + 3.0, pairs, normalize=False), ranking_loss(pred, pairs, normalize=False))


def test_silog_max_depth_masks_far_labels(target, mask):
    far = target.clone()
    far[:, :2] = 500.0
    pred = 1.5 * target
    keep = mask.clone()
    keep[:, :2] = False
    torch.testing.assert_close(silog_loss(pred, far, mask, max_depth=100.0), silog_loss(pred, target, keep))


@pytest.mark.parametrize("loss", RELATIVE)
def test_nan_or_inf_predictions_under_the_mask_are_harmless(loss, target, mask):
    pred = _rand(B, H, W, seed=3)
    bad = pred.clone()
    bad[~mask] = float("nan")
    bad[~mask & (target > 1.0)] = float("inf")
    bad.requires_grad_()
    out = loss(bad, target, mask)
    torch.testing.assert_close(out, loss(pred, target, mask))
    out.backward()
    assert torch.isfinite(bad.grad).all()
