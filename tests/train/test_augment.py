"""Augmentations: geometry stays aligned across image/label/mask/pairs; seeded determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.train import augment as A


def _coord_sample(h=30, w=45, n_pairs=6, seed=0):
    """An image and a label that are functions of the pixel coordinates, so alignment is checkable."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rgb = np.stack([yy * 255 // (h - 1), xx * 255 // (w - 1), np.full_like(yy, 128)], -1).astype(np.uint8)
    label = (yy * 1000 + xx).astype(np.float32)        # encodes the source pixel exactly
    mask = (xx % 3) != 0
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, h, n_pairs), rng.integers(0, w, n_pairs),
                      rng.integers(0, h, n_pairs), rng.integers(0, w, n_pairs), rng.integers(1, 3, n_pairs)], 1)
    return A.from_numpy(rgb, label, mask, pairs)


def _src(label):
    """(row, col) of the source pixel each label value came from."""
    return torch.div(label, 1000, rounding_mode="floor").long(), (label % 1000).long()


def test_crop_keeps_image_label_mask_and_pairs_aligned():
    s = _coord_sample()
    c = A.random_crop(s, 20, A.make_generator(3))
    rows, cols = _src(c.label)
    # label, mask and image all come from the same source pixels
    assert (c.mask == ((cols % 3) != 0)).all()
    torch.testing.assert_close(c.image, s.image[:, rows, cols])
    # the crop is a contiguous window
    assert (rows == rows[:, :1]).all() and (cols == cols[:1, :]).all()
    assert (rows[1:, 0] - rows[:-1, 0] == 1).all() and (cols[0, 1:] - cols[0, :-1] == 1).all()
    # pairs still point at the same source pixels, or are switched off when they left the crop
    assert 0 < int((c.pairs[:, 4] > 0).sum()) < len(c.pairs)      # this seed keeps some and drops some
    for before, after in zip(s.pairs, c.pairs, strict=True):
        if after[4] == 0:
            assert not all(0 <= v < 20 for v in after[:4].tolist())
            continue
        assert after[4] == before[4]
        for (hh, ww), (h0, w0) in (((after[0], after[1]), (before[0], before[1])), ((after[2], after[3]), (before[2], before[3]))):
            assert c.label[hh, ww] == s.label[h0, w0]


def test_resize_short_side_nearest_label_and_pairs():
    s = _coord_sample(h=30, w=45)
    r = A.resize_short_side(s, 20)
    assert r.size == (20, 30)
    rows, cols = _src(r.label)
    # nearest: every label value is an original value (no blending), and it maps back to where it came from
    assert torch.isin(r.label, s.label.flatten()).all()
    assert (rows == torch.floor((torch.arange(20) + 0.5) * 30 / 20).long()[:, None]).all()
    assert (r.mask == ((cols % 3) != 0)).all()
    # a pair lands on the pixel whose source is at most half a source pixel-step away
    for before, after in zip(s.pairs, r.pairs, strict=True):
        sr, sc = _src(r.label[after[0], after[1]].view(1))
        assert abs(int(sr) - int(before[0])) <= 1 and abs(int(sc) - int(before[1])) <= 1
    assert r.image.min() >= 0 and r.image.max() <= 1


def test_resize_keeps_nan_labels_from_spreading():
    s = _coord_sample(h=30, w=45)
    s.label[10:20, 10:20] = float("nan")
    r = A.resize_short_side(s, 60)
    # nearest upsampling by 2: the NaN area exactly doubles, no blended halo
    assert int(torch.isnan(r.label).sum()) == 100 * 4


def test_hflip_involution_and_pairs_follow():
    s = _coord_sample()
    f = A.hflip(s)
    ff = A.hflip(f)
    for a, b in ((s.image, ff.image), (s.label, ff.label), (s.mask, ff.mask), (s.pairs, ff.pairs)):
        assert torch.equal(a, b)
    assert not torch.equal(f.label, s.label)
    w = s.size[1]
    assert torch.equal(f.label[:, 0], s.label[:, w - 1])
    for before, after in zip(s.pairs, f.pairs, strict=True):
        assert f.label[after[0], after[1]] == s.label[before[0], before[1]]
        assert f.label[after[2], after[3]] == s.label[before[2], before[3]]
        assert after[4] == before[4]


def test_cutmix_box_area_shape_and_probability():
    cfg = A.StrongPerturbation()
    areas, empty = [], 0
    for i in range(200):
        box = A.cutmix_box(64, 48, A.make_generator(11, i), cfg)
        if not box.any():
            empty += 1
            continue
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        bh, bw = len(rows), len(cols)
        assert int(box.sum()) == bh * bw                        # a filled rectangle
        assert rows.max() - rows.min() + 1 == bh and cols.max() - cols.min() + 1 == bw
        areas.append(bh * bw / (64 * 48))
    assert 70 <= empty <= 130                                    # p = 0.5
    assert min(areas) > 0.005 and max(areas) <= 0.4 + 1e-9
    assert A.cutmix_box(10, 10, A.make_generator(0), p=0.0).sum() == 0
    assert A.cutmix_box(10, 10, A.make_generator(0), p=1.0).sum() > 0


def test_mix_follows_the_box():
    a, b = torch.ones(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    box = torch.zeros(2, 8, 8, dtype=torch.bool)
    box[0, 2:5, 1:7] = True
    u = A.mix(a, b, box)
    assert u.sum() == 3 * 18 and torch.equal(u[0, 0].bool(), box[0])
    assert torch.equal(A.mix(a[:, 0], b[:, 0], box), box.float())    # labels: (B, H, W)


def test_seeded_determinism_and_seed_sensitivity():
    s = _coord_sample(h=40, w=50)
    run = lambda *seed: A.unlabelled_views(s, A.make_generator(*seed), size=28)  # noqa: E731
    (c1, p1), (c2, p2), (c3, p3) = run(5, 1), run(5, 1), run(5, 2)
    assert torch.equal(c1.image, c2.image) and torch.equal(c1.label, c2.label) and torch.equal(p1, p2)
    assert torch.equal(c1.pairs, c2.pairs)
    assert not (torch.equal(c1.label, c3.label) and torch.equal(p1, p3))


def _image_at_label_positions(ref: A.Sample, view: A.Sample) -> torch.Tensor:
    """ref's image gathered at the pixels whose (unique) label values the view carries."""
    idx = torch.nonzero(ref.label.flatten()[None, :] == view.label.flatten()[:, None])[:, 1]
    assert idx.numel() == view.label.numel()
    return ref.image.flatten(1)[:, idx].view(view.image.shape)


def test_strong_perturbation_changes_only_the_image():
    s = _coord_sample(h=40, w=50)
    ref = A.resize_short_side(s, 28)
    changed = 0
    for i in range(8):
        clean, strong = A.unlabelled_views(s, A.make_generator(7, i), size=28)
        # the teacher's clean view is the resized image, untouched, at the crop/flip positions
        torch.testing.assert_close(clean.image, _image_at_label_positions(ref, clean))
        # labels are never colour-jittered or blurred: every value is an original coordinate code
        assert torch.isin(clean.label, s.label.flatten()).all()
        assert strong.shape == clean.image.shape and strong.min() >= 0 and strong.max() <= 1
        changed += int(not torch.allclose(strong, clean.image, atol=1e-3))
    assert changed >= 6                                           # 1 - 0.2·0.8·0.5 ≈ 92% of draws perturb


def test_gaussian_blur_sigma_matches_variance():
    img = torch.zeros(3, 41, 41)
    img[:, 20, 20] = 1.0
    out = A.gaussian_blur(img, 1.5)[0]
    yy = torch.arange(41.0)[:, None] - 20
    var = float((out * yy ** 2).sum() / out.sum())
    assert var == pytest.approx(1.5 ** 2, rel=0.02)


def test_color_jitter_matches_torchvision_given_the_same_factors():
    import torchvision.transforms.v2.functional as TF
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    g = A.make_generator(1)
    out = A.color_jitter(img, g)
    g = A.make_generator(1)
    order = torch.randperm(4, generator=g).tolist()
    f = [0.5 + float(torch.rand(1, generator=g)) for _ in range(3)] + [-0.25 + 0.5 * float(torch.rand(1, generator=g))]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    ref = img
    for i in order:
        ref = ops[i](ref, f[i])
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, img)


def test_labelled_view_is_geometry_only():
    s = _coord_sample(h=40, w=50)
    ref = A.resize_short_side(s, 28)
    flipped = 0
    for i in range(6):
        v = A.labelled_view(s, A.make_generator(2, i), size=28)
        torch.testing.assert_close(v.image, _image_at_label_positions(ref, v))
        flipped += int(v.label[0, 0] > v.label[0, -1])
    assert 0 < flipped < 6                                        # flips happen, not always


def test_to_network_input_uses_imagenet_normalisation():
    x = torch.full((2, 3, 4, 4), 0.5)
    out = A.to_network_input(x)
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor((0.5 - 0.485) / 0.229))
    assert A.to_network_input(x[0]).shape == (3, 4, 4)


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="resize it first"):
        A.random_crop(_coord_sample(h=10, w=12), 20, A.make_generator(0))
