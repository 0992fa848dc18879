"""Assisted selection on a synthetic room (sky, a wall facing the camera, a floor meeting it at a crease)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.labels import selection as S

H, W = 60, 80


def room() -> np.ndarray:
    """Disparity (H, W): sky rows 0-19 (0), wall rows 20-39 (0.5), floor rows 40-59 rising 0.05 per row
    from the crease, with a box (2.0, nearer than any floor) standing on the floor at rows 44-51, columns 10-24."""
    d = np.zeros((H, W), np.float32)
    d[20:40] = 0.5
    rows = np.arange(40, 60, dtype=np.float32)
    d[40:] = (0.5 + (rows - 39) * 0.05)[:, None]
    d[44:52, 10:25] = 2.0
    return d


def test_the_depth_wand_takes_the_sky_in_one_click_and_nothing_else():
    sky = S.wand_depth(room(), "disparity", [5, 40], tolerance=0.05)
    assert sky[:20].all() and not sky[20:].any()
    box = S.wand_depth(room(), "disparity", [47, 15], tolerance=0.05)
    assert box.sum() == 8 * 15 and box[44:52, 10:25].all()


def test_the_plane_wand_takes_the_slanted_floor_up_to_the_crease():
    d = room()
    floor = S.wand_plane(d, "disparity", [55, 60], tolerance=0.02)
    expected = np.zeros((H, W), bool)
    expected[40:] = True
    expected[44:52, 10:25] = False                              # the box is not on the floor's plane
    assert np.array_equal(floor[40:], expected[40:]) and not floor[:39].any()
    depth_wand = S.wand_depth(d, "disparity", [55, 60], tolerance=0.02)
    assert depth_wand.sum() < 0.3 * expected.sum()              # a flat band: why the plane mode exists


def test_metric_labels_select_the_same_regions():
    d = room()
    metres = np.where(d > 0, 1.0 / np.maximum(d, 1e-6), 1000.0).astype(np.float32)   # sky far away
    assert np.array_equal(S.wand_depth(metres, "metric_depth", [5, 40], 0.05)[:20], np.ones((20, W), bool))
    floor = S.wand_plane(metres, "metric_depth", [55, 60], tolerance=0.02)
    assert floor[40:, 30:].all() and not floor[:39].any()


def test_selections_combine_and_refuse_bad_seeds():
    a, b = np.zeros((H, W), bool), np.zeros((H, W), bool)
    a[:10], b[5:15] = True, True
    assert S.combine(a, b, "add").sum() == 15 * W and S.combine(a, b, "subtract").sum() == 5 * W
    assert np.array_equal(S.combine(a, b, "replace"), b) and np.array_equal(S.combine(None, b), b)
    with pytest.raises(S.SelectionError, match=r"\[h=60, w=0\] is outside the 80x60 image"):
        S.wand_depth(room(), "disparity", [60, 0])
    nan = room()
    nan[0, 0] = np.nan
    with pytest.raises(S.SelectionError, match="no value at"):
        S.wand_depth(nan, "disparity", [0, 0])
    with pytest.raises(S.SelectionError, match="tolerance"):
        S.wand_plane(room(), "disparity", [50, 50], tolerance=0)
    with pytest.raises(S.SelectionError, match="unknown selection operation"):
        S.combine(a, b, "xor")


def two_tone() -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :W // 2] = (200, 40, 40)
    rgb[:, W // 2:] = (40, 40, 200)
    return rgb


@pytest.mark.parametrize("method", S.SUPERPIXEL_METHODS)
def test_superpixels_never_cross_a_colour_edge_and_snap_a_rough_selection(method):
    sp = S.superpixels(two_tone(), method, detail=40)
    assert sp.segments.shape == (H, W) and sp.segments.min() == 0 and sp.count == len(np.unique(sp.segments))
    left = np.zeros((H, W), bool)
    left[:, :W // 2] = True
    for seg in range(sp.count):                                 # every segment on one side of the edge
        inside = sp.segments == seg
        assert not (inside & left).any() or not (inside & ~left).any()
    assert not (sp.segment_at([30, 10]) & ~left).any()
    rough = left.copy()
    rough[:, W // 2 - 3:W // 2] = False                         # a selection that stops short of the edge
    rough[:, W // 2:W // 2 + 2] = True                          # and spills over it elsewhere
    snapped = sp.snap(rough)
    assert (snapped & ~left).sum() <= 0.05 * H * W and (snapped & left).sum() >= 0.9 * left.sum()


def test_superpixels_refuse_what_they_cannot_segment():
    with pytest.raises(S.SelectionError, match="detail runs from 10 to 5000"):
        S.superpixels(two_tone(), "slic", 3)
    with pytest.raises(S.SelectionError, match="unknown superpixel method"):
        S.superpixels(two_tone(), "watershed")
    with pytest.raises(S.SelectionError, match=r"\(H, W, 3\) colour image"):
        S.superpixels(np.zeros((H, W), np.uint8))


def test_painted_layers_become_the_images_mask_at_any_canvas_size():
    layer = np.zeros((H, W, 4), np.uint8)
    layer[2:6, 3:8] = (255, 0, 255, 150)
    mask = S.region_from_layers([layer, None], (H, W))
    assert mask.sum() == 20 and mask[2:6, 3:8].all()
    big = np.zeros((2 * H, 2 * W, 4), np.uint8)
    big[4:12, 6:16] = (255, 0, 255, 150)
    assert np.array_equal(S.region_from_layers([big], (H, W)), mask)   # a canvas at twice the size maps back
    assert not S.region_from_layers(None, (H, W)).any()
