"""pipeline/geometry/picture_marks.py: the image maths moved out of studio/ (measure points, selection sizes)."""
from __future__ import annotations

import numpy as np

from pipeline.geometry.picture_marks import draw_points, mask_area
from studio.curate_text import reference_rows, selection_markdown


def test_mask_area_counts_the_selected_pixels():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:7] = True
    assert mask_area(mask) == (12, 200) and mask_area(None) == (0, 0) and mask_area(mask * 0) == (0, 200)
    assert selection_markdown(mask) == "Selected: **12 px** (6.0% of the image)"
    assert selection_markdown(None).startswith("Nothing selected") and selection_markdown(mask & False).startswith(
        "Nothing selected")
    assert reference_rows([{"type": "right_angle", "region": mask, "region_b": None}])[0][2] == \
        "12 px and select the second plane, add again"


def test_draw_points_marks_a_and_b_and_joins_them_without_touching_the_input():
    rgb = np.zeros((90, 120, 3), np.uint8)
    one = draw_points(rgb, [(20, 30)])
    two = draw_points(rgb, [(20, 30), (100, 60)])
    assert not rgb.any()                                           # the input is not drawn on
    assert one.shape == rgb.shape and one.dtype == np.uint8
    assert (one[30, 20] == 255).all() and (two[60, 100] == 255).all()     # (x, y): row y, column x
    assert not one[60, 100].any()                                  # no B with one point
    mid = two[45, 60]                                              # on the line between them
    assert (mid == 255).all() and not one[45, 60].any()
    assert not two[85, 5].any()                                    # far from both: untouched
