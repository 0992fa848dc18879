"""The curate tab's event handlers (callable without a browser); layout lives in curate_tab.py.

`CurateHandlers(curation, depth=None)`: `curation` is a pipeline.curation_service.CurationService,
`depth` the DepthService whose model choices are the teachers. Every handler that changes a
label passes the revision the page showed (`sel["head_id"]`); when someone saved since, the
store refuses with its "changed since you opened it" message. Refusals (that one, an unknown
id, a value out of range) are raised as gr.Error by `studio.errors.user_errors`, so the page
shows a toast and an API client's call fails with the same message; the page then reloads the
current label (curate_tab chains `reload` on failure). User-supplied names shown in Markdown go
through `studio.text.md`.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from pipeline.curation_service import RANGES, TOOLS

from .errors import refuse, user_errors
from .text import html_text, md

STATUS_FILTERS = ("all", "pending", "accepted", "rejected", "corrected")
SORT_CHOICES = {"confidence, worst first": ("confidence", False), "confidence, best first": ("confidence", True),
                "name": ("name", False), "newest first": ("date", True), "frame time (videos)": ("time", False)}
PAGE_SIZE = 24
ALL_CLIPS = ""                                    # the clip filter's value for "every image"
HISTORY_HEADERS = ["#", "tool", "author", "values from", "time (UTC)", "head", "note"]
PAIR_HEADERS = ["pair", "A (x, y)", "B (x, y)", "closer", "label agrees"]
VIEW_FIELDS = ("sel", "header", "image", "label", "slider", "cloud", "cloud_note", "editor", "history",
               "pair_image", "pairs", "pending", "source", "pair_info")     # the outputs of every view handler


def author_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "studio") if request is not None else "studio"


def mask_from_editor(value, shape: tuple[int, int]) -> np.ndarray:
    """ImageEditor value (numpy layers, RGBA) -> bool (H, W): painted (alpha > 0) on any layer."""
    mask = np.zeros(shape, bool)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        painted = arr[..., 3] > 0 if arr.ndim == 3 and arr.shape[2] == 4 else arr.reshape(arr.shape[:2] + (-1,)).any(-1)
        if painted.shape != shape:       # the canvas was scaled: back to the image's pixels
            painted = np.asarray(Image.fromarray(painted).resize((shape[1], shape[0]), Image.NEAREST))
        mask |= painted
    return mask


def draw_pairs(rgb: np.ndarray, pairs, pending) -> np.ndarray:
    """The image with each pair (green: the label agrees, red: flagged) and the clicked points (yellow)."""
    img = Image.fromarray(rgb).convert("RGB")
    d = ImageDraw.Draw(img)
    r = max(3, round(min(img.size) / 80))
    for p in pairs:
        colour = (230, 40, 40) if p.flagged else (40, 200, 80)
        d.line([p.a, p.b], fill=colour, width=max(1, r // 2))
        for pt, name in ((p.a, "A"), (p.b, "B")):
            big = r * (2 if name.lower() == p.closer else 1)
            d.ellipse([pt[0] - big, pt[1] - big, pt[0] + big, pt[1] + big], outline=colour, width=2)
    for i, pt in enumerate(pending or []):
        d.ellipse([pt[0] - r, pt[1] - r, pt[0] + r, pt[1] + r], fill=(255, 220, 0))
        d.text((pt[0] + r + 2, pt[1] - r), "AB"[i], fill=(255, 220, 0))
    return np.asarray(img)


def job_html(info) -> str:
    """A job's progress as HTML (a <progress> bar, counts, rate, error and the last log lines)."""
    if info is None:
        return "<p>No pseudo-labelling job yet.</p>"
    total = info.total or 0
    bar = f"<progress value='{info.step}' max='{total}'></progress> " if total else ""
    rate = f" · {info.throughput:.2f} img/s" if info.throughput else ""
    eta = f" · about {info.eta_s:.0f} s left" if info.eta_s is not None and not info.finished else ""
    text = (f"<p><b>Job {info.id}: {html_text(info.status)}</b> {bar}{info.step}/{total or '?'}"
            f"{rate}{eta}</p>")
    if info.message:
        text += f"<p>{html_text(info.message)}</p>"
    if info.error:
        text += f"<p><b>Error:</b> {html_text(info.error)}</p>"
    if info.log_tail:
        text += "<pre>" + "\n".join(html_text(line) for line in info.log_tail[-6:]) + "</pre>"
    return text


def import_markdown(report) -> str:
    lines = [f"**Import:** {report.summary()}"]
    lines += [f"- duplicate: **{md(d.name)}** is image #{d.image_id} (**{md(d.existing_name)}**)"
              for d in report.duplicates[:20]]
    lines += [f"- rejected: **{md(name)}**: {md(why)}" for name, why in report.rejected[:50]]
    return "\n".join(lines)


class CurateHandlers:
    def __init__(self, curation, depth=None):
        self.curation = curation
        self.depth = depth

    # ---- the selected image --------------------------------------------------------------
    def blank(self) -> tuple:
        empty_df = gr.update(value=[])
        return ({}, "Select an image in the gallery (keys: **a** accept, **r** reject, **n**/→ next, "
                    "**p**/← previous).", None, None, None, None, "", None, empty_df, None, empty_df, [],
                gr.update(choices=[], value=None), "")

    @user_errors("Cannot open the image")
    def show(self, image_id) -> tuple:
        """Every view of one image at its head (the order of curate_tab.VIEW_OUTPUTS)."""
        if image_id in (None, ""):
            return self.blank()
        view = self.curation.open(image_id)
        rec, head = view.image, view.head
        conf = "–" if rec.confidence is None else f"{rec.confidence:.3f}"
        rev = f"revision {head.number} ({md(head.tool)} by {md(head.author)})" if head else "no label yet"
        header = f"### #{rec.id} {md(rec.name)}\n**{rec.status}** · confidence {conf} · {rev} · {rec.width}×{rec.height}"
        image, label = str(view.image_file), (str(view.label_file) if view.label_file else None)
        rows = [[r.number, r.tool, r.author, r.source, r.created_at.replace("T", " ")[:19], "◀ head" if r.id == view.head_id else "",
                 r.note or ""] for r in view.history.revisions]
        pairs = [[p.id, f"{p.a}", f"{p.b}", p.closer.upper(), "no (flagged)" if p.flagged else "yes"] for p in view.pairs]
        others = [m for m in view.prediction_models if not head or m != head.model_id] or view.prediction_models
        flagged = sum(p.flagged for p in view.pairs)
        pair_info = f"{len(view.pairs)} pair(s), {flagged} flagged (the label disagrees)" if view.pairs else ""
        sel = {"image_id": rec.id, "head_id": view.head_id}
        return (sel, header, image, label, (image, label) if label else None, str(view.cloud_file) if view.cloud_file
                else None, view.cloud_note, {"background": image, "layers": [], "composite": None},
                gr.update(value=rows), self._pair_picture(view, []),
                gr.update(value=pairs), [], gr.update(choices=others, value=others[0] if others else None), pair_info)

    def _pair_picture(self, view, pending):
        """The image to click points on: the cached file when there is nothing to draw (fast for big images)."""
        if not view.pairs and not pending:
            return str(view.image_file)
        return draw_pairs(self.curation.image_rgb(view.image.id), view.pairs, pending)

    def reload(self, sel):
        """After a refused change: the selected image's current views (someone else may have saved)."""
        return self.show((sel or {}).get("image_id"))

    def select(self, page_ids, evt: gr.SelectData):
        return self.show(page_ids[evt.index] if page_ids and evt.index is not None else None)

    def step(self, sel, page_ids, delta: int):
        """Next (+1) / previous (-1) image of the gallery page."""
        if not page_ids:
            return self.show(sel.get("image_id") if sel else None)
        current = (sel or {}).get("image_id")
        i = page_ids.index(current) + delta if current in page_ids else 0
        return self.show(page_ids[min(max(i, 0), len(page_ids) - 1)])

    def _change(self, sel, action, *, then_show=None):
        """Run a label change (refusals raise: a stale head, an empty region, ...), then show the result."""
        image_id = (sel or {}).get("image_id")
        if image_id is None:
            refuse("select an image in the gallery first")
        action(image_id, sel.get("head_id"))
        return self.show(then_show if then_show is not None else image_id)

    @user_errors("Cannot apply")
    def apply_tool(self, sel, tool, editor, sigma, source_model, request: gr.Request = None):
        """Apply a correction tool to the painted region: one new revision, shown in 2D and 3D."""
        if tool not in TOOLS:
            refuse(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")

        def act(image_id, head_id):
            rec = self.curation.store.get_image(image_id)
            mask = mask_from_editor(editor, (rec.height, rec.width))
            self.curation.apply_tool(image_id, tool, mask, expected_head=head_id, author=author_of(request),
                                     sigma=sigma, source_model=source_model)
        return self._change(sel, act)

    @user_errors("Cannot change the status")
    def set_status(self, sel, page_ids, status: str, request: gr.Request = None):
        """Accept / reject the whole label, then move to the next image of the page."""
        current = (sel or {}).get("image_id")
        nxt = None
        if page_ids and current in page_ids:
            nxt = page_ids[min(page_ids.index(current) + 1, len(page_ids) - 1)]
        return self._change(sel, lambda i, h: self.curation.set_status(
            i, status, expected_head=h, author=author_of(request)), then_show=nxt)

    @user_errors("Cannot undo")
    def undo(self, sel, request: gr.Request = None):
        return self._change(sel, lambda i, h: self.curation.undo(i, expected_head=h, author=author_of(request)))

    @user_errors("Cannot redo")
    def redo(self, sel, request: gr.Request = None):
        return self._change(sel, lambda i, h: self.curation.redo(i, expected_head=h, author=author_of(request)))

    # ---- point pairs ---------------------------------------------------------------------
    @user_errors("Cannot add a point")
    def click_point(self, sel, pending, evt: gr.SelectData):
        """A click on the pair image: first point A, second B, a third starts over."""
        if not sel or sel.get("image_id") is None:
            refuse("select an image in the gallery first")
        pts = list(pending or [])
        pts = ([] if len(pts) >= 2 else pts) + [[int(evt.index[0]), int(evt.index[1])]]
        view = self.curation.open(sel["image_id"])
        info = f"A = {tuple(pts[0])}" + (f", B = {tuple(pts[1])}: say which is closer, then add the pair"
                                         if len(pts) == 2 else ": now click point B")
        return self._pair_picture(view, pts), pts, info

    @user_errors("Cannot add the pair")
    def add_pair(self, sel, pending, closer, request: gr.Request = None):
        if not pending or len(pending) != 2:
            refuse("click two points on the image first (A, then B)")
        letter = "a" if str(closer).upper().startswith("A") else "b"
        return self._change(sel, lambda i, h: self.curation.add_point_pair(
            i, tuple(pending[0]), tuple(pending[1]), letter, author=author_of(request)))

    @user_errors("Cannot delete the pair")
    def delete_pair(self, sel, pair_id, request: gr.Request = None):
        if pair_id in (None, ""):
            refuse("type the number of the pair to delete (first column of the table)")
        return self._change(sel, lambda i, h: self.curation.delete_point_pair(i, pair_id, author=author_of(request)))

    # ---- gallery -------------------------------------------------------------------------
    @user_errors("Cannot show the gallery")
    def gallery(self, status, sort, page, clip=None):
        """(gallery items, page ids, counts, page text, page number, cursors) for one gallery page;
        `clip`: one video's frames.

        A page number is a jump (by position); `turn_page` moves by the cursors kept in `cursors`."""
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        page = RANGES["page"].check(page or 1)
        clip = None if clip in (None, "", ALL_CLIPS) else clip
        g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                  limit=PAGE_SIZE, clip=clip)
        if not g.items and page > 1:                 # the filter shrank: back to the last page
            page = max(1, -(-g.total // PAGE_SIZE))
            g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                      limit=PAGE_SIZE, clip=clip)
        return self._gallery_out(g, status, sort, clip, page)

    def _gallery_out(self, g, status, sort, clip, page: int) -> tuple:
        counts = " · ".join(f"{k}: **{v}**" for k, v in g.counts.items())
        pages = max(1, -(-g.total // PAGE_SIZE))
        cursors = {"view": [status, sort, clip], "page": page, "next": g.next_cursor, "prev": g.prev_cursor}
        return ([(str(p), c) for p, c in g.items], g.ids, counts, f"page {page} of {pages} ({g.total} images)",
                page, cursors)

    def first_page(self, status, sort, clip=None):
        return self.gallery(status, sort, 1, clip)

    @user_errors("Cannot show the gallery")
    def turn_page(self, status, sort, page, clip, cursors, *, delta: int):
        """Next (+1) / previous (-1) page from the shown page's cursors (keyset); a jump otherwise."""
        page = RANGES["page"].check(page or 1)
        clip = None if clip in (None, "", ALL_CLIPS) else clip
        cur = cursors or {}
        if cur.get("view") != [status, sort, clip] or cur.get("page") != page:
            return self.gallery(status, sort, max(1, page + delta), clip)     # no cursors for this page: a jump
        token = cur.get("next" if delta > 0 else "prev")
        if token is None:
            return self.gallery(status, sort, page, clip)                     # already on the last / first page
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        g = self.curation.gallery(status, sort=key, descending=desc, limit=PAGE_SIZE, clip=clip,
                                  **({"after": token} if delta > 0 else {"before": token}))
        page = page + 1 if delta > 0 else (page - 1 if g.prev_cursor is not None else 1)
        return self._gallery_out(g, status, sort, clip, max(1, page))

    def clip_choices(self, clip=None):
        """The clip filter's choices: every video imported (frames in the store), 'all images' first."""
        clips = self.curation.clips()
        choices = [("all images", ALL_CLIPS)] + [(f"{c} ({n} frames)", c) for c, n in clips]
        keep = clip if clip in {c for c, _ in clips} else ALL_CLIPS
        return gr.update(choices=choices, value=keep)

    # ---- import, jobs, export ------------------------------------------------------------
    @user_errors("Cannot import")
    def import_files(self, files, video_rate=None, request: gr.Request = None) -> str:
        return import_markdown(self.curation.import_uploads(files or [], author=author_of(request),
                                                            video_rate=video_rate or None))

    @user_errors("Cannot import")
    def import_folder(self, folder, video_rate=None, request: gr.Request = None) -> str:
        return import_markdown(self.curation.import_folder(folder or "", author=author_of(request),
                                                           video_rate=video_rate or None))

    @user_errors("Cannot import ground truth")
    def import_ground_truth(self, folder, kind, source, scale, request: gr.Request = None) -> str:
        """Measured depth / disparity from a server folder -> a report (Markdown). `scale` goes to the
        service as sent: it checks the range."""
        report = self.curation.import_ground_truth(folder or "", kind=kind or "depth", source=source or "",
                                                   scale=scale, author=author_of(request))
        lines = [f"**Ground truth:** {report.summary()}. It is stored beside the labels (the training label "
                 "does not change) and the Train tab's comparison scores against it."]
        lines += [f"- rejected: **{md(name)}**: {md(why)}" for name, why in report.rejected[:50]]
        return "\n".join(lines)

    def teacher_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.key) for c in self.depth.choices()] if self.depth is not None else []

    @user_errors("Cannot start pseudo-labelling")
    def start_job(self, teacher, request: gr.Request = None):
        """Start pseudo-labelling in the background; returns (job id, progress HTML, timer on)."""
        source = self.depth.choice(teacher).source if self.depth is not None else teacher
        job_id = self.curation.start_pseudo_label(source, author=author_of(request))
        info = self.curation.job(job_id)
        return job_id, job_html(info), gr.update(active=True)

    @user_errors("Cannot show the job")
    def poll_job(self, job_id):
        """Timer tick / `/curate_job (job id)`: the job's progress (None: the newest); the timer stops
        when the job has finished."""
        info = self.curation.job(job_id if job_id not in (None, "") else None)
        running = info is not None and not info.finished
        return (info.id if info else None), job_html(info), gr.update(active=running)

    def poll_and_refresh(self, job_id, seen, status, sort, page, clip=None):
        """Timer tick for the page: progress, and the gallery only when the job wrote something new.

        `seen` is the (job id, step, status) of the previous tick; unchanged -> the gallery is
        left alone, so a reviewer's page does not re-render every second.
        """
        job_id, text, timer = self.poll_job(job_id)
        info = self.curation.job(job_id) if job_id else None
        now = [info.id, info.step, info.status] if info else None
        if now == seen:
            return (job_id, text, timer, seen) + tuple(gr.skip() for _ in range(6))
        return (job_id, text, timer, now) + self.gallery(status, sort, page, clip)

    @user_errors("Cannot cancel")
    def cancel_job(self, job_id, request: gr.Request = None):
        """`/curate_cancel (job id)`."""
        if job_id in (None, ""):
            refuse("no job to cancel: start one, or give its id")
        info = self.curation.cancel_job(job_id, author=author_of(request))
        return info.id, job_html(info), gr.update(active=True)

    @user_errors("Cannot resume")
    def resume_job(self, job_id, request: gr.Request = None):
        """`/curate_resume (job id)` -> the new job."""
        if job_id in (None, ""):
            refuse("no job to resume: give the id of a failed or cancelled job")
        new_id = self.curation.resume_job(job_id, author=author_of(request))
        return new_id, job_html(self.curation.job(new_id)), gr.update(active=True)

    @user_errors("Cannot export")
    def export(self, statuses):
        result = self.curation.export(tuple(statuses or ("accepted", "corrected")))
        return str(result.zip_path), f"**Exported** {result.report.summary()}"
