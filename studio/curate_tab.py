"""The Curate tab: import images, pseudo-label them in the background, review, select and correct
labels, calibrate them to metres, decide on many at once. Layout: curate_layout.py; handlers:
curate_image.py (the selected image), curate_gallery.py (gallery, filters, many images),
curate_intake.py (imports, the job, export); keys: curate_js.py.

Endpoints (gradio_client `api_name`; the selected image, its selection, clicked points and
calibration references are kept in the session):
    /curate_gallery (status, sort, page, clip, name, tag, min confidence, max confidence) -> page
    /curate_open    (image id) -> the image's views (header first)
    /curate_select_at (h, w, mode, operation, tolerance, method, detail) -> the selection after a click at
                    the image's pixel [h, w] (mode 'points' collects a point for a pair or a reference)
    /curate_apply   (tool, editor, sigma, source model, operation) -> views after the new revision (the
                    session's selection + the editor's brush strokes, added or, with 'subtract', removed)
    /curate_accept, /curate_reject, /curate_next, /curate_prev, /curate_undo, /curate_redo
    /curate_add_pair (closer 'A'|'B', after two points), /curate_delete_pair (pair id)
    /curate_add_reference (kind, metres), /curate_calibrate (focal px, zero shift) -> views + report
    /curate_bulk (ticked ids, status) -> report; /curate_bulk_filter (filters..., to, dry run) -> report
    /curate_import, /curate_import_folder, /curate_import_ground_truth, /curate_export
    /curate_pseudo_label (teacher) -> (job id, progress); /curate_job, /curate_cancel, /curate_resume (job id)
A refused request (stale edit, unknown id, value out of range, an underdetermined calibration) fails with
its message (gradio_client raises AppError); the page then reloads the selected image's current views.
"""
from __future__ import annotations

from functools import partial

import gradio as gr

from . import curate_layout as layout
from .components import lenient
from .curate_gallery import FILTER_FIELDS, GALLERY_FIELDS, GalleryHandlers
from .curate_image import SELECT_FIELDS, VIEW_FIELDS, ImageHandlers
from .curate_intake import IntakeHandlers
from .curate_js import KEYBOARD_JS, PANEL_ID
from .errors import user_errors

TITLE = "Curate"
JOB_POLL_S = 1.0
PRIVATE = {"api_visibility": "private"}


class CurateHandlers:
    """The tab's three handler groups over one curation service (what the tests and scripts drive)."""

    def __init__(self, curation, depth=None):
        self.curation, self.depth = curation, depth
        self.image = ImageHandlers(curation)
        self.gallery = GalleryHandlers(curation)
        self.intake = IntakeHandlers(curation, depth)

    @user_errors("Cannot show the job")
    def poll_and_refresh(self, job_id, seen, *filters):
        """Timer tick: progress, and the gallery only when the job wrote something new (a reviewer's
        page does not re-render every second)."""
        job_id, text, timer, now, moved = self.intake.job_moved(job_id, seen)
        if not moved:
            return (job_id, text, timer, seen) + tuple(gr.skip() for _ in GALLERY_FIELDS)
        return (job_id, text, timer, now) + self.gallery.gallery(*filters)


def build(services, banner_box: gr.HTML) -> CurateHandlers:
    curation, depth = services.curation, services.depth
    h = CurateHandlers(curation, depth)
    state = {"sel": gr.State({}), "page_ids": gr.State([]), "cursors": gr.State({}), "selection": gr.State(None),
             "clicks": gr.State([]), "refs": gr.State([]), "job_seen": gr.State()}
    job_id = lenient(gr.Number(None, precision=0, visible=False, elem_id="curate-job-id"))   # an API argument
    at = [lenient(gr.Number(None, precision=0, visible=False, elem_id=f"curate-at-{k}")) for k in "hw"]
    select_at = gr.Button(visible=False, elem_id="curate-select-at")
    timer = gr.Timer(JOB_POLL_S, active=False)
    with gr.Column(elem_id=PANEL_ID):
        gr.HTML("", js_on_load=KEYBOARD_JS, elem_id="curate-keys", container=False, padding=False,
                elem_classes=["curate-hidden"])
        teachers = h.intake.teacher_choices()
        c = layout.intake_row(curation.import_root, teachers, depth.default_key if depth is not None else None,
                              depth is None)
        with gr.Row(elem_id="curate-columns", equal_height=False):
            with gr.Column(scale=2, min_width=230, elem_id="curate-side"):
                c.update(layout.side_column())
            with gr.Column(scale=5, min_width=480, elem_id="curate-main"):
                c.update(layout.main_column())
            with gr.Column(scale=3, min_width=320, elem_id="curate-tools"):
                c.update(layout.tools_column(curation.selection_modes()))
                c.update(layout.tools_accordions())
    c.update(state, job_id=job_id, timer=timer, at_h=at[0], at_w=at[1], select_at=select_at)
    _wire_gallery(h, c)
    _wire_image(h, c)
    _wire_intake(h, c)
    return h


def _fields(c: dict, names) -> list:
    return [c[n] for n in names]


def _wire_gallery(h: CurateHandlers, c: dict) -> None:
    g = h.gallery
    filters, out = _fields(c, FILTER_FIELDS), _fields(c, GALLERY_FIELDS)
    no_page = [f for f in filters if f is not c["page"]]
    refresh_tags = dict(fn=g.tag_choices, inputs=[c["tag"]], outputs=[c["tag"]], **PRIVATE)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(g.gallery, filters, out, **PRIVATE).then(
            h.intake.poll_job, [c["job_id"]], [c["job_id"], c["job_box"], c["timer"]], **PRIVATE).then(
            g.clip_choices, [c["clip"]], [c["clip"]], **PRIVATE).then(**refresh_tags).then(
            h.intake.open_panels, None, [c["import_panel"], c["job_panel"]], **PRIVATE)
    gr.on([c["status"].change, c["sort"].change, c["clip"].input, c["tag"].input, c["name"].submit,
           c["min_conf"].submit, c["max_conf"].submit], g.first_page, no_page, out, **PRIVATE)
    c["page"].submit(g.gallery, filters, out, api_name="curate_gallery")
    for button, delta in ((c["prev_page"], -1), (c["next_page"], 1)):
        button.click(partial(g.turn_page, delta=delta), [*filters, c["cursors"]], out, **PRIVATE)
    c["tick_page"].click(g.tick_page, [c["page_ids"]], [c["ticked"]], **PRIVATE)
    for button, status, name in ((c["bulk_accept"], "accepted", "curate_bulk_accept"),
                                 (c["bulk_reject"], "rejected", "curate_bulk_reject")):
        button.click(partial(g.bulk_ticked, status=status), [c["ticked"]], [c["bulk_report"]],
                     api_name=name).then(g.gallery, filters, out, **PRIVATE)
    c["filter_go"].click(g.bulk_filter, [*no_page[:1], *no_page[2:], c["filter_to"], c["filter_dry"]],
                         [c["bulk_report"]], api_name="curate_bulk_filter").then(g.gallery, filters, out, **PRIVATE)
    c["bulk_tag"].click(g.bulk_tag, [c["ticked"], c["bulk_tags"]], [c["bulk_report"]],
                        api_name="curate_bulk_tag").then(**refresh_tags)


def _wire_image(h: CurateHandlers, c: dict) -> None:
    i, g = h.image, h.gallery
    view_out, sel_out = _fields(c, VIEW_FIELDS), _fields(c, SELECT_FIELDS)
    filters, gal_out = _fields(c, FILTER_FIELDS), _fields(c, GALLERY_FIELDS)
    refresh = dict(fn=g.gallery, inputs=filters, outputs=gal_out, **PRIVATE)
    reload = dict(fn=i.reload, inputs=[c["sel"], c["refs"]], outputs=view_out, **PRIVATE)     # after a refusal
    c["gallery"].select(i.select, [c["page_ids"], c["sel"]], view_out, **PRIVATE)
    c["goto"].submit(i.show, [c["goto"], c["opacity"]], view_out, api_name="curate_open").failure(**reload)
    c["next"].click(partial(i.step, delta=1), [c["sel"], c["page_ids"]], view_out, api_name="curate_next")
    c["prev"].click(partial(i.step, delta=-1), [c["sel"], c["page_ids"]], view_out, api_name="curate_prev")
    for key, st in (("accept", "accepted"), ("reject", "rejected")):
        event = c[key].click(partial(i.set_status, status=st), [c["sel"], c["page_ids"]], view_out,
                             api_name=f"curate_{key}")
        event.then(**refresh)
        event.failure(**reload)
    sel_in = [c["selection"], c["clicks"]]
    c["opacity"].release(i.set_opacity, [c["sel"], c["opacity"], *sel_in], [c["view"], c["editor"], c["sel"]],
                         **PRIVATE)
    click_in = [c["sel"], c["mode"], c["operation"], c["tolerance"], c["method"], c["detail"], *sel_in, c["editor"]]
    c["view"].select(i.click, click_in, sel_out, **PRIVATE)
    c["select_at"].click(i.select_at, [c["sel"], c["at_h"], c["at_w"], *click_in[1:6], *sel_in], sel_out,
                         api_name="curate_select_at")
    c["clear"].click(i.clear_selection, [c["sel"], c["clicks"]], sel_out, api_name="curate_clear_selection")
    c["snap"].click(i.snap, [c["sel"], c["method"], c["detail"], c["operation"], *sel_in, c["editor"]], sel_out,
                    api_name="curate_snap")
    c["absorb"].click(i.absorb_strokes, [c["sel"], c["operation"], *sel_in, c["editor"]], sel_out, **PRIVATE)
    edits = [
        c["apply"].click(i.apply_tool, [c["sel"], c["tool"], c["editor"], c["sigma"], c["source"], c["operation"],
                                        c["selection"]], view_out, api_name="curate_apply"),
        c["undo"].click(i.undo, [c["sel"]], view_out, api_name="curate_undo"),
        c["redo"].click(i.redo, [c["sel"]], view_out, api_name="curate_redo"),
        c["add_pair"].click(i.add_pair, [c["sel"], c["clicks"], c["closer"]], view_out, api_name="curate_add_pair"),
        c["delete_pair"].click(i.delete_pair, [c["sel"], c["pair_id"]], view_out, api_name="curate_delete_pair"),
        c["calibrate"].click(i.calibrate, [c["sel"], c["refs"], c["focal"], c["zero_shift"]],
                             [*view_out, c["calib_info"]], api_name="curate_calibrate"),
    ]
    for event in edits:
        event.then(**refresh)
        event.failure(**reload)
    c["add_ref"].click(i.add_reference, [c["sel"], c["ref_kind"], c["metres"], c["clicks"], c["selection"],
                                         c["refs"]], [c["refs"], c["refs_table"], *sel_out],
                       api_name="curate_add_reference")
    c["clear_refs"].click(i.clear_references, None, [c["refs"], c["refs_table"], c["calib_info"]], **PRIVATE)
    c["save_tags"].click(i.set_tags, [c["sel"], c["tags"]], [c["tags"]], api_name="curate_tags").then(
        g.tag_choices, [c["tag"]], [c["tag"]], **PRIVATE)


def _wire_intake(h: CurateHandlers, c: dict) -> None:
    n, g = h.intake, h.gallery
    filters, gal_out = _fields(c, FILTER_FIELDS), _fields(c, GALLERY_FIELDS)
    refresh = dict(fn=g.gallery, inputs=filters, outputs=gal_out, **PRIVATE)
    clips = dict(fn=g.clip_choices, inputs=[c["clip"]], outputs=[c["clip"]], **PRIVATE)
    c["up"].click(n.import_files, [c["files"], c["rate"]], [c["report"]], api_name="curate_import").then(
        **refresh).then(**clips)
    c["go"].click(n.import_folder, [c["folder"], c["rate"]], [c["report"]], api_name="curate_import_folder").then(
        **refresh).then(**clips)
    c["gt_go"].click(n.import_ground_truth, [c["gt_folder"], c["gt_kind"], c["gt_source"], c["gt_scale"]],
                     [c["gt_report"]], api_name="curate_import_ground_truth").then(**refresh)
    job_out = [c["job_id"], c["job_box"], c["timer"]]
    c["start"].click(n.start_job, [c["teacher"]], job_out, api_name="curate_pseudo_label")
    c["cancel"].click(n.cancel_job, [c["job_id"]], job_out, api_name="curate_cancel")
    c["resume"].click(n.resume_job, [c["job_id"]], job_out, api_name="curate_resume")
    c["timer"].tick(h.poll_and_refresh, [c["job_id"], c["job_seen"], *filters], [*job_out, c["job_seen"], *gal_out],
                    queue=False, **PRIVATE)
    c["job_box"].click(n.poll_job, [c["job_id"]], job_out, api_name="curate_job")     # also: click the box to refresh
    c["ex_button"].click(n.export, [c["ex_status"]], [c["ex_file"], c["ex_note"]], api_name="curate_export")
