"""The curate tab's gallery and intake handlers without a browser, on a tmp store; the page's wiring and keys."""
from __future__ import annotations

import io
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipeline.services.curation_service import CurationService
from pipeline.store import Store
from studio import curate_gallery as cg
from studio.curate_js import BRUSH_KEYS, SHORTCUTS
from studio.curate_tab import CurateHandlers
from studio.curate_text import job_html

H, W = 12, 16
GAL = {name: i for i, name in enumerate(cg.GALLERY_FIELDS)}


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
    return CurateHandlers(curation)


def test_gallery_lists_worst_first_with_counts_ticks_and_a_histogram(h):
    out = h.gallery.gallery("all", "confidence, worst first", 1)
    items, ids = out[GAL["gallery"]], out[GAL["page_ids"]]
    assert ids == [2, 3, 1] and len(items) == 3 and items[0][1].startswith("#2 img1.png")
    assert "pending: **3**" in out[GAL["counts"]] and out[GAL["page_info"]] == "page 1/1 · 3 images"
    assert out[GAL["cursors"]] == {"view": ["all", "confidence, worst first", None, None, None, None, None],
                                   "page": 1, "next": None, "prev": None}
    assert out[GAL["ticked"]]["choices"] == [("#2 img1.png", 2), ("#3 img2.png", 3), ("#1 img0.png", 1)]
    assert out[GAL["histogram"]].startswith("Confidence (all, 3 scored, 0 not yet): `0 ")
    assert h.gallery.gallery("accepted", "name", 5)[GAL["page_ids"]] == []      # empty filter: no items
    assert h.gallery.gallery("all", "confidence, best first", 1)[GAL["page_ids"]] == [1, 3, 2]


def test_filters_by_name_tag_and_confidence(h, curation):
    curation.tag([1, 3], "indoor")
    assert h.gallery.gallery("all", "name", 1, None, "img1")[GAL["page_ids"]] == [2]          # a word: anywhere
    assert h.gallery.gallery("all", "name", 1, None, "img[02].png")[GAL["page_ids"]] == [1, 3]   # a glob
    assert h.gallery.gallery("all", "name", 1, None, None, "indoor")[GAL["page_ids"]] == [1, 3]
    assert h.gallery.gallery("all", "name", 1, None, None, None, 0.3, 0.6)[GAL["page_ids"]] == [3]
    update = h.gallery.tag_choices("indoor")
    assert update["choices"] == [("any tag", cg.ALL_TAGS), ("indoor (2)", "indoor")] and update["value"] == "indoor"
    assert cg.name_glob(" kitchen ") == "*kitchen*" and cg.name_glob("a*.jpg") == "a*.jpg" and cg.name_glob("") is None


def test_pages_turn_by_cursor_and_jump_by_number(h, curation, monkeypatch):
    for seed in range(3, 3 + 2 * cg.PAGE_SIZE):                  # 51 images: pages of 24, 24, 3
        curation.store.add_image(png(seed), f"more{seed:03d}.png", width=W, height=H)
    want = [r.id for r in curation.store.list_images(sort="name", limit=100).items]
    monkeypatch.setattr(curation.render, "thumbnail", lambda rec: "t.jpg")
    g = h.gallery
    out = g.gallery("all", "name", 1)
    pages = [out[GAL["page_ids"]]]
    nav = (None, None, None, None, None)
    for _ in range(3):                                            # the third turn stays on the last page
        out = g.turn_page("all", "name", out[GAL["page"]], *nav, out[GAL["cursors"]], delta=+1)
        pages.append(out[GAL["page_ids"]])
    assert pages[0] + pages[1] + pages[2] == want and pages[3] == pages[2]
    assert out[GAL["page_info"]] == "page 3/3 · 51 images" and out[GAL["cursors"]]["next"] is None
    out = g.turn_page("all", "name", out[GAL["page"]], *nav, out[GAL["cursors"]], delta=-1)
    assert out[GAL["page_ids"]] == want[24:48] and out[GAL["page"]] == 2
    out = g.turn_page("all", "name", out[GAL["page"]], *nav, out[GAL["cursors"]], delta=-1)
    assert out[GAL["page_ids"]] == want[:24] and out[GAL["cursors"]]["prev"] is None
    assert g.turn_page("all", "name", 3, *nav, out[GAL["cursors"]], delta=-1)[GAL["page_ids"]] == want[24:48]
    assert g.turn_page("pending", "name", 1, *nav, out[GAL["cursors"]], delta=+1)[GAL["page_ids"]] == want[24:48]


def test_decisions_on_ticked_images_and_on_every_match(h, curation):
    text = h.gallery.bulk_ticked([1, 3], "accepted")
    assert text.startswith("**Set 2 image(s) to accepted**") and "#1 img0.png: pending → accepted" in text
    assert [curation.store.get_image(i).status for i in (1, 2, 3)] == ["accepted", "pending", "accepted"]
    with pytest.raises(gr.Error, match="tick images first"):
        h.gallery.bulk_ticked([], "rejected")
    dry = h.gallery.bulk_filter("all", None, None, None, None, 0.6, "rejected", True)
    assert dry.startswith("**Would set 2 image(s) to rejected**") and curation.store.count_by_status()["rejected"] == 0
    done = h.gallery.bulk_filter("accepted", None, None, None, None, None, "pending", False)
    assert done.startswith("**Set 2 image(s) to pending**") and curation.store.count_by_status()["pending"] == 3
    assert h.gallery.bulk_tag([2], "night, blurry") == "2 tag(s) added to 1 image(s): night, blurry"
    assert curation.store.tags_of(2) == ["blurry", "night"]


def test_import_uploads_report(h, tmp_path):
    (tmp_path / "new.png").write_bytes(png(9))
    (tmp_path / "dup.png").write_bytes(png(0))
    (tmp_path / "bad.jpg").write_text("no")
    text = h.intake.import_files([str(tmp_path / n) for n in ("new.png", "dup.png", "bad.jpg")])
    assert text.startswith("**Import:** 1 added, 1 duplicate(s), 1 rejected")
    assert "**dup.png** is image #1 (**img0.png**)" in text and "rejected: **bad.jpg**" in text
    with pytest.raises(gr.Error, match="no files"):
        h.intake.import_files(None)
    with pytest.raises(gr.Error, match="outside the allowed import folder"):
        h.intake.import_folder("../..")


def test_import_ground_truth_stores_it_beside_the_label(h, curation, tmp_path):
    folder = tmp_path / "root" / "lidar"
    folder.mkdir(parents=True)
    (folder / "img1.png").write_bytes(png(1))                             # already in the store (image 2)
    np.save(folder / "img1_depth.npy", np.full((H, W), 3.0))
    head = curation.store.head(2)
    text = h.intake.import_ground_truth("lidar", "depth", "lidar-1", 1.0)
    assert text.startswith("**Ground truth:** 1 ground truth(s) imported, 0 already there, 0 rejected; 0 new image(s)")
    gt = curation.store.ground_truth(2)
    assert (gt.source, gt.kind) == ("ground_truth:lidar-1", "metric_depth") and curation.store.head(2) == head
    with pytest.raises(gr.Error, match="outside the allowed import folder"):
        h.intake.import_ground_truth("../..", "depth", "x", 1.0)
    with pytest.raises(gr.Error, match="name the source"):
        h.intake.import_ground_truth("lidar", "depth", "", 1.0)


def test_export_offers_a_zip_or_says_why_there_is_nothing(h, curation):
    with pytest.raises(gr.Error, match="nothing to export: no image has status accepted .*holds 3 pending"):
        h.intake.export(["accepted", "corrected"])
    curation.set_status(1, "accepted", expected_head=curation.store.head(1).id)
    path, note = h.intake.export(["accepted"])
    assert path.endswith(".zip") and "1 images, 1 labels" in note


def test_the_panels_a_new_user_needs_open_on_load(tmp_path, settings, h, curation):
    empty = CurateHandlers(CurationService(Store(tmp_path / "empty.db"), settings, import_root=tmp_path / "r"))
    assert [u["open"] for u in empty.intake.open_panels()] == [True, False]          # import first
    curation.store.add_image(png(40), "new.png", width=W, height=H)
    assert [u["open"] for u in h.intake.open_panels()] == [False, True]              # then pseudo-label


def test_job_html_shows_progress_errors_and_words_not_json():
    from types import SimpleNamespace
    info = SimpleNamespace(id=4, status="running", done=3, total=10, throughput=1.5, eta_s=4.7, finished=False,
                           message="image 3", error=None,
                           log_tail=["loading <x>", '{"model_id": "m", "done": 3}', "labelled 3 of 10 image(s)"])
    text = job_html(info)
    assert "Job 4: running" in text and "<progress value='3' max='10'>" in text and "1.50 img/s" in text
    assert "about 5 s left" in text and "loading &lt;x&gt;" in text and "labelled 3 of 10" in text
    assert "model_id" not in text
    assert job_html(None) == "<p>No pseudo-labelling job yet.</p>"


def test_the_timer_refreshes_the_gallery_only_when_the_job_moved(h, curation):
    import os
    store = curation.store
    n = len(cg.GALLERY_FIELDS)
    assert h.poll_and_refresh(None, None, "all", "name", 1)[4:] == tuple(gr.skip() for _ in range(n))
    job = store.create_job("pseudo_label", ["pseudo-label"], total=3)
    store.claim_job(job.id, os.getpid())
    store.update_progress(job.id, 3, total=3)
    store.finish_job(job.id, "done")
    before = store.db.execute("SELECT count(*) FROM audit").fetchone()[0]
    out = h.poll_and_refresh(None, None, "all", "name", 1)
    assert out[0] == job.id and "Job 1: done" in out[1] and out[2]["active"] is False
    assert out[3] == [job.id, 3, "done"] and out[4 + GAL["page_ids"]] == [1, 2, 3]     # seen + gallery ids
    again = h.poll_and_refresh(job.id, out[3], "all", "name", 1)
    assert again[3] == out[3] and again[4:] == tuple(gr.skip() for _ in range(n))
    assert store.db.execute("SELECT count(*) FROM audit").fetchone()[0] == before        # polling only reads


@pytest.mark.slow          # a real subprocess importing torch: ~10 s idle, ~30 s on a busy machine
def test_pseudo_label_job_runs_in_the_background(tmp_path, settings, vitt_service, vitt_checkpoint, monkeypatch):
    """Start from the tab (returns at once), poll to the end, cancel/resume refusals; images get labels."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = Store(tmp_path / "jobs.db")
    store.add_image(png(5), "a.png", width=W, height=H)
    h = CurateHandlers(CurationService(store, settings), vitt_service).intake
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
    assert "done" in html and "1/1" in html and "labelled 1 of 1 image(s)" in html, html
    assert store.head(1).tool == "pseudo_label" and store.get_image(1).confidence is not None
    with pytest.raises(gr.Error, match="only failed or cancelled jobs can be resumed"):
        h.resume_job(job_id)


def test_the_page_wires_named_endpoints_and_shortcut_buttons(vitt_service, curation):
    from services import make_services

    from studio.app import build_app
    demo = build_app(make_services(vitt_service, curation=curation))
    names = {f.api_name for f in demo.fns.values()}
    assert {"curate_open", "curate_apply", "curate_accept", "curate_reject", "curate_undo", "curate_redo",
            "curate_add_pair", "curate_import", "curate_import_folder", "curate_import_ground_truth",
            "curate_pseudo_label", "curate_job", "curate_cancel", "curate_resume", "curate_export", "curate_gallery",
            "curate_select_at", "curate_snap", "curate_add_reference", "curate_calibrate", "curate_bulk_accept",
            "curate_bulk_filter", "curate_tags"} <= names
    elem_ids = {b.elem_id for b in demo.blocks.values()}
    assert set(SHORTCUTS.values()) <= elem_ids and "curate-panel" in elem_ids and "curate-editor" in elem_ids
    assert set(BRUSH_KEYS) == {"[", "]"}
    assert {"curate-view", "curate-opacity", "curate-mode", "curate-tolerance", "curate-apply", "curate-calibrate",
            "curate-side", "curate-main", "curate-tools", "curate-ticked", "curate-histogram"} <= elem_ids


def test_video_import_and_the_gallerys_clip_filter(h, curation, tmp_path, monkeypatch):
    from pipeline.video import synthetic
    frames = (np.random.default_rng(t).integers(0, 256, (H, W, 3), dtype=np.uint8) for t in range(6))
    clip = synthetic.write_clip(tmp_path / "walk.mp4", frames, fps=2)                 # 3 seconds
    assert "**Import:** 3 added" in h.intake.import_files([str(clip)], 1.0)
    g = h.gallery
    update = g.clip_choices(None)
    (label, name), = [c for c in update["choices"] if c[1]]
    assert name.startswith("walk.mp4#") and label == f"{name} (3 frames)" and update["value"] == cg.ALL_CLIPS
    out = g.gallery("all", "name", 1, name)
    assert len(out[GAL["page_ids"]]) == 3 and "· 3 images" in out[GAL["page_info"]]
    assert " · 1.00 s · " in out[GAL["gallery"]][1][1]
    assert g.gallery("all", "name", 1, cg.ALL_CLIPS)[GAL["page_ids"]] == g.gallery("all", "name", 1)[GAL["page_ids"]]
    assert len(g.gallery("all", "name", 1)[GAL["page_ids"]]) == 6                      # 3 photos + 3 frames
    assert g.first_page("all", "name", name)[GAL["page_ids"]] == out[GAL["page_ids"]]
    assert g.clip_choices(name)["value"] == name and out[GAL["cursors"]]["view"][2] == name
    monkeypatch.setattr(cg, "PAGE_SIZE", 1)               # pages of one: turned by cursor inside the clip only
    by_time = "frame time (videos)"
    pages = [g.gallery("all", by_time, 1, name)]
    for _ in range(3):
        p = pages[-1]
        pages.append(g.turn_page("all", by_time, p[GAL["page"]], name, None, None, None, None, p[GAL["cursors"]],
                                 delta=+1))
    times = [curation.store.get_image(p[GAL["page_ids"]][0]).frame_time for p in pages]
    assert times == [0.0, 1.0, 2.0, 2.0] and pages[-1][GAL["cursors"]]["next"] is None
