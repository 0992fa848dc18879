"""CurationService on a tmp store with tiny arrays: every tool makes exactly one revision with known values."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.intake.images import IngestError
from pipeline.services.curation_service import TOOLS, CurationError, CurationService
from pipeline.store import HistoryError, StaleRevisionError, Store

H, W = 12, 16


def png(seed: int, h: int = H, w: int = W) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def plane_disparity() -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    return (0.05 * u + 0.1 * v + 1.0).astype(np.float32)     # (H, W), linear: a disparity plane


def add_labelled(store: Store, seed: int, label: np.ndarray, *, confidence: float, model="teacher"):
    rec, _ = store.add_image(png(seed), f"img{seed}.png", width=W, height=H)
    store.add_prediction(rec.id, model, "disparity", label.astype(np.float32), confidence=confidence)
    return store.get_image(rec.id)


@pytest.fixture
def service(tmp_path, settings):
    return CurationService(Store(tmp_path / "c.db"), settings, import_root=tmp_path / "root")


@pytest.fixture
def labelled(service):
    return add_labelled(service.store, 0, plane_disparity(), confidence=0.5)


def region(rows=slice(2, 8), cols=slice(3, 9)) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[rows, cols] = True
    return m


def apply(service, rec, tool, reg, **params):
    head = service.store.head(rec.id)
    before = len(service.store.history(rec.id).revisions)
    rev = service.apply_tool(rec.id, tool, reg, expected_head=head.id, author="ann", **params)
    hist = service.store.history(rec.id)
    assert len(hist.revisions) == before + 1 and hist.head_id == rev.id and rev.parent_id == head.id
    assert rev.tool == tool and rev.author == "ann"
    assert service.store.get_image(rec.id).status == "corrected"
    return service.store.load_label(rev), service.store.load_label(head)


def test_ignore_mask_adds_a_mask_and_keeps_the_depth(service, labelled):
    new, old = apply(service, labelled, "ignore_mask", region() * 255)     # 0..255 paint works too
    assert new.revision.depth_sha256 == old.revision.depth_sha256
    assert np.array_equal(new.masks["ignore"], region())
    more, _ = apply(service, labelled, "ignore_mask", region(slice(9, 11), slice(0, 2)))
    assert more.masks["ignore"].sum() == region().sum() + 4                 # union with the old mask
    less, _ = apply(service, labelled, "unignore", region())
    assert less.masks["ignore"].sum() == 4


def test_sky_sets_disparity_zero_inside_only(service, labelled):
    new, old = apply(service, labelled, "sky", region())
    assert np.all(new.depth[region()] == 0)
    assert np.array_equal(new.depth[~region()], old.depth[~region()])
    assert np.array_equal(new.masks["sky"], region())


def test_sky_on_metric_depth_uses_the_labels_farthest_value(service):
    metres = (2.0 + plane_disparity()).astype(np.float32)           # 3.0 .. 5.85 m
    rec, _ = service.store.add_image(png(30), "room.png", width=W, height=H)
    service.store.add_prediction(rec.id, "metric", "metric_depth", metres, confidence=0.5)
    new, _ = apply(service, rec, "sky", region())
    assert np.all(new.depth[region()] == metres.max()) and new.revision.kind == "metric_depth"
    capped, _ = apply(service, rec, "sky", region(slice(0, 1), slice(0, 1)), max_depth=80.0)
    assert capped.depth[0, 0] == 80.0


def test_plane_fit_restores_a_corrupted_plane(service):
    truth = plane_disparity()
    bad = truth.copy()
    bad[4:6, 5:7] += 5.0                                   # a few wrong pixels inside the painted area
    rec = add_labelled(service.store, 1, bad, confidence=0.1)
    new, _ = apply(service, rec, "plane", region())
    np.testing.assert_allclose(new.depth[region()], truth[region()], atol=1e-4)
    assert np.array_equal(new.depth[~region()], bad[~region()])
    assert "inliers" in new.revision.note


def test_smooth_changes_the_region_only(service):
    spike = np.ones((H, W), np.float32)
    spike[5, 6] = 10.0
    rec = add_labelled(service.store, 2, spike, confidence=0.2)
    new, old = apply(service, rec, "smooth", region(), sigma=1.5)
    assert 1.0 < new.depth[5, 6] < 5.0                     # the spike is spread out
    assert np.array_equal(new.depth[~region()], old.depth[~region()])


def test_copy_takes_the_other_models_values_aligned(service):
    truth = plane_disparity()
    bad = truth.copy()
    bad[region()] = 0.3                                    # a hole in the teacher's label
    rec = add_labelled(service.store, 3, bad, confidence=0.2)
    service.store.add_prediction(rec.id, "other", "disparity", 2.0 * truth + 1.0, make_label=False)
    assert service.open(rec.id).prediction_models == ["teacher", "other"]
    new, _ = apply(service, rec, "copy", region(), source_model="other")
    np.testing.assert_allclose(new.depth[region()], truth[region()], atol=1e-4)
    with pytest.raises(CurationError, match="no prediction from 'nobody'"):
        service.apply_tool(rec.id, "copy", region(), expected_head=new.revision.id, source_model="nobody")


def test_tool_errors_save_nothing(service, labelled):
    head = service.store.head(labelled.id)
    with pytest.raises(CurationError, match="empty"):
        service.apply_tool(labelled.id, "ignore_mask", np.zeros((H, W)), expected_head=head.id)
    with pytest.raises(CurationError, match="select on the image shown"):
        service.apply_tool(labelled.id, "sky", np.ones((3, 3)), expected_head=head.id)
    with pytest.raises(CurationError, match="unknown tool"):
        service.apply_tool(labelled.id, "erase_all", region(), expected_head=head.id)
    assert len(service.store.history(labelled.id).revisions) == 1


def test_undo_restores_and_redo_returns(service, labelled):
    first = service.store.head(labelled.id)
    new, _ = apply(service, labelled, "sky", region())
    back = service.undo(labelled.id, expected_head=new.revision.id, author="ann")
    assert back.id == first.id
    assert np.array_equal(service.store.load_label(back).depth, plane_disparity())
    again = service.redo(labelled.id, expected_head=first.id, author="ann")
    assert again.id == new.revision.id
    with pytest.raises(HistoryError):
        service.redo(labelled.id, expected_head=again.id)


def test_a_stale_head_is_refused_and_nothing_is_saved(service, labelled):
    opened = service.store.head(labelled.id).id
    service.apply_tool(labelled.id, "sky", region(), expected_head=opened, author="bob")   # someone else
    for call in (lambda: service.apply_tool(labelled.id, "plane", region(), expected_head=opened, author="ann"),
                 lambda: service.set_status(labelled.id, "accepted", expected_head=opened, author="ann"),
                 lambda: service.undo(labelled.id, expected_head=opened, author="ann")):
        with pytest.raises(StaleRevisionError, match="changed since you opened it.*by bob"):
            call()
    assert len(service.store.history(labelled.id).revisions) == 2
    assert service.store.get_image(labelled.id).status == "corrected"


def test_accept_and_reject(service, labelled):
    head = service.store.head(labelled.id).id
    assert service.set_status(labelled.id, "accepted", expected_head=head).status == "accepted"
    assert service.set_status(labelled.id, "rejected", expected_head=head).status == "rejected"
    assert service.store.count_by_status()["rejected"] == 1


def test_point_pairs_are_flagged_when_the_label_disagrees(service, labelled):
    # disparity grows with rows and columns: [11, 15] (row, column) is closer than [0, 0]
    good = service.add_point_pair(labelled.id, (11, 15), (0, 0), 1, author="ann")
    bad = service.add_point_pair(labelled.id, (11, 15), (0, 0), 2, author="ann")
    assert (good.flagged, bad.flagged) == (False, True)
    assert good.point1 == (11, 15)                          # [h, w] in and out: one convention
    head = service.store.head(labelled.id).id
    service.apply_tool(labelled.id, "sky", region(slice(10, 12), slice(14, 16)), expected_head=head)
    flags = {p.id: p.flagged for p in service.store.point_pairs(labelled.id)}
    assert flags == {good.id: True, bad.id: False}          # the sky point is now the farthest
    view = service.open(labelled.id)
    assert [(p.point1, p.closer, p.flagged) for p in view.pairs] == [((11, 15), 1, True), ((11, 15), 2, False)]
    with pytest.raises(CurationError, match="which point is closer: 1 or 2"):
        service.add_point_pair(labelled.id, (1, 1), (2, 2), "c")
    with pytest.raises(CurationError, match=r"point 2 \[h=12, w=0\] is outside the 16x12 image"):
        service.add_point_pair(labelled.id, (1, 1), (12, 0), 1)
    other = add_labelled(service.store, 7, plane_disparity(), confidence=0.3)
    with pytest.raises(CurationError, match=f"image {other.id} has no point pair {good.id}"):
        service.delete_point_pair(other.id, good.id)
    service.delete_point_pair(labelled.id, good.id)
    assert [p.id for p in service.store.point_pairs(labelled.id)] == [bad.id]


def test_gallery_orders_worst_first_with_thumbnails_and_counts(service):
    for seed, conf in ((10, 0.9), (11, 0.1), (12, 0.5)):
        add_labelled(service.store, seed, plane_disparity(), confidence=conf)
    service.store.add_image(png(13), "unlabelled.png", width=W, height=H)
    page = service.gallery(limit=3)
    assert [c.split(" ")[1] for _, c in page.items] == ["img11.png", "img12.png", "img10.png"]
    assert page.total == 4 and page.counts["pending"] == 4 and page.counts["corrected"] == 0
    thumb = Image.open(page.items[0][0])
    assert thumb.size == (2 * round(W * 128 / H), 128)      # image | label
    rest = service.gallery(offset=3, limit=3)
    assert [c.split(" ")[1] for _, c in rest.items] == ["unlabelled.png"]
    assert Image.open(rest.items[0][0]).size == (round(W * 128 / H), 128)   # no label yet: image only
    assert service.gallery("accepted").total == 0


def test_open_renders_image_label_and_cloud(service, labelled):
    view = service.open(labelled.id)
    assert view.head_id == service.store.head(labelled.id).id and view.history.head_id == view.head_id
    assert np.array_equal(np.asarray(Image.open(view.image_file)), service.image_rgb(labelled.id))
    assert Image.open(view.label_file).size == (W, H)
    assert view.cloud_file is not None and view.cloud_file.read_bytes().startswith(b"ply")
    new, _ = apply(service, labelled, "ignore_mask", region())
    grey = np.asarray(Image.open(service.open(labelled.id).label_file)).astype(int)
    colour = np.asarray(Image.open(view.label_file)).astype(int)
    assert np.array_equal(grey[~region()], colour[~region()]) and not np.array_equal(grey[region()], colour[region()])


def test_import_uploads_folder_and_root_escape(service, tmp_path):
    (service.import_root / "batch").mkdir()
    (service.import_root / "batch" / "a.png").write_bytes(png(20))
    (service.import_root / "batch" / "notes.txt").write_text("not an image")
    report = service.import_folder("batch")
    assert len(report.added) == 1 and len(report.rejected) == 1 and report.rejected[0][0].endswith("notes.txt")
    with pytest.raises(IngestError, match="outside the allowed import folder"):
        service.import_folder("../..")
    z = tmp_path / "up.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("b.png", png(21))
        zf.writestr("a_again.png", png(20))
    up = service.import_uploads([str(z)])
    assert (len(up.added), len(up.duplicates)) == (1, 1)
    with pytest.raises(CurationError, match="no files"):
        service.import_uploads([])


def test_export_zip_holds_the_curated_labels(service, labelled):
    head = service.store.head(labelled.id).id
    service.set_status(labelled.id, "accepted", expected_head=head)
    result = service.export()
    assert result.report.images == 1 and result.zip_path.exists()
    assert result.zip_path.parent == service.settings.data_dir / "exports"
    names = zipfile.ZipFile(result.zip_path).namelist()
    assert any(n.endswith("manifest.jsonl") for n in names) and any(n.endswith(".npy") for n in names)


def test_every_tool_is_listed_with_a_description():
    assert set(TOOLS) == {"ignore_mask", "unignore", "sky", "plane", "smooth", "copy"}
    assert all(desc and callable(fn) for desc, fn in TOOLS.values())
