"""The curate tab: import images, pseudo-label them in the background, review and correct labels.

Endpoints (gradio_client `api_name`; the selected image is kept in the session):
    /curate_gallery (status, sort, page, clip) -> page of thumbnails, ids, counts, page text, page
    /curate_open    (image id) -> the image's views (header, image, label, slider, cloud, history, pairs)
    /curate_apply   (tool, painted editor value, sigma, source model) -> views after the new revision
    /curate_accept, /curate_reject, /curate_next, /curate_prev, /curate_undo, /curate_redo
    /curate_add_pair (closer 'A'|'B', after two clicks on the pair image)
    /curate_import (files, video frames/s), /curate_import_folder (folder under the allowed root, video frames/s)
                    -> report (videos add their frames, grouped by clip and frame time)
    /curate_import_ground_truth (folder under the allowed root, "depth"|"disparity", source, scale) -> report
    /curate_pseudo_label (teacher) -> (job id, progress); /curate_job, /curate_cancel, /curate_resume (job id)
                     -> (job id, progress, timer): the job id is an argument (the page keeps it in a hidden field)
    /curate_export (statuses) -> zip of the curated set
Handlers live in curate_handlers.CurateHandlers (tested without a browser). A refused request (stale edit,
unknown id, value out of range) fails with the message (gradio_client raises AppError); the page then
reloads the selected image's current views.
"""
from __future__ import annotations

from functools import partial

import gradio as gr

from pipeline.curation_service import RANGES, TOOLS

from .components import lenient
from .curate_handlers import (
    ALL_CLIPS,
    HISTORY_HEADERS,
    PAIR_HEADERS,
    SORT_CHOICES,
    STATUS_FILTERS,
    VIEW_FIELDS,
    CurateHandlers,
)
from .curate_js import KEYBOARD_JS, PANEL_ID

TITLE = "Curate"
REQUIRES = ("curation",)
JOB_POLL_S = 1.0


def _import_panel(h: CurateHandlers, root) -> tuple:
    with gr.Accordion("Import images or video frames", open=False):
        rate = gr.Number(1.0, label="Video frames per second to import", minimum=0.01, elem_id="curate-video-rate")
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Images, videos or zips", file_count="multiple", type="filepath",
                                file_types=["image", "video", ".zip"], elem_id="curate-upload")
                up = gr.Button("Import uploads", elem_id="curate-import")
            with gr.Column():
                folder = gr.Textbox(label=f"Folder on the server (inside {root})", elem_id="curate-folder")
                go = gr.Button("Import folder", elem_id="curate-import-folder")
        report = gr.Markdown(elem_id="curate-import-report")
    return files, up, folder, go, report, rate


def _ground_truth_panel(root) -> dict:
    g = {}
    with gr.Accordion("Import ground truth (measured depth or disparity)", open=False):
        gr.Markdown("A folder of images with same-named ground-truth files (`a.jpg` + `a.npy` / `a_depth.png`, or "
                    "`images/` + `depth/`; an optional `a_mask.png` marks measured pixels). New images are added; "
                    "the ground truth is stored beside their labels, never replacing the label training reads, "
                    "and the Train tab compares teacher and student against it.")
        with gr.Row():
            g["folder"] = gr.Textbox(label=f"Folder on the server (inside {root})", elem_id="curate-gt-folder", scale=3)
            g["kind"] = gr.Radio([("depth in metres", "depth"), ("disparity (stereo / inverse depth)", "disparity")],
                                 value="depth", label="The files hold", elem_id="curate-gt-kind", scale=2)
        with gr.Row():
            g["source"] = gr.Textbox(label="Source of the measurements (e.g. lidar-2025)", elem_id="curate-gt-source")
            g["scale"] = lenient(gr.Number(1.0, label="Scale (0.001 for millimetres)", elem_id="curate-gt-scale"))
            g["go"] = gr.Button("Import ground truth", elem_id="curate-gt-import")
        g["report"] = gr.Markdown(elem_id="curate-gt-report")
    return g


def _job_panel(h: CurateHandlers) -> tuple:
    with gr.Accordion("Pseudo-label (teacher predictions + confidence, in the background)", open=True):
        choices = h.teacher_choices()
        with gr.Row():
            teacher = gr.Dropdown(choices, value=h.depth.default_key if h.depth is not None else None,
                                  label="Teacher model", allow_custom_value=h.depth is None, elem_id="curate-teacher",
                                  scale=3)
            start = gr.Button("Start", variant="primary", elem_id="curate-job-start", scale=1)
            cancel = gr.Button("Cancel", elem_id="curate-job-cancel", scale=1)
            resume = gr.Button("Resume", elem_id="curate-job-resume", scale=1)
        job_box = gr.HTML("<p>No pseudo-labelling job yet.</p>", elem_id="curate-job")
    return teacher, start, cancel, resume, job_box


def _gallery_panel() -> tuple:
    with gr.Row():
        status = gr.Radio(list(STATUS_FILTERS), value="all", label="Status", elem_id="curate-status", scale=3)
        sort = gr.Dropdown(list(SORT_CHOICES), value="confidence, worst first", label="Sort",
                           elem_id="curate-sort", scale=2)
        clip = gr.Dropdown([("all images", ALL_CLIPS)], value=ALL_CLIPS, label="Video clip", elem_id="curate-clip",
                           scale=2)
    counts = gr.Markdown(elem_id="curate-counts")
    gallery = gr.Gallery(label="Images | labels", columns=4, height=420, allow_preview=False,
                         object_fit="contain", elem_id="curate-gallery")
    with gr.Row():
        prev_page = gr.Button("◀ page", size="sm", elem_id="curate-page-prev")
        page = lenient(gr.Number(1, label="Page", precision=0, minimum=1, elem_id="curate-page"))
        next_page = gr.Button("page ▶", size="sm", elem_id="curate-page-next")
    page_info = gr.Markdown(elem_id="curate-page-info")
    return status, sort, counts, gallery, prev_page, page, next_page, page_info, clip


def _view_panel() -> dict:
    c = {}
    c["header"] = gr.Markdown(elem_id="curate-header")
    with gr.Row():
        c["prev"] = gr.Button("← previous (p)", size="sm", elem_id="curate-prev")
        c["accept"] = gr.Button("Accept (a)", variant="primary", size="sm", elem_id="curate-accept")
        c["reject"] = gr.Button("Reject (r)", variant="stop", size="sm", elem_id="curate-reject")
        c["next"] = gr.Button("next (n) →", size="sm", elem_id="curate-next")
        c["goto"] = lenient(gr.Number(None, label="Go to image #", precision=0, elem_id="curate-goto",
                                      min_width=100))
    with gr.Tabs():
        with gr.Tab("Side by side"):
            with gr.Row():
                c["image"] = gr.Image(label="Image", type="filepath", interactive=False, height=360,
                                      elem_id="curate-image")
                c["label"] = gr.Image(label="Label (grey: ignored)", type="filepath", interactive=False, height=360,
                                      elem_id="curate-label")
        with gr.Tab("Slider"):
            c["slider"] = gr.ImageSlider(label="Image | label", type="filepath", height=360, elem_id="curate-slider")
        with gr.Tab("3D"):
            c["cloud"] = gr.Model3D(label="Point cloud of the label", elem_id="curate-cloud")
            c["cloud_note"] = gr.Markdown(elem_id="curate-cloud-note")
    return c


def _tools_panel() -> dict:
    c = {}
    with gr.Tab("Correct"):
        c["editor"] = gr.ImageEditor(label="Paint the region (brush), then apply a tool", type="numpy",
                                     format="png", sources=(), transforms=(), layers=False,
                                     brush=gr.Brush(colors=["rgba(255, 0, 255, 0.6)"], color_mode="fixed"),
                                     elem_id="curate-editor")
        with gr.Row():
            c["tool"] = gr.Radio([(desc, key) for key, (desc, _) in TOOLS.items()], value="ignore_mask",
                                 label="Tool", elem_id="curate-tool", scale=3)
            with gr.Column(scale=1):
                sigma = RANGES["sigma"]
                c["sigma"] = lenient(gr.Number(2.0, label="Smoothing sigma (pixels)", minimum=sigma.low,
                                               maximum=sigma.high, elem_id="curate-sigma"))
                c["source"] = gr.Dropdown([], label="Copy from model", elem_id="curate-source")
        c["apply"] = gr.Button("Apply to the painted region", variant="primary", elem_id="curate-apply")
    with gr.Tab("Point pairs"):
        gr.Markdown("Click point A, then point B on the image, say which is closer, and add the pair. "
                    "Green: the label agrees; red: flagged (the label disagrees).")
        c["pair_image"] = gr.Image(label="Click two points", type="numpy", interactive=False,
                                   elem_id="curate-pair-image")
        with gr.Row():
            c["closer"] = gr.Radio(["A", "B"], value="A", label="Which point is closer?", elem_id="curate-closer")
            c["add_pair"] = gr.Button("Add pair", elem_id="curate-add-pair")
        c["pair_info"] = gr.Markdown(elem_id="curate-pair-info")
        c["pairs"] = gr.Dataframe(headers=PAIR_HEADERS, interactive=False, elem_id="curate-pairs")
        with gr.Row():
            c["pair_id"] = lenient(gr.Number(None, label="Pair to delete", precision=0, elem_id="curate-pair-id"))
            c["delete_pair"] = gr.Button("Delete pair", elem_id="curate-delete-pair")
    with gr.Tab("History"):
        c["history"] = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="curate-history")
        with gr.Row():
            c["undo"] = gr.Button("Undo", elem_id="curate-undo")
            c["redo"] = gr.Button("Redo", elem_id="curate-redo")
    return c


def _export_panel() -> tuple:
    with gr.Accordion("Export the curated set", open=False):
        statuses = gr.CheckboxGroup(["accepted", "corrected", "pending", "rejected"], value=["accepted", "corrected"],
                                    label="Images with status", elem_id="curate-export-status")
        button = gr.Button("Export (zip)", elem_id="curate-export")
        out = gr.File(label="Dataset zip", elem_id="curate-export-file")
        note = gr.Markdown(elem_id="curate-export-note")
    return statuses, button, out, note


def build(services, banner_box: gr.HTML) -> CurateHandlers:
    h = CurateHandlers(services.curation, services.get("depth"))
    sel, page_ids, pending, job_seen = gr.State({}), gr.State([]), gr.State([]), gr.State()
    job_id = lenient(gr.Number(None, precision=0, visible=False, elem_id="curate-job-id"))   # an API argument
    cursors = gr.State({})                     # the shown page's keyset cursors (next / previous page)
    timer = gr.Timer(JOB_POLL_S, active=False)
    with gr.Column(elem_id=PANEL_ID):
        gr.HTML("", js_on_load=KEYBOARD_JS, elem_id="curate-keys", container=False, padding=False)
        files, up, folder, go, report, rate = _import_panel(h, services.curation.import_root)
        gt = _ground_truth_panel(services.curation.import_root)
        teacher, start, cancel, resume, job_box = _job_panel(h)
        with gr.Row():
            with gr.Column(scale=2):
                status, sort, counts, gallery, prev_page, page, next_page, page_info, clip = _gallery_panel()
            with gr.Column(scale=3):
                v = _view_panel()
        with gr.Tabs():
            t = _tools_panel()
        ex_status, ex_button, ex_file, ex_note = _export_panel()

    parts = {**v, **t, "sel": sel, "pending": pending}
    view_out = [parts[name] for name in VIEW_FIELDS]
    gal_in, gal_out = [status, sort, page, clip], [gallery, page_ids, counts, page_info, page, cursors]
    clips_refresh = dict(fn=h.clip_choices, inputs=[clip], outputs=[clip], api_visibility="private")
    refresh = dict(fn=h.gallery, inputs=gal_in, outputs=gal_out, api_visibility="private")

    root = gr.context.Context.root_block
    if root is not None:
        root.load(h.gallery, gal_in, gal_out, api_visibility="private").then(
            h.poll_job, [job_id], [job_id, job_box, timer], api_visibility="private").then(**clips_refresh)
    gr.on([status.change, sort.change, clip.input], h.first_page, [status, sort, clip], gal_out,
          api_visibility="private")
    page.submit(h.gallery, gal_in, gal_out, api_name="curate_gallery")
    prev_page.click(partial(h.turn_page, delta=-1), [*gal_in, cursors], gal_out, api_visibility="private")
    next_page.click(partial(h.turn_page, delta=1), [*gal_in, cursors], gal_out, api_visibility="private")

    reload = dict(fn=h.reload, inputs=[sel], outputs=view_out, api_visibility="private")   # after a refusal
    gallery.select(h.select, [page_ids], view_out, api_visibility="private")
    v["goto"].submit(h.show, [v["goto"]], view_out, api_name="curate_open").failure(**reload)
    v["next"].click(partial(h.step, delta=1), [sel, page_ids], view_out, api_name="curate_next")
    v["prev"].click(partial(h.step, delta=-1), [sel, page_ids], view_out, api_name="curate_prev")
    for key, st in (("accept", "accepted"), ("reject", "rejected")):
        event = v[key].click(partial(h.set_status, status=st), [sel, page_ids], view_out, api_name=f"curate_{key}")
        event.then(**refresh)
        event.failure(**reload)
    edits = [
        t["apply"].click(h.apply_tool, [sel, t["tool"], t["editor"], t["sigma"], t["source"]], view_out,
                         api_name="curate_apply"),
        t["undo"].click(h.undo, [sel], view_out, api_name="curate_undo"),
        t["redo"].click(h.redo, [sel], view_out, api_name="curate_redo"),
    ]
    for event in edits:
        event.then(**refresh)
        event.failure(**reload)
    t["pair_image"].select(h.click_point, [sel, pending], [t["pair_image"], pending, t["pair_info"]],
                           api_visibility="private")
    t["add_pair"].click(h.add_pair, [sel, pending, t["closer"]], view_out, api_name="curate_add_pair").failure(**reload)
    t["delete_pair"].click(h.delete_pair, [sel, t["pair_id"]], view_out,
                           api_name="curate_delete_pair").failure(**reload)

    up.click(h.import_files, [files, rate], [report], api_name="curate_import").then(**refresh).then(**clips_refresh)
    go.click(h.import_folder, [folder, rate], [report], api_name="curate_import_folder").then(**refresh).then(
        **clips_refresh)
    gt["go"].click(h.import_ground_truth, [gt["folder"], gt["kind"], gt["source"], gt["scale"]], [gt["report"]],
                   api_name="curate_import_ground_truth").then(**refresh)
    job_out = [job_id, job_box, timer]
    start.click(h.start_job, [teacher], job_out, api_name="curate_pseudo_label")
    cancel.click(h.cancel_job, [job_id], job_out, api_name="curate_cancel")
    resume.click(h.resume_job, [job_id], job_out, api_name="curate_resume")
    timer.tick(h.poll_and_refresh, [job_id, job_seen, *gal_in], [*job_out, job_seen, *gal_out],
               api_visibility="private", queue=False)
    job_box.click(h.poll_job, [job_id], job_out, api_name="curate_job")     # also: click the box to refresh
    ex_button.click(h.export, [ex_status], [ex_file, ex_note], api_name="curate_export")
    return h
