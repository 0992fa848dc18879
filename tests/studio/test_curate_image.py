"""The curate tab's handlers for the selected image, without a browser: views, the selection (wand clicks,
brush strokes), tools, decisions, undo with its status and feedback, point pairs, calibration."""
from __future__ import annotations

import io

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from synthetic_geometry import room

from pipeline.services.curation_service import CurationService
from pipeline.store import Store
from studio.curate_image import SELECT_FIELDS, VIEW_FIELDS
from studio.curate_tab import CurateHandlers

H, W = 96, 128
VIEW = {name: i for i, name in enumerate(VIEW_FIELDS)}
SEL = {name: i for i, name in enumerate(SELECT_FIELDS)}
S0, T0 = 2.0, 0.1


def png(seed: int, h=H, w=W) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def scene():
    return room(H, W)


@pytest.fixture
def curation(tmp_path, settings, scene):
    """Image 1: the room's disparity; images 2, 3: a plain ramp (for next / previous)."""
    store = Store(tmp_path / "c.db")
    label = ((1.0 / scene.depth - T0) / S0).astype(np.float32)
    for seed, conf, depth in ((0, 0.3, label), (1, 0.5, label + 1), (2, 0.9, label + 2)):
        rec, _ = store.add_image(png(seed), f"img{seed}.png", width=W, height=H)
        store.add_prediction(rec.id, "teacher", "disparity", depth, confidence=conf)
    return CurationService(store, settings, import_root=tmp_path / "root")


@pytest.fixture
def h(curation):
    return CurateHandlers(curation).image


K = 800 // W                         # the view enlarges a small image by a whole factor


def click(h, w):
    """A click on the view at the image's pixel [h, w] (the event carries the view's (x, y))."""
    return gr.SelectData(None, {"index": [K * w + K // 2, K * h + K // 2], "value": None})


def test_show_gives_every_view_of_the_head(h, curation):
    out = h.show(1)
    head = curation.store.head(1)
    assert out[VIEW["sel"]] == {"image_id": 1, "head_id": head.id, "opacity": 0.5, "scale": float(K)}
    header = out[VIEW["header"]]
    assert "#1 img0.png" in header and "**pending**" in header and "pseudo\\_label by model:teacher" in header
    assert "revision 1 of 1" in header and "at the first revision: nothing to undo" in header
    assert out[VIEW["undo"]]["interactive"] is False and out[VIEW["redo"]]["interactive"] is False
    view = out[VIEW["view"]]
    assert view.shape == (K * H, K * W, 3) and out[VIEW["editor"]]["background"].shape == (K * H, K * W, 3)
    assert out[VIEW["cloud"]].endswith(".ply") and out[VIEW["selection"]] is None
    (row,) = out[VIEW["history"]]["value"]
    assert row[:2] == [1, "pseudo_label"] and row[5] == "◀ head"
    assert len(h.blank()) == len(VIEW_FIELDS)


def test_a_wand_click_selects_the_wall_and_sky_applies_to_it(h, curation, scene):
    sel = h.show(1)[VIEW["sel"]]
    at = np.argwhere(scene.wall)[len(np.argwhere(scene.wall)) // 2]          # [h, w] on the back wall
    out = h.click(sel, "wand_plane", "add", 0.02, "slic", 300, None, [], None, click(int(at[0]), int(at[1])))
    selection = out[SEL["selection"]]
    assert (selection & scene.wall).sum() >= 0.95 * scene.wall.sum() and "Selected: **" in out[SEL["selection_info"]]
    assert not np.array_equal(out[SEL["view"]], h.show(1)[VIEW["view"]])     # the selection is drawn
    done = h.apply_tool(sel, "sky", None, 2.0, None, "add", selection)
    head = curation.store.head(1)
    assert head.tool == "sky" and done[VIEW["sel"]]["head_id"] == head.id and done[VIEW["selection"]] is None
    assert np.all(curation.store.load_label(head).depth[selection] == 0)
    assert "revision 2 of 2" in done[VIEW["header"]] and done[VIEW["undo"]]["interactive"] is True


def test_brush_strokes_join_or_leave_the_selection(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    layer = np.zeros((H, W, 4), np.uint8)
    layer[10:20, 10:30] = (255, 0, 255, 150)
    out = h.absorb_strokes(sel, "add", None, [], {"layers": [layer]})
    assert out[SEL["selection"]].sum() == 200 and out[SEL["editor"]]["layers"] == []
    eraser = np.zeros((H, W, 4), np.uint8)
    eraser[10:20, 10:20, 3] = 255
    out = h.absorb_strokes(sel, "subtract", out[SEL["selection"]], [], {"layers": [eraser]})
    assert out[SEL["selection"]].sum() == 100
    assert h.clear_selection(sel, [])[SEL["selection"]] is None
    painted_only = h.apply_tool(sel, "ignore_mask", {"layers": [layer]}, 2.0, None, "add", None)
    assert curation.store.load_label(curation.store.head(1)).masks["ignore"].sum() == 200
    assert painted_only[VIEW["selection"]] is None
    with pytest.raises(gr.Error, match="the selection is empty"):
        h.apply_tool(painted_only[VIEW["sel"]], "sky", None, 2.0, None, "add", None)


def test_undo_of_the_only_correction_gives_back_pending_and_says_when_there_is_nothing(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    mask = np.zeros((H, W), bool)
    mask[:5] = True
    sel = h.apply_tool(sel, "sky", None, 2.0, None, "add", mask)[VIEW["sel"]]
    assert curation.store.get_image(1).status == "corrected"
    back = h.undo(sel)
    assert curation.store.get_image(1).status == "pending" and "**pending**" in back[VIEW["header"]]
    assert "revision 1 of 2" in back[VIEW["header"]] and back[VIEW["redo"]]["interactive"] is True
    with pytest.raises(gr.Error, match="nothing to undo .*it is at its first revision"):
        h.undo(back[VIEW["sel"]])
    again = h.redo(back[VIEW["sel"]])
    assert "**corrected**" in again[VIEW["header"]] and "revision 2 of 2" in again[VIEW["header"]]


def test_a_concurrent_edit_is_refused_and_the_page_reloads(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    curation.apply_tool(1, "smooth", np.ones((H, W), bool), expected_head=sel["head_id"], author="bob")
    with pytest.raises(gr.Error) as e:
        h.apply_tool(sel, "sky", None, 2.0, None, "add", np.ones((H, W), bool))
    assert "changed since you opened it (revision 1): it is now revision 2 by bob" in e.value.message
    assert [r.tool for r in curation.store.history(1).revisions] == ["pseudo_label", "smooth"]
    assert h.reload(sel)[VIEW["sel"]]["head_id"] == curation.store.head(1).id
    with pytest.raises(gr.Error, match="changed since you opened it"):
        h.set_status(sel, [1], "accepted")


def test_accept_reject_move_to_the_next_image_and_opacity_redraws(h, curation):
    out = h.set_status(h.show(1)[VIEW["sel"]], [1, 2, 3], "accepted")
    assert curation.store.get_image(1).status == "accepted" and out[VIEW["sel"]]["image_id"] == 2
    out = h.set_status(out[VIEW["sel"]], [1, 2, 3], "rejected")
    assert curation.store.get_image(2).status == "rejected" and out[VIEW["sel"]]["image_id"] == 3
    assert h.step(out[VIEW["sel"]], [1, 2, 3], -1)[VIEW["sel"]]["image_id"] == 2
    image, _, sel = h.set_opacity(out[VIEW["sel"]], 0.0, None, [])
    assert sel["opacity"] == 0.0 and np.array_equal(image[::K, ::K], curation.image_rgb(3))


def test_point_pairs_from_two_clicks_in_h_w(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    out = h.click(sel, "points", "add", 0.05, "slic", 300, None, [], None, click(80, 100))
    assert out[SEL["clicks"]] == [[80, 100]]                                                  # [h, w]
    out = h.click(sel, "points", "add", 0.05, "slic", 300, None, out[SEL["clicks"]], None, click(2, 3))
    assert out[SEL["clicks"]] == [[80, 100], [2, 3]]
    done = h.add_pair(sel, out[SEL["clicks"]], "B")
    (pair,) = curation.store.point_pairs(1)
    assert (pair.point1, pair.point2, pair.closer) == ((80, 100), (2, 3), 2)
    assert done[VIEW["pairs"]]["value"] == [[pair.id, "[80, 100]", "[2, 3]", "point 2", "no (flagged)"]]
    assert "1 flagged" in done[VIEW["pair_info"]] and done[VIEW["clicks"]] == []
    with pytest.raises(gr.Error, match="click two points"):
        h.add_pair(sel, [[1, 1]], "A")
    assert h.delete_pair(done[VIEW["sel"]], pair.id)[VIEW["pairs"]]["value"] == []


def test_calibration_from_a_distance_and_a_right_angle_makes_a_metric_revision(h, curation, scene):
    sel = h.show(1)[VIEW["sel"]]
    box, floor = (55, 60), (90, 20)                                        # [h, w]
    metres = float(np.linalg.norm(scene.points[box] - scene.points[floor]))
    refs = h.add_reference(sel, "distance", metres, [list(box), list(floor)], None, [])[0]
    refs = h.add_reference(sel, "right_angle", None, [], scene.floor, refs)[0]
    with pytest.raises(gr.Error, match="needs its second plane"):
        h.calibrate(sel, refs, scene.focal, False)
    refs, table = h.add_reference(sel, "right_angle", None, [], scene.wall, refs)[:2]
    assert [r[1] for r in table] == ["distance", "right angle"] and len(refs) == 2
    out = h.calibrate(sel, refs, scene.focal, False)
    head = curation.store.head(1)
    assert (head.tool, head.kind, head.source) == ("calibrate", "metric_depth", "human")
    assert np.nanmax(np.abs(curation.store.load_label(head).depth / scene.depth - 1)) < 0.02
    assert out[-1].startswith("**Calibrated:** revision 2 is metric depth") and "metres" in out[VIEW["header"]]
    assert out[VIEW["refs"]] == []


def test_an_underdetermined_calibration_is_refused_saying_what_else_is_needed(h, curation, scene):
    sel = h.show(1)[VIEW["sel"]]
    refs = h.add_reference(sel, "distance", 3.0, [[55, 60], [90, 20]], None, [])[0]
    with pytest.raises(gr.Error, match="one reference gives one equation.*add a second reference"):
        h.calibrate(sel, refs, scene.focal, False)
    assert len(curation.store.history(1).revisions) == 1
    with pytest.raises(gr.Error, match="select the region first"):
        h.add_reference(sel, "camera_height", 1.5, [], None, refs)
    with pytest.raises(gr.Error, match="click the two points"):
        h.add_reference(sel, "distance", 3.0, [[1, 1]], None, refs)


def test_tags_typed_for_the_image(h, curation):
    sel = h.show(2)[VIEW["sel"]]
    assert h.set_tags(sel, "night, glass") == "glass, night"
    assert h.set_tags(sel, "glass") == "glass" and curation.store.tags_of(2) == ["glass"]
    assert "tags: glass" in h.show(2)[VIEW["header"]]
