"""The Curate tab's handlers for the selected image: its views, the selection, correction tools,
accept / reject, undo / redo, point pairs and calibration. Callable without a browser (tests).

Session state (gr.State): `sel` {"image_id", "head_id" (the revision the page shows: every change
passes it, and the store refuses a stale one), "scale" (view pixels per image pixel), "opacity"};
`selection` (bool (H, W) mask or None: what a tool applies to); `clicks` (up to two points [h, w]
for a point pair or a calibration reference); `refs` (the calibration references so far).
A click on the view arrives as (x, y) in the view's pixels: `_clicked` turns it into [h, w] of the
image, the one place the page's convention meets the pipeline's.
"""
from __future__ import annotations

import gradio as gr

from pipeline.services.curation_service import Mark

from .curate_text import (
    calibration_markdown,
    header_markdown,
    history_rows,
    pair_rows,
    reference_rows,
    selection_markdown,
)
from .errors import refuse, user_errors

VIEW_FIELDS = ("sel", "header", "view", "editor", "slider", "cloud", "cloud_note", "history", "pairs", "pair_info",
               "source", "undo", "redo", "selection", "clicks", "selection_info", "tags", "refs", "refs_table")
SELECT_FIELDS = ("view", "editor", "selection", "clicks", "selection_info")     # outputs of a selection change
CLICK_MODES = ("wand_depth", "wand_plane", "superpixel", "sam", "points")
PENDING, CALIBRATION = (255, 220, 0), (0, 220, 255)


def author_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "studio") if request is not None else "studio"


def _image_id(sel) -> int:
    image_id = (sel or {}).get("image_id")
    if image_id is None:
        refuse("select an image in the gallery first")
    return image_id


class ImageHandlers:
    def __init__(self, curation):
        self.curation = curation

    # ---- views -------------------------------------------------------------------------------
    def blank(self) -> tuple:
        empty = gr.update(value=[])
        return ({}, "Select an image in the gallery (keys: **a** accept, **r** reject, **n**/→ next, **p**/← previous, "
                    "**u** undo, **y** redo, **c** clear the selection, **[** **]** brush size).",
                None, None, None, None, "", empty, empty, "", gr.update(choices=[], value=None),
                gr.update(interactive=False), gr.update(interactive=False), None, [], "", "", [], empty)

    def _picture(self, sel, selection=None, clicks=None):
        """(the view's picture, the brush editor's value, sel with the view's scale)."""
        marks = [Mark(list(clicks), PENDING, ("A", "B"))] if clicks else []
        view = self.curation.view(sel["image_id"], opacity=sel.get("opacity", 0.5), selection=selection, marks=marks)
        plain = self.curation.view(sel["image_id"], opacity=sel.get("opacity", 0.5), selection=selection, pairs=False)
        return view.picture, {"background": plain.picture, "layers": [], "composite": None}, {**sel, "scale": view.scale}

    @user_errors("Cannot open the image")
    def show(self, image_id, opacity=None, refs=None) -> tuple:
        """Every view of one image at its head (the order of VIEW_FIELDS); the selection starts empty."""
        if image_id in (None, ""):
            return self.blank()
        view = self.curation.open(image_id)
        rec, head = view.image, view.head
        sel = {"image_id": rec.id, "head_id": view.head_id, "opacity": 0.5 if opacity is None else float(opacity)}
        picture, editor, sel = self._picture(sel)
        image, label = str(view.image_file), (str(view.label_file) if view.label_file else None)
        others = [m for m in view.prediction_models if not head or m != head.model_id] or view.prediction_models
        flagged = sum(p.flagged for p in view.pairs)
        pair_info = f"{len(view.pairs)} pair(s), {flagged} flagged (the label disagrees)" if view.pairs else ""
        refs = list(refs or []) if (refs and refs[0].get("image_id") == rec.id) else []
        return (sel, header_markdown(view), picture, editor, (image, label) if label else None,
                str(view.cloud_file) if view.cloud_file else None, view.cloud_note,
                gr.update(value=history_rows(view)), gr.update(value=pair_rows(view.pairs)), pair_info,
                gr.update(choices=others, value=others[0] if others else None),
                gr.update(interactive=view.history.can_undo), gr.update(interactive=view.history.can_redo),
                None, [], selection_markdown(None), ", ".join(view.tags), refs,
                gr.update(value=reference_rows(refs)))

    def reload(self, sel, refs=None):
        """After a refused change: the selected image's current views (someone else may have saved)."""
        return self.show((sel or {}).get("image_id"), (sel or {}).get("opacity"), refs)

    def select(self, page_ids, sel, evt: gr.SelectData):
        image_id = page_ids[evt.index] if page_ids and evt.index is not None else None
        return self.show(image_id, (sel or {}).get("opacity"))

    def step(self, sel, page_ids, delta: int):
        """Next (+1) / previous (-1) image of the gallery page."""
        opacity = (sel or {}).get("opacity")
        if not page_ids:
            return self.show(sel.get("image_id") if sel else None, opacity)
        current = (sel or {}).get("image_id")
        i = page_ids.index(current) + delta if current in page_ids else 0
        return self.show(page_ids[min(max(i, 0), len(page_ids) - 1)], opacity)

    @user_errors("Cannot show the label")
    def set_opacity(self, sel, opacity, selection, clicks):
        """The label's opacity over the image changed: the view and the brush editor again."""
        if not sel or sel.get("image_id") is None:
            return gr.skip(), gr.skip(), sel
        picture, editor, sel = self._picture({**sel, "opacity": float(opacity)}, selection, clicks)
        return picture, editor, sel

    # ---- selection ---------------------------------------------------------------------------
    def _selection_out(self, sel, selection, clicks) -> tuple:
        picture, editor, _ = self._picture(sel, selection, clicks)
        return picture, editor, selection, clicks, selection_markdown(selection)

    def _clicked(self, sel, evt: gr.SelectData) -> list[int]:
        """The click's (x, y) in the view's pixels -> [h, w] in the image's."""
        scale = float(sel.get("scale") or 1.0)
        x, y = evt.index
        return [int(y / scale), int(x / scale)]

    @user_errors("Cannot select")
    def click(self, sel, mode, operation, tolerance, method, detail, selection, clicks, editor,
              evt: gr.SelectData, progress=gr.Progress()):
        """A click on the view: grow a selection (wand, superpixel, SAM) or collect a point (pairs,
        calibration). Strokes painted in the brush editor join the selection first."""
        image_id = _image_id(sel)
        if mode in ("superpixel", "sam"):
            progress(0.1, desc="segmenting the image" if mode == "superpixel" else "Segment Anything")
        point = self._clicked(sel, evt)
        selection = self._absorb(image_id, selection, editor, operation)
        if mode == "points":
            clicks = ([] if len(clicks or []) >= 2 else list(clicks or [])) + [point]
        else:
            selection = self.curation.select(image_id, point, mode=mode, operation=operation, current=selection,
                                             tolerance=tolerance, method=method, detail=detail)
        return self._selection_out(sel, selection, clicks)

    @user_errors("Cannot select")
    def select_at(self, sel, h, w, mode, operation, tolerance, method, detail, selection, clicks):
        """`/curate_select_at`: a click given as the image's pixel [h, w] (for API clients)."""
        image_id = _image_id(sel)
        if h in (None, "") or w in (None, ""):
            refuse("give the pixel as h (row) and w (column)")
        point = [h, w]
        if mode == "points":
            clicks = ([] if len(clicks or []) >= 2 else list(clicks or [])) + [[int(h), int(w)]]
        else:
            selection = self.curation.select(image_id, point, mode=mode, operation=operation, current=selection,
                                             tolerance=tolerance, method=method, detail=detail)
        return self._selection_out(sel, selection, clicks)

    def _absorb(self, image_id, selection, editor, operation):
        layers = (editor or {}).get("layers") or []
        if not layers:
            return selection
        erase = operation == "subtract"
        return self.curation.selection_of(image_id, selection=selection, layers=None if erase else layers,
                                          erase_layers=layers if erase else None)

    @user_errors("Cannot change the selection")
    def absorb_strokes(self, sel, operation, selection, clicks, editor):
        """Brush strokes -> the selection (added, or removed with 'subtract'), shown in both views."""
        return self._selection_out(sel, self._absorb(_image_id(sel), selection, editor, operation), clicks)

    @user_errors("Cannot change the selection")
    def clear_selection(self, sel, clicks):
        _image_id(sel)
        return self._selection_out(sel, None, [])

    @user_errors("Cannot snap the selection")
    def snap(self, sel, method, detail, operation, selection, clicks, editor, progress=gr.Progress()):
        image_id = _image_id(sel)
        progress(0.1, desc="superpixels")
        selection = self.curation.snap_selection(image_id, self._absorb(image_id, selection, editor, operation),
                                                 method=method, detail=detail)
        return self._selection_out(sel, selection, clicks)

    # ---- label changes -------------------------------------------------------------------------
    def _change(self, sel, action, *, then_show=None, refs=None):
        """Run a label change, then show the result. A stale head is refused first (a read), then
        whatever the change itself refuses (an empty selection, a value out of range, ...)."""
        image_id = _image_id(sel)
        self.curation.check_head(image_id, sel.get("head_id"))
        action(image_id, sel.get("head_id"))
        return self.show(then_show if then_show is not None else image_id, sel.get("opacity"), refs)

    @user_errors("Cannot apply")
    def apply_tool(self, sel, tool, editor, sigma, source_model, operation, selection, request: gr.Request = None,
                   progress=gr.Progress()):
        """Apply a correction tool to the selection (+ brush strokes): one new revision, shown at once."""
        progress(0.1, desc=f"{tool}")

        def act(image_id, head_id):
            region = self.curation.selection_of(image_id, selection=selection)
            region = self._absorb(image_id, region, editor, operation)      # nothing selected: the tool says so
            self.curation.apply_tool(image_id, tool, region, expected_head=head_id, author=author_of(request),
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

    @user_errors("Cannot tag")
    def set_tags(self, sel, tags_text, request: gr.Request = None):
        """The image's tags become the comma-separated list typed (added and removed as needed)."""
        image_id = _image_id(sel)
        want = [t.strip() for t in str(tags_text or "").split(",") if t.strip()]
        have = self.curation.open(image_id).tags
        if [t for t in have if t not in want]:
            self.curation.tag([image_id], [t for t in have if t not in want], remove=True, author=author_of(request))
        if [t for t in want if t not in have]:
            self.curation.tag([image_id], [t for t in want if t not in have], author=author_of(request))
        return ", ".join(self.curation.open(image_id).tags)

    # ---- point pairs ---------------------------------------------------------------------------
    @user_errors("Cannot add the pair")
    def add_pair(self, sel, clicks, closer, request: gr.Request = None):
        """The two points clicked (mode 'points') as a pair; `closer` 'A' or 'B'."""
        if not clicks or len(clicks) != 2:
            refuse("click two points on the image first (Click does: points), A then B")
        which = 1 if str(closer).upper().startswith("A") else 2
        return self._change(sel, lambda i, h: self.curation.add_point_pair(
            i, clicks[0], clicks[1], which, author=author_of(request)))

    @user_errors("Cannot delete the pair")
    def delete_pair(self, sel, pair_id, request: gr.Request = None):
        if pair_id in (None, ""):
            refuse("type the number of the pair to delete (first column of the table)")
        return self._change(sel, lambda i, h: self.curation.delete_point_pair(i, pair_id, author=author_of(request)))

    # ---- calibration ---------------------------------------------------------------------------
    @user_errors("Cannot add the reference")
    def add_reference(self, sel, kind, metres, clicks, selection, refs):
        """The clicked points or the selection as one calibration reference (right angle: the first
        press keeps the selection as the first plane, the second adds the pair of planes)."""
        image_id = _image_id(sel)
        refs = [r for r in (refs or []) if r.get("image_id") == image_id]
        ref = {"image_id": image_id, "type": kind}
        if kind == "distance":
            if not clicks or len(clicks) != 2:
                refuse("click the two points (Click does: points), then add the distance between them")
            ref.update(a=clicks[0], b=clicks[1], metres=metres)
        elif kind == "depth_point":
            if not clicks:
                refuse("click the point (Click does: points) whose distance from the camera you know")
            ref.update(type="depth", point=clicks[-1], metres=metres)
        elif selection is None:
            refuse("select the region first (magic wand or brush), then add it")
        elif kind in ("depth_region", "camera_height"):
            ref.update(type="depth" if kind == "depth_region" else kind, region=selection, metres=metres)
        else:
            half = next((r for r in refs if r["type"] == "right_angle" and r.get("region_b") is None), None)
            if half is None:
                ref.update(region=selection, region_b=None)
            else:
                half["region_b"] = selection
                ref = None
        refs = refs + ([ref] if ref is not None else [])
        return refs, reference_rows(refs), *self._selection_out(sel, None, [])

    def clear_references(self):
        return [], [], ""

    @user_errors("Cannot calibrate")
    def calibrate(self, sel, refs, focal_px, zero_shift, request: gr.Request = None, progress=gr.Progress()):
        """Calibrate the head label with the references: a new metric revision, or the refusal saying
        what else is needed (nothing saved)."""
        image_id = _image_id(sel)
        usable = [{k: v for k, v in r.items() if k != "image_id"} for r in refs or [] if r.get("image_id") == image_id]
        if any(r["type"] == "right_angle" and r.get("region_b") is None for r in usable):
            refuse("the right angle needs its second plane: select it and press 'Add reference' again")
        progress(0.2, desc="calibrating")
        done = self.curation.calibrate(image_id, usable, expected_head=sel.get("head_id"), focal_px=focal_px,
                                       assume_zero_shift=bool(zero_shift), author=author_of(request))
        return (*self.show(image_id, sel.get("opacity"), []), calibration_markdown(done))
