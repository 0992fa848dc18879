"""CurationService: selection (wand, superpixels, SAM offline), the editor's picture, batch decisions and
filters, the status after undo, export of nothing, and calibration to metres as a metric revision."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from synthetic_geometry import room

from pipeline.geometry.calibration import CalibrationError
from pipeline.intake.dataset_export import NothingToExport
from pipeline.services.curation_service import SELECT_MODES, CurationError, CurationService
from pipeline.store import StaleRevisionError, Store

H, W = 96, 128
S0, T0 = 2.0, 0.1                                  # the label's unknown truth: 1/Z = S0 * label + T0


def png(seed: int, h: int = H, w: int = W) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def scene():
    return room(H, W)


@pytest.fixture
def service(tmp_path, settings):
    return CurationService(Store(tmp_path / "c.db"), settings, import_root=tmp_path / "root")


@pytest.fixture
def roomed(service, scene):
    """An image whose pseudo-label is the room's disparity with an unknown scale and shift."""
    rec, _ = service.store.add_image(png(0), "room.png", width=W, height=H)
    label = ((1.0 / scene.depth - T0) / S0).astype(np.float32)
    service.store.add_prediction(rec.id, "teacher", "disparity", label, confidence=0.4)
    return service.store.get_image(rec.id)


def hw(xy) -> list[int]:
    return [xy[1], xy[0]]


BOX, FLOOR = (60, 55), (20, 90)                    # (x, y) pixels on the box face and the floor


def tape(scene, a, b) -> float:
    return float(np.linalg.norm(scene.points[a[1], a[0]] - scene.points[b[1], b[0]]))


# ---------------------------------------------------------------------------- calibration
def test_a_known_distance_and_a_right_angle_make_a_metric_revision_within_2_percent(service, roomed, scene):
    head = service.store.head(roomed.id)
    refs = [{"type": "distance", "a": hw(BOX), "b": hw(FLOOR), "metres": tape(scene, BOX, FLOOR)},
            {"type": "right_angle", "region": scene.floor, "region_b": scene.wall}]
    done = service.calibrate(roomed.id, refs, expected_head=head.id, focal_px=scene.focal, author="ann")
    rev = done.revision
    assert (rev.tool, rev.kind, rev.source, rev.parent_id, rev.author) == ("calibrate", "metric_depth", "human",
                                                                           head.id, "ann")
    depth = service.store.load_label(rev).depth
    assert np.nanmax(np.abs(depth / scene.depth - 1)) < 0.02
    assert service.store.get_image(roomed.id).status == "corrected"
    assert rev.meta["calibration"]["focal_source"] == "given" and rev.meta["from_revision"] == 1
    assert rev.meta["references"][1] == {"type": "right_angle", "region": {"pixels": int(scene.floor.sum())},
                                         "region_b": {"pixels": int(scene.wall.sum())}}
    assert "calibrated to metres from 2 reference(s): depth = 1 / (" in rev.note
    (item,) = service.store.training_items()                          # what metric training reads
    assert (item.kind, item.revision_id, item.source) == ("metric_depth", rev.id, "human")
    assert np.array_equal(item.depth(), depth)
    assert service.store.evidence(roomed.id).human is None            # the model's shape: never its own test


def test_underdetermined_or_stale_calibrations_save_nothing_and_say_why(service, roomed, scene):
    head = service.store.head(roomed.id)
    one = [{"type": "distance", "a": hw(BOX), "b": hw(FLOOR), "metres": tape(scene, BOX, FLOOR)}]
    with pytest.raises(CalibrationError, match="one reference gives one equation.*add a second reference"):
        service.calibrate(roomed.id, one, expected_head=head.id, focal_px=scene.focal)
    with pytest.raises(CurationError, match="add a reference first"):
        service.calibrate(roomed.id, [], expected_head=head.id)
    with pytest.raises(CurationError, match=r"reference 1 point \[h=96, w=0\] is outside"):
        service.calibrate(roomed.id, [{"type": "depth", "point": [96, 0], "metres": 2}], expected_head=head.id)
    with pytest.raises(CurationError, match="unknown type 'area'"):
        service.calibrate(roomed.id, [{"type": "area"}], expected_head=head.id)
    audit = len(service.store.audit_log(limit=1000))
    with pytest.raises(StaleRevisionError, match="changed since you opened it"):
        service.calibrate(roomed.id, one, expected_head=None, assume_zero_shift=True)
    assert len(service.store.audit_log(limit=1000)) == audit          # the stale check wrote nothing
    assert len(service.store.history(roomed.id).revisions) == 1


def test_a_box_region_and_zero_shift_calibrate_too(service, roomed, scene):
    """Boxes stand in for painted regions (what an API client can send); zero shift needs one length."""
    label = ((1.0 / scene.depth) / S0).astype(np.float32)
    head = service.store.save_revision(roomed.id, label, expected_head=service.store.head(roomed.id).id,
                                       tool="import", author="t")
    wall = np.argwhere(scene.wall)
    t, left = wall.min(0)
    box = [int(t), int(left), int(t) + 3, int(left) + 3]
    given = float(np.median(scene.depth[box[0]:box[2] + 1, box[1]:box[3] + 1]))
    done = service.calibrate(roomed.id, [{"type": "depth", "region": box, "metres": given}], expected_head=head.id,
                             focal_px=scene.focal, assume_zero_shift=True)
    assert np.nanmax(np.abs(service.store.load_label(done.revision).depth / scene.depth - 1)) < 1e-3
    assert done.revision.meta["references"][0]["region"] == box


# ---------------------------------------------------------------------------- selection
def test_the_wand_selects_the_back_wall_and_the_tool_applies_to_it(service, roomed, scene):
    head = service.store.head(roomed.id)
    at = np.argwhere(scene.wall)[len(np.argwhere(scene.wall)) // 2]
    sel = service.select(roomed.id, at, mode="wand_plane", tolerance=0.02)
    assert (sel & scene.wall).sum() >= 0.95 * scene.wall.sum() and (sel & ~scene.wall).sum() <= 0.02 * sel.sum()
    less = service.select(roomed.id, at, mode="wand_depth", operation="subtract", current=sel, tolerance=0.5)
    assert not (less & scene.wall)[tuple(at)]
    rev = service.apply_tool(roomed.id, "ignore_mask", sel, expected_head=head.id)
    assert np.array_equal(service.store.load_label(rev).masks["ignore"], sel)
    snapped = service.snap_selection(roomed.id, sel, method="felzenszwalb", detail=200)
    assert snapped.shape == (H, W) and snapped.any()
    y, x = np.mgrid[0:H, 0:W]
    buf = io.BytesIO()
    Image.fromarray(np.stack([x * 2, y * 2, x + y], -1).astype(np.uint8)).save(buf, "PNG")
    smooth = service.store.add_image(buf.getvalue(), "gradient.png", width=W, height=H)[0]
    sp = service.select(smooth.id, [5, 5], mode="superpixel", method="slic", detail=100)   # no label needed
    assert sp[5, 5] and 0 < sp.sum() < 0.05 * H * W
    with pytest.raises(CurationError, match="no label yet: the magic wand follows the label"):
        service.select(smooth.id, [5, 5], mode="wand_depth")


def test_selection_modes_say_sam_is_unavailable_offline_and_refuse_it(service, roomed, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    modes = {m: (ok, why) for m, _, ok, why in service.selection_modes()}
    assert set(modes) == set(SELECT_MODES) and modes["wand_depth"] == (True, "")
    ok, why = modes["sam"]
    assert not ok and ("not on this machine" in why or "transformers" in why)
    with pytest.raises(Exception, match="not on this machine|transformers"):
        service.select(roomed.id, [5, 5], mode="sam")
    with pytest.raises(CurationError, match="unknown selection mode"):
        service.select(roomed.id, [5, 5], mode="lasso")


def test_painted_layers_add_to_the_selection_and_erase_from_it(service, roomed):
    layer = np.zeros((2 * H, 2 * W, 4), np.uint8)                     # a canvas at display size x2
    layer[0:20, 0:40] = (255, 0, 255, 150)
    eraser = np.zeros((H, W, 4), np.uint8)
    eraser[0:5, 0:5, 3] = 255
    current = np.zeros((H, W), bool)
    current[50:60, 50:60] = True
    out = service.selection_of(roomed.id, selection=current, layers=[layer], erase_layers=[eraser])
    assert out.sum() == 100 + 10 * 20 - 25 and out[55, 55] and not out[0, 0] and out[9, 19]


def test_the_editor_picture_blends_the_label_and_tints_the_selection(service, roomed):
    view = service.view(roomed.id, opacity=0.0, pairs=False)
    k = int(view.scale)                                   # a small image is enlarged by a whole factor
    assert k == 800 // W and view.picture.shape == (k * H, k * W, 3)
    assert np.array_equal(view.picture[::k, ::k], service.image_rgb(roomed.id))
    label = service.view(roomed.id, opacity=1.0, pairs=False).picture[::k, ::k]
    assert np.array_equal(label, service.label_rgb(service.store.head(roomed.id).id))
    sel = np.zeros((H, W), bool)
    sel[10:30, 10:30] = True
    tinted = service.view(roomed.id, opacity=1.0, selection=sel, pairs=False).picture[::k, ::k]
    assert np.array_equal(tinted[~sel], label[~sel]) and not np.array_equal(tinted[sel], label[sel])
    service.add_point_pair(roomed.id, [5, 5], [90, 120], 2)
    assert not np.array_equal(service.view(roomed.id, opacity=1.0).picture[::k, ::k], label)     # the pair is drawn


# ---------------------------------------------------------------------------- decisions at scale
def labelled(service, n: int) -> list[int]:
    ids = []
    for i in range(n):
        rec, _ = service.store.add_image(png(100 + i, 6, 8), f"{'kitchen' if i % 2 else 'street'}{i}.png",
                                         width=8, height=6)
        service.store.add_prediction(rec.id, "m", "disparity", np.ones((6, 8), np.float32), confidence=i / n)
        ids.append(rec.id)
    return ids


def test_bulk_accept_by_ticks_or_by_filter_and_the_filters_and_histogram(service):
    ids = labelled(service, 10)
    unlabelled = service.store.add_image(png(99, 6, 8), "kitchen-raw.png", width=8, height=6)[0].id
    done = service.set_statuses("accepted", image_ids=ids[:3])
    assert [c[0] for c in done.changed] == ids[:3]
    dry = service.set_statuses("rejected", name="kitchen*", min_confidence=0.5, dry_run=True)
    assert [c[0] for c in dry.changed] == [ids[5], ids[7], ids[9]] and dry.skipped == []
    assert service.store.count_by_status()["rejected"] == 0
    all_kitchen = service.set_statuses("accepted", name="kitchen*")
    assert (len(all_kitchen.changed), all_kitchen.unchanged, all_kitchen.skipped) == \
        (4, [ids[1]], [(unlabelled, "kitchen-raw.png", "no label yet")])
    service.tag(ids[:2], "night")
    page = service.gallery("accepted", tag="night", sort="name")
    assert page.ids == [ids[1], ids[0]] and page.total == 2
    assert service.gallery(None, min_confidence=0.85, max_confidence="").ids == [ids[9]]
    hist = service.histogram("accepted")
    assert sum(hist.counts) == 7 and hist.unscored == 0 and service.histogram().unscored == 1
    with pytest.raises(CurationError, match="select images first"):
        service.set_statuses("accepted", image_ids=[])
    with pytest.raises(CurationError, match="no label yet"):
        service.set_status(unlabelled, "accepted", expected_head=None)


def test_undoing_the_only_correction_gives_back_a_pending_label(service, roomed):
    first = service.store.head(roomed.id)
    sel = np.zeros((H, W), bool)
    sel[:10] = True
    rev = service.apply_tool(roomed.id, "sky", sel, expected_head=first.id)
    assert service.store.get_image(roomed.id).status == "corrected"
    service.undo(roomed.id, expected_head=rev.id)
    assert service.store.get_image(roomed.id).status == "pending"
    with pytest.raises(Exception, match="nothing to undo .*first revision"):
        service.undo(roomed.id, expected_head=first.id)


def test_export_of_nothing_says_why_and_writes_nothing(service):
    with pytest.raises(NothingToExport, match="no image has status accepted or corrected .*holds no images at all"):
        service.export()
    labelled(service, 2)
    with pytest.raises(NothingToExport, match=r"the store holds 2 pending\); accept or correct labels first"):
        service.export()
    assert not service.settings.exports_dir.exists() or not any(service.settings.exports_dir.iterdir())
