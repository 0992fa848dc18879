"""The curate tab's event handlers (callable without a browser); layout lives in curate_tab.py.

`CurateHandlers(curation, depth=None)`: `curation` is a pipeline.curation_service.CurationService,
`depth` the DepthService whose model choices are the teachers. Every handler that changes a
label passes the revision the page showed (`sel["head_id"]`); when someone saved since, the
store's "changed since you opened it" message is shown as a warning and the page reloads the
current label instead of overwriting it.
"""
from __future__ import annotations

import html

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from pipeline.curation_service import TOOLS
from pipeline.errors import StudioError
from pipeline.store import StaleRevisionError

STATUS_FILTERS = ("all", "pending", "accepted", "rejected", "corrected")
SORT_CHOICES = {"confidence, worst first": ("confidence", False), "confidence, best first": ("confidence", True),
                "name": ("name", False), "newest first": ("date", True)}
PAGE_SIZE = 24
HISTORY_HEADERS = ["#", "tool", "author", "time (UTC)", "head", "note"]
PAIR_HEADERS = ["pair", "A (x, y)", "B (x, y)", "closer", "label agrees"]
STALE_SUFFIX = " The page now shows the current label."
VIEW_FIELDS = ("sel", "header", "image", "label", "slider", "cloud", "cloud_note", "editor", "history",
               "pair_image", "pairs", "pending", "source", "pair_info")     # the outputs of every view handler


def unchanged(title: str, message: str) -> tuple:
    """A user error in a view handler: a warning, and every view output left as it is.

    (A gr.Error would put an error badge on all fourteen outputs and blank the images.)
    """
    gr.Warning(message, title=title)
    return tuple(gr.skip() for _ in VIEW_FIELDS)


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
    text = (f"<p><b>Job {info.id}: {html.escape(info.status)}</b> {bar}{info.step}/{total or '?'}"
            f"{rate}{eta}</p>")
    if info.message:
        text += f"<p>{html.escape(info.message)}</p>"
    if info.error:
        text += f"<p><b>Error:</b> {html.escape(info.error)}</p>"
    if info.log_tail:
        text += "<pre>" + html.escape("\n".join(info.log_tail[-6:])) + "</pre>"
    return text


def import_markdown(report) -> str:
    lines = [f"**Import:** {report.summary()}"]
    lines += [f"- duplicate: `{d.name}` is image #{d.image_id} (`{d.existing_name}`)" for d in report.duplicates[:20]]
    lines += [f"- rejected: `{name}`: {why}" for name, why in report.rejected[:50]]
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

    def show(self, image_id) -> tuple:
        """Every view of one image at its head (the order of curate_tab.VIEW_OUTPUTS)."""
        if image_id in (None, ""):
            return self.blank()
        try:
            view = self.curation.open(int(image_id))
        except StudioError as e:
            return unchanged("Cannot open the image", str(e))
        rec, head = view.image, view.head
        conf = "–" if rec.confidence is None else f"{rec.confidence:.3f}"
        rev = f"revision {head.number} ({head.tool} by {head.author})" if head else "no label yet"
        header = f"### #{rec.id} {rec.name}\n**{rec.status}** · confidence {conf} · {rev} · {rec.width}×{rec.height}"
        image, label = str(view.image_file), (str(view.label_file) if view.label_file else None)
        rows = [[r.number, r.tool, r.author, r.created_at.replace("T", " ")[:19], "◀ head" if r.id == view.head_id else "",
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
        """Run a label change; on a stale head warn and reload; user errors become gr.Error."""
        image_id = (sel or {}).get("image_id")
        if image_id is None:
            return unchanged("No image selected", "select an image in the gallery first")
        try:
            action(image_id, sel.get("head_id"))
        except StaleRevisionError as e:
            gr.Warning(str(e) + STALE_SUFFIX, title="Changed since you opened it")
            return self.show(image_id)
        except StudioError as e:
            return unchanged("Cannot apply", str(e))
        return self.show(then_show if then_show is not None else image_id)

    def apply_tool(self, sel, tool, editor, sigma, source_model, request: gr.Request = None):
        """Apply a correction tool to the painted region: one new revision, shown in 2D and 3D."""
        if tool not in TOOLS:
            return unchanged("Cannot apply", f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")

        def act(image_id, head_id):
            rec = self.curation.store.get_image(image_id)
            mask = mask_from_editor(editor, (rec.height, rec.width))
            self.curation.apply_tool(image_id, tool, mask, expected_head=head_id, author=author_of(request),
                                     sigma=sigma, source_model=source_model)
        return self._change(sel, act)

    def set_status(self, sel, page_ids, status: str, request: gr.Request = None):
        """Accept / reject the whole label, then move to the next image of the page."""
        current = (sel or {}).get("image_id")
        nxt = None
        if page_ids and current in page_ids:
            nxt = page_ids[min(page_ids.index(current) + 1, len(page_ids) - 1)]
        return self._change(sel, lambda i, h: self.curation.set_status(
            i, status, expected_head=h, author=author_of(request)), then_show=nxt)

    def undo(self, sel, request: gr.Request = None):
        return self._change(sel, lambda i, h: self.curation.undo(i, expected_head=h, author=author_of(request)))

    def redo(self, sel, request: gr.Request = None):
        return self._change(sel, lambda i, h: self.curation.redo(i, expected_head=h, author=author_of(request)))

    # ---- point pairs ---------------------------------------------------------------------
    def click_point(self, sel, pending, evt: gr.SelectData):
        """A click on the pair image: first point A, second B, a third starts over."""
        if not sel or sel.get("image_id") is None:
            raise gr.Error("select an image in the gallery first", print_exception=False)
        pts = list(pending or [])
        pts = ([] if len(pts) >= 2 else pts) + [[int(evt.index[0]), int(evt.index[1])]]
        view = self.curation.open(sel["image_id"])
        info = f"A = {tuple(pts[0])}" + (f", B = {tuple(pts[1])}: say which is closer, then add the pair"
                                         if len(pts) == 2 else ": now click point B")
        return self._pair_picture(view, pts), pts, info

    def add_pair(self, sel, pending, closer, request: gr.Request = None):
        if not pending or len(pending) != 2:
            return unchanged("Two points needed", "click two points on the image first (A, then B)")
        letter = "a" if str(closer).upper().startswith("A") else "b"
        return self._change(sel, lambda i, h: self.curation.add_point_pair(
            i, tuple(pending[0]), tuple(pending[1]), letter, author=author_of(request)))

    def delete_pair(self, sel, pair_id, request: gr.Request = None):
        if not pair_id:
            return unchanged("No pair given", "type the number of the pair to delete (first column of the table)")
        return self._change(sel, lambda i, h: self.curation.delete_point_pair(i, int(pair_id), author=author_of(request)))

    # ---- gallery -------------------------------------------------------------------------
    def gallery(self, status, sort, page):
        """(gallery items, page ids, counts, page text, page number, cursors) for one gallery page.

        A page number is a jump (by position); `turn_page` moves by the cursors kept in `cursors`."""
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        page = max(1, int(page or 1))
        try:
            g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                      limit=PAGE_SIZE)
            if not g.items and page > 1:                 # the filter shrank: back to the last page
                page = max(1, -(-g.total // PAGE_SIZE))
                g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                          limit=PAGE_SIZE)
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return self._gallery_out(g, status, sort, page)

    def _gallery_out(self, g, status, sort, page: int) -> tuple:
        counts = " · ".join(f"{k}: **{v}**" for k, v in g.counts.items())
        pages = max(1, -(-g.total // PAGE_SIZE))
        cursors = {"view": [status, sort], "page": page, "next": g.next_cursor, "prev": g.prev_cursor}
        return ([(str(p), c) for p, c in g.items], g.ids, counts, f"page {page} of {pages} ({g.total} images)",
                page, cursors)

    def turn_page(self, status, sort, page, cursors, delta: int):
        """Next (+1) / previous (-1) page from the shown page's cursors (keyset); a jump otherwise."""
        page = max(1, int(page or 1))
        cur = cursors or {}
        if cur.get("view") != [status, sort] or cur.get("page") != page:
            return self.gallery(status, sort, page + delta)        # no cursors for this page: a jump
        token = cur.get("next" if delta > 0 else "prev")
        if token is None:
            return self.gallery(status, sort, page)                # already on the last / first page
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        try:
            g = self.curation.gallery(status, sort=key, descending=desc, limit=PAGE_SIZE,
                                      **({"after": token} if delta > 0 else {"before": token}))
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False) from None
        page = page + 1 if delta > 0 else (page - 1 if g.prev_cursor is not None else 1)
        return self._gallery_out(g, status, sort, max(1, page))

    # ---- import, jobs, export ------------------------------------------------------------
    def import_files(self, files, request: gr.Request = None) -> str:
        try:
            return import_markdown(self.curation.import_uploads(files or [], author=author_of(request)))
        except StudioError as e:
            raise gr.Error(str(e), title="Cannot import", print_exception=False) from None

    def import_folder(self, folder, request: gr.Request = None) -> str:
        try:
            return import_markdown(self.curation.import_folder(folder or "", author=author_of(request)))
        except StudioError as e:
            raise gr.Error(str(e), title="Cannot import", print_exception=False) from None

    def teacher_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.key) for c in self.depth.choices()] if self.depth is not None else []

    def start_job(self, teacher, request: gr.Request = None):
        """Start pseudo-labelling in the background; returns (job id, progress HTML, timer on)."""
        try:
            source = self.depth.choice(teacher).source if self.depth is not None else teacher
            job_id = self.curation.start_pseudo_label(source, author=author_of(request))
            info = self.curation.job(job_id)
        except StudioError as e:
            raise gr.Error(str(e), title="Cannot start pseudo-labelling", print_exception=False) from None
        return job_id, job_html(info), gr.update(active=True)

    def poll_job(self, job_id):
        """Timer tick: the job's progress; the timer stops when the job has finished."""
        info = self.curation.job(int(job_id) if job_id else None)
        running = info is not None and not info.finished
        return (info.id if info else None), job_html(info), gr.update(active=running)

    def poll_and_refresh(self, job_id, seen, status, sort, page):
        """Timer tick for the page: progress, and the gallery only when the job wrote something new.

        `seen` is the (job id, step, status) of the previous tick; unchanged -> the gallery is
        left alone, so a reviewer's page does not re-render every second.
        """
        job_id, text, timer = self.poll_job(job_id)
        info = self.curation.job(job_id) if job_id else None
        now = [info.id, info.step, info.status] if info else None
        if now == seen:
            return (job_id, text, timer, seen) + tuple(gr.skip() for _ in range(6))
        return (job_id, text, timer, now) + self.gallery(status, sort, page)

    def cancel_job(self, job_id, request: gr.Request = None):
        if not job_id:
            raise gr.Error("no job to cancel", print_exception=False)
        try:
            info = self.curation.cancel_job(int(job_id), author=author_of(request))
        except StudioError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return info.id, job_html(info), gr.update(active=True)

    def resume_job(self, job_id, request: gr.Request = None):
        if not job_id:
            raise gr.Error("no job to resume", print_exception=False)
        try:
            new_id = self.curation.resume_job(int(job_id), author=author_of(request))
        except StudioError as e:
            raise gr.Error(str(e), title="Cannot resume", print_exception=False) from None
        return new_id, job_html(self.curation.job(new_id)), gr.update(active=True)

    def export(self, statuses):
        try:
            result = self.curation.export(tuple(statuses or ("accepted", "corrected")))
        except StudioError as e:
            raise gr.Error(str(e), title="Cannot export", print_exception=False) from None
        return str(result.zip_path), f"**Exported** {result.report.summary()}"
