"""The curate tab's handlers without a browser, on a tmp store; the page's wiring and shortcuts."""
from __future__ import annotations

import io
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipeline.curation_service import CurationService
from pipeline.store import Store
from studio import curate_handlers as ch
from studio.curate_js import SHORTCUTS

H, W = 12, 16
VIEW = {name: i for i, name in enumerate(ch.VIEW_FIELDS)}


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def disparity() -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    return (0.05 * u + 0.1 * v + 1.0).astype(np.float32)


@pytest.fixture
def curation(tmp_path, settings):
    store = Store(tmp_path / "c.db")
    for seed, conf in ((0, 0.8), (1, 0.2), (2, 0.5)):
        rec, _ = store.add_image(png(seed), f"img{seed}.png", width=W, height=H)
        store.add_prediction(rec.id, "teacher", "disparity", disparity(), confidence=conf)
    return CurationService(store, settings, import_root=tmp_path / "root")


@pytest.fixture
def h(curation):
    return ch.CurateHandlers(curation)


def painted(rows=slice(2, 6), cols=slice(3, 8), shape=(H, W)) -> dict:
    layer = np.zeros((*shape, 4), np.uint8)
    layer[rows, cols] = (255, 0, 255, 150)
    return {"background": None, "layers": [layer], "composite": None}


def test_mask_from_editor_reads_alpha_and_rescales():
    mask = ch.mask_from_editor(painted(), (H, W))
    assert mask.sum() == 20 and mask[2:6, 3:8].all()
    big = ch.mask_from_editor(painted(slice(4, 12), slice(6, 16), shape=(2 * H, 2 * W)), (H, W))
    assert big.sum() == 20 and big[2:6, 3:8].all()             # a canvas at twice the size maps back
    assert not ch.mask_from_editor(None, (H, W)).any()


def test_gallery_lists_worst_first_with_counts(h):
    items, ids, counts, page_info, page, cursors = h.gallery("all", "confidence, worst first", 1)
    assert ids == [2, 3, 1] and len(items) == 3 and items[0][1].startswith("#2 img1.png")
    assert "pending: **3**" in counts and page_info == "page 1 of 1 (3 images)" and page == 1
    assert cursors == {"view": ["all", "confidence, worst first", None], "page": 1, "next": None, "prev": None}
    assert h.gallery("accepted", "name", 5)[1] == []            # empty filter: back to page 1, no items
    assert h.gallery("all", "confidence, best first", 1)[1] == [1, 3, 2]


def test_pages_turn_by_cursor_and_jump_by_number(h, curation, monkeypatch):
    for seed in range(3, 3 + 2 * ch.PAGE_SIZE):                  # 51 images: pages of 24, 24, 3
        curation.store.add_image(png(seed), f"more{seed:03d}.png", width=W, height=H)
    want = [r.id for r in curation.store.list_images(sort="name", limit=100).items]
    seen = []
    monkeypatch.setattr(curation, "thumbnail", lambda rec: seen.append(rec.id) or "t.jpg")
    out = h.gallery("all", "name", 1)
    pages = [out[1]]
    for _ in range(3):                                            # the third turn stays on the last page
        out = h.turn_page("all", "name", out[4], None, out[5], delta=+1)
        pages.append(out[1])
    assert pages[0] + pages[1] + pages[2] == want and pages[3] == pages[2]
    assert out[3] == "page 3 of 3 (51 images)" and out[5]["next"] is None
    out = h.turn_page("all", "name", out[4], None, out[5], delta=-1)
    assert out[1] == want[24:48] and out[4] == 2
    out = h.turn_page("all", "name", out[4], None, out[5], delta=-1)
    assert out[1] == want[:24] and out[4] == 1 and out[5]["prev"] is None
    assert h.turn_page("all", "name", 3, None, out[5], delta=-1)[1] == want[24:48]     # page typed in: a jump by number
    assert h.turn_page("pending", "name", 1, None, out[5], delta=+1)[1] == want[24:48]  # another filter: no cursor reuse


def test_show_gives_every_view_of_the_head(h, curation):
    out = h.show(2)
    assert out[VIEW["sel"]] == {"image_id": 2, "head_id": curation.store.head(2).id}
    assert "#2 img1.png" in out[VIEW["header"]] and "pending" in out[VIEW["header"]]
    assert "pseudo\\_label by model:teacher" in out[VIEW["header"]]              # Markdown-escaped
    assert out[VIEW["slider"]] == (out[VIEW["image"]], out[VIEW["label"]])
    assert out[VIEW["cloud"]].endswith(".ply")
    (row,) = out[VIEW["history"]]["value"]
    head = curation.store.head(2)
    assert row == [1, "pseudo_label", head.author, head.source, head.created_at.replace("T", " ")[:19], "◀ head", ""]
    assert head.source.startswith("model:")
    assert out[VIEW["editor"]]["background"] == out[VIEW["image"]]
    assert out[VIEW["pair_image"]] == out[VIEW["image"]]            # no pairs: the image file itself


def test_apply_makes_one_revision_shown_at_once(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    out = h.apply_tool(sel, "sky", painted(), 2.0, None)
    hist = curation.store.history(1)
    assert len(hist.revisions) == 2 and out[VIEW["sel"]]["head_id"] == hist.head_id
    rows = out[VIEW["history"]]["value"]
    assert [r[1] for r in rows] == ["pseudo_label", "sky"] and rows[1][5] == "◀ head" and rows[0][5] == ""
    assert rows[1][3] == "human"
    depth = curation.store.load_label(hist.head).depth
    assert np.all(depth[2:6, 3:8] == 0) and depth[0, 0] == disparity()[0, 0]
    assert out[VIEW["label"]] != h.show(2)[VIEW["label"]]          # a new label picture
    with pytest.raises(gr.Error, match="painted region is empty"):
        h.apply_tool(out[VIEW["sel"]], "plane", {"layers": []}, 2.0, None)
    with pytest.raises(gr.Error, match="select an image"):
        h.apply_tool({}, "sky", painted(), 2.0, None)
    with pytest.raises(gr.Error, match="999"):
        h.show(999)
    assert len(curation.store.history(1).revisions) == 2


def test_a_concurrent_edit_is_refused_as_an_error_and_the_page_reloads(h, curation):
    """A refusal is an error (an API caller sees it, issue 12); the page's failure chain reloads."""
    sel = h.show(1)[VIEW["sel"]]
    curation.apply_tool(1, "smooth", np.ones((H, W), bool), expected_head=sel["head_id"], author="bob")
    with pytest.raises(gr.Error) as e:
        h.apply_tool(sel, "sky", painted(), 2.0, None)
    assert "changed since you opened it" in e.value.message and "by bob" in e.value.message
    assert e.value.title == "Cannot apply"
    hist = curation.store.history(1)
    assert [r.tool for r in hist.revisions] == ["pseudo_label", "smooth"]       # nothing overwritten
    assert h.reload(sel)[VIEW["sel"]]["head_id"] == hist.head_id                # what the page shows next
    with pytest.raises(gr.Error, match="changed since you opened it"):
        h.set_status(sel, [1], "accepted")                                      # stale accept: refused too
    assert curation.store.get_image(1).status == "corrected"


def test_accept_reject_move_to_the_next_image(h, curation):
    ids = h.gallery("all", "confidence, worst first", 1)[1]                     # [2, 3, 1]
    out = h.set_status(h.show(2)[VIEW["sel"]], ids, "accepted")
    assert curation.store.get_image(2).status == "accepted" and out[VIEW["sel"]]["image_id"] == 3
    out = h.set_status(out[VIEW["sel"]], ids, "rejected")
    assert curation.store.get_image(3).status == "rejected" and out[VIEW["sel"]]["image_id"] == 1
    assert h.step(out[VIEW["sel"]], ids, -1)[VIEW["sel"]]["image_id"] == 3
    assert h.step(out[VIEW["sel"]], ids, +1)[VIEW["sel"]]["image_id"] == 1      # stays at the end
    assert h.gallery("accepted", "name", 1)[1] == [2]


def test_undo_redo_through_the_handlers(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    first = sel["head_id"]
    sel = h.apply_tool(sel, "ignore_mask", painted(), 2.0, None)[VIEW["sel"]]
    back = h.undo(sel)[VIEW["sel"]]
    assert back["head_id"] == first
    assert h.redo(back)[VIEW["sel"]]["head_id"] == sel["head_id"]


def test_point_pairs_by_two_clicks(h, curation):
    sel = h.show(1)[VIEW["sel"]]
    _, pending, info = h.click_point(sel, [], gr.SelectData(None, {"index": [15, 11], "value": None}))
    assert pending == [[15, 11]] and "click point B" in info
    img, pending, info = h.click_point(sel, pending, gr.SelectData(None, {"index": [0, 0], "value": None}))
    assert pending == [[15, 11], [0, 0]] and "which is closer" in info
    assert tuple(img[11, 15]) != tuple(curation.image_rgb(1)[11, 15])            # the clicked point is drawn
    out = h.add_pair(sel, pending, "B")                                          # wrong: A is closer
    assert out[VIEW["pairs"]]["value"] == [[1, "(15, 11)", "(0, 0)", "B", "no (flagged)"]]
    assert "1 flagged" in out[VIEW["pair_info"]] and out[VIEW["pending"]] == []
    with pytest.raises(gr.Error, match="click two points"):
        h.add_pair(sel, [[1, 1]], "A")
    with pytest.raises(gr.Error, match="has no point pair 7"):
        h.delete_pair(sel, 7)
    out = h.delete_pair(sel, 1)
    assert out[VIEW["pairs"]]["value"] == [] and curation.store.point_pairs(1) == []


def test_import_uploads_report(h, tmp_path):
    (tmp_path / "new.png").write_bytes(png(9))
    (tmp_path / "dup.png").write_bytes(png(0))
    (tmp_path / "bad.jpg").write_text("no")
    text = h.import_files([str(tmp_path / n) for n in ("new.png", "dup.png", "bad.jpg")])
    assert text.startswith("**Import:** 1 added, 1 duplicate(s), 1 rejected")
    assert "**dup.png** is image #1 (**img0.png**)" in text and "rejected: **bad.jpg**" in text
    with pytest.raises(gr.Error, match="no files"):
        h.import_files(None)
    with pytest.raises(gr.Error, match="outside the allowed import folder"):
        h.import_folder("../..")


def test_import_ground_truth_stores_it_beside_the_label(h, curation, tmp_path):
    folder = tmp_path / "root" / "lidar"
    folder.mkdir(parents=True)
    (folder / "img1.png").write_bytes(png(1))                             # already in the store (image 2)
    np.save(folder / "img1_depth.npy", np.full((H, W), 3.0))
    head = curation.store.head(2)
    text = h.import_ground_truth("lidar", "depth", "lidar-1", 1.0)
    assert text.startswith("**Ground truth:** 1 ground truth(s) imported, 0 already there, 0 rejected; 0 new image(s)")
    gt = curation.store.ground_truth(2)
    assert (gt.source, gt.kind) == ("ground_truth:lidar-1", "metric_depth") and curation.store.head(2) == head
    with pytest.raises(gr.Error, match="outside the allowed import folder"):
        h.import_ground_truth("../..", "depth", "x", 1.0)
    with pytest.raises(gr.Error, match="name the source"):
        h.import_ground_truth("lidar", "depth", "", 1.0)


def test_export_offers_a_zip(h, curation):
    curation.set_status(1, "accepted", expected_head=curation.store.head(1).id)
    path, note = h.export(["accepted"])
    assert path.endswith(".zip") and "1 images, 1 labels" in note


def test_job_html_shows_progress_and_errors():
    from types import SimpleNamespace
    info = SimpleNamespace(id=4, status="running", step=3, total=10, throughput=1.5, eta_s=4.7, finished=False,
                           message="image 3", error=None, log_tail=["loading <x>"])
    text = ch.job_html(info)
    assert "Job 4: running" in text and "<progress value='3' max='10'>" in text and "1.50 img/s" in text
    assert "about 5 s left" in text and "loading &lt;x&gt;" in text
    assert ch.job_html(None) == "<p>No pseudo-labelling job yet.</p>"


def test_the_timer_refreshes_the_gallery_only_when_the_job_moved(h, curation):
    import os
    store = curation.store
    assert h.poll_and_refresh(None, None, "all", "name", 1)[4:] == tuple(gr.skip() for _ in range(6))
    job = store.create_job("pseudo_label", ["pseudo-label"], total=3)
    store.claim_job(job.id, os.getpid())
    store.update_progress(job.id, 3, total=3)
    store.finish_job(job.id, "done")
    out = h.poll_and_refresh(None, None, "all", "name", 1)
    assert out[0] == job.id and "Job 1: done" in out[1] and out[2]["active"] is False
    assert out[3] == [job.id, 3, "done"] and out[5] == [1, 2, 3]             # seen + gallery ids
    again = h.poll_and_refresh(job.id, out[3], "all", "name", 1)
    assert again[3] == out[3] and again[4:] == tuple(gr.skip() for _ in range(6))


@pytest.mark.slow          # a real subprocess importing torch: ~10 s idle, ~30 s on a busy machine
def test_pseudo_label_job_runs_in_the_background(tmp_path, settings, vitt_service, vitt_checkpoint, monkeypatch):
    """Start from the tab (returns at once), poll to the end, cancel/resume refusals; images get labels."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = Store(tmp_path / "jobs.db")
    store.add_image(png(5), "a.png", width=W, height=H)
    h = ch.CurateHandlers(CurationService(store, settings), vitt_service)
    assert [k for _, k in h.teacher_choices()] == [vitt_service.default_key]
    t0 = time.monotonic()
    job_id, html, timer = h.start_job(vitt_service.default_key)
    assert time.monotonic() - t0 < 5 and timer["active"] is True and f"Job {job_id}" in html
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job_id, html, timer = h.poll_job(job_id)
        if not timer["active"]:
            break
        time.sleep(0.3)
    assert "done" in html and "1/1" in html, html
    assert store.head(1).tool == "pseudo_label" and store.get_image(1).confidence is not None
    with pytest.raises(gr.Error, match="only failed or cancelled jobs can be resumed"):
        h.resume_job(job_id)


def test_the_page_wires_named_endpoints_and_shortcut_buttons(settings, curation):
    from studio.app import Services, build_app
    demo = build_app(Services(settings=settings, extra={"curation": curation}))
    names = {f.api_name for f in demo.fns.values()}
    assert {"curate_open", "curate_apply", "curate_accept", "curate_reject", "curate_undo", "curate_redo",
            "curate_add_pair", "curate_import", "curate_import_folder", "curate_import_ground_truth",
            "curate_pseudo_label", "curate_job",
            "curate_cancel", "curate_resume", "curate_export", "curate_gallery"} <= names
    elem_ids = {b.elem_id for b in demo.blocks.values()}
    assert set(SHORTCUTS.values()) <= elem_ids and "curate-panel" in elem_ids


def test_video_import_and_the_gallerys_clip_filter(h, curation, tmp_path, monkeypatch):
    from pipeline.video import synthetic
    frames = (np.random.default_rng(t).integers(0, 256, (H, W, 3), dtype=np.uint8) for t in range(6))
    clip = synthetic.write_clip(tmp_path / "walk.mp4", frames, fps=2)                 # 3 seconds
    text = h.import_files([str(clip)], 1.0)
    assert "**Import:** 3 added" in text
    update = h.clip_choices(None)
    (label, name), = [c for c in update["choices"] if c[1]]
    assert name.startswith("walk.mp4#") and label == f"{name} (3 frames)" and update["value"] == ch.ALL_CLIPS
    items, ids, _, page_info, _, cursors = h.gallery("all", "name", 1, name)
    assert len(ids) == 3 and "(3 images)" in page_info and " · 1.00 s · " in items[1][1]
    assert h.gallery("all", "name", 1, ch.ALL_CLIPS)[1] == h.gallery("all", "name", 1)[1]
    assert len(h.gallery("all", "name", 1)[1]) == 6                                    # 3 photos + 3 frames
    assert h.first_page("all", "name", name)[1] == ids and h.clip_choices(name)["value"] == name
    assert cursors["view"] == ["all", "name", name]
    monkeypatch.setattr(ch, "PAGE_SIZE", 1)               # pages of one: turned by cursor inside the clip only
    by_time = "frame time (videos)"
    pages = [h.gallery("all", by_time, 1, name)]
    for _ in range(3):
        pages.append(h.turn_page("all", by_time, pages[-1][4], name, pages[-1][5], delta=+1))
    times = [curation.store.get_image(p[1][0]).frame_time for p in pages]
    assert times == [0.0, 1.0, 2.0, 2.0] and pages[-1][5]["next"] is None         # the last page stays
