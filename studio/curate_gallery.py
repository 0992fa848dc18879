"""The Curate tab's gallery handlers: filters (status, clip, name, tag, confidence range), keyset pages,
counts, the confidence histogram, and decisions on many images (ticked, or every match of the filter).

Every gallery handler returns GALLERY_FIELDS: (items, page ids, counts, page text, page number,
cursors, the bulk selection's choices, histogram). The filter is FILTER_FIELDS, in that order.
"""
from __future__ import annotations

import gradio as gr

from pipeline.services.curation_service import RANGES

from .curate_image import author_of
from .curate_text import changes_markdown, histogram_markdown
from .errors import refuse, user_errors
from .text import md

STATUS_FILTERS = ("all", "pending", "accepted", "rejected", "corrected")
SORT_CHOICES = {"confidence, worst first": ("confidence", False), "confidence, best first": ("confidence", True),
                "name": ("name", False), "newest first": ("date", True), "frame time (videos)": ("time", False)}
PAGE_SIZE = 24
ALL_CLIPS = ""                                    # the clip filter's value for "every image"
ALL_TAGS = ""
FILTER_FIELDS = ("status", "sort", "page", "clip", "name", "tag", "min_conf", "max_conf")
GALLERY_FIELDS = ("gallery", "page_ids", "counts", "page_info", "page", "cursors", "ticked", "histogram")


def name_glob(text) -> str | None:
    """What the name box holds as a glob: a plain word matches anywhere in the name ('kitchen' -> '*kitchen*')."""
    text = str(text or "").strip()
    if not text:
        return None
    return text if any(c in text for c in "*?[") else f"*{text}*"


class GalleryHandlers:
    def __init__(self, curation):
        self.curation = curation

    def _filters(self, clip, name, tag, min_conf, max_conf) -> dict:
        return {"clip": None if clip in (None, "", ALL_CLIPS) else clip, "name": name_glob(name),
                "tag": None if tag in (None, "", ALL_TAGS) else tag, "min_confidence": min_conf,
                "max_confidence": max_conf}

    @user_errors("Cannot show the gallery")
    def gallery(self, status, sort, page, clip=None, name=None, tag=None, min_conf=None, max_conf=None):
        """One gallery page (GALLERY_FIELDS). A page number is a jump (by position); `turn_page` moves
        by the cursors kept in `cursors`."""
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        page = RANGES["page"].check(page or 1)
        flt = self._filters(clip, name, tag, min_conf, max_conf)
        g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                  limit=PAGE_SIZE, **flt)
        if not g.items and page > 1:                 # the filter shrank: back to the last page
            page = max(1, -(-g.total // PAGE_SIZE))
            g = self.curation.gallery(status, sort=key, descending=desc, offset=(page - 1) * PAGE_SIZE,
                                      limit=PAGE_SIZE, **flt)
        return self._out(g, [status, sort, *flt.values()], status, page)

    def _out(self, g, view: list, status, page: int) -> tuple:
        counts = " · ".join(f"{k}: **{v}**" for k, v in g.counts.items())
        pages = max(1, -(-g.total // PAGE_SIZE))
        cursors = {"view": view, "page": page, "next": g.next_cursor, "prev": g.prev_cursor}
        ticks = gr.update(choices=[(c.split(" · ")[0], i) for (_, c), i in zip(g.items, g.ids, strict=True)], value=[])
        return ([(str(p), c) for p, c in g.items], g.ids, counts, f"page {page}/{pages} · {g.total} images",
                page, cursors, ticks, histogram_markdown(self.curation.histogram(status), status))

    def first_page(self, status, sort, clip=None, name=None, tag=None, min_conf=None, max_conf=None):
        return self.gallery(status, sort, 1, clip, name, tag, min_conf, max_conf)

    @user_errors("Cannot show the gallery")
    def turn_page(self, status, sort, page, clip, name, tag, min_conf, max_conf, cursors, *, delta: int):
        """Next (+1) / previous (-1) page from the shown page's cursors (keyset); a jump otherwise."""
        page = RANGES["page"].check(page or 1)
        flt = self._filters(clip, name, tag, min_conf, max_conf)
        cur = cursors or {}
        if cur.get("view") != [status, sort, *flt.values()] or cur.get("page") != page:
            return self.gallery(status, sort, max(1, page + delta), clip, name, tag, min_conf, max_conf)
        token = cur.get("next" if delta > 0 else "prev")
        if token is None:
            return self.gallery(status, sort, page, clip, name, tag, min_conf, max_conf)   # at the last / first page
        key, desc = SORT_CHOICES.get(sort, ("confidence", False))
        g = self.curation.gallery(status, sort=key, descending=desc, limit=PAGE_SIZE, **flt,
                                  **({"after": token} if delta > 0 else {"before": token}))
        page = page + 1 if delta > 0 else (page - 1 if g.prev_cursor is not None else 1)
        return self._out(g, [status, sort, *flt.values()], status, max(1, page))

    @user_errors("Cannot list the clips")
    def clip_choices(self, clip=None):
        """The clip filter's choices: every video imported (frames in the store), 'all images' first."""
        clips = self.curation.clips()
        choices = [("all images", ALL_CLIPS)] + [(f"{c} ({n} frames)", c) for c, n in clips]
        keep = clip if clip in {c for c, _ in clips} else ALL_CLIPS
        return gr.update(choices=choices, value=keep)

    @user_errors("Cannot list the tags")
    def tag_choices(self, tag=None):
        tags = self.curation.tag_choices()
        choices = [("any tag", ALL_TAGS)] + [(f"{t} ({n})", t) for t, n in tags]
        return gr.update(choices=choices, value=tag if tag in {t for t, _ in tags} else ALL_TAGS)

    # ---- decisions on many images -------------------------------------------------------------
    def tick_page(self, page_ids):
        return gr.update(value=list(page_ids or []))

    @user_errors("Cannot change the statuses")
    def bulk_ticked(self, ticked, status: str, request: gr.Request = None, progress=gr.Progress()):
        """Accept / reject the ticked images (those without a label are skipped, saying so)."""
        if not ticked:
            refuse("tick images first (or 'tick the page'), then accept or reject them")
        progress(0.1, desc=f"{status}: {len(ticked)} image(s)")
        return changes_markdown(self.curation.set_statuses(status, image_ids=ticked, author=author_of(request)))

    @user_errors("Cannot change the statuses")
    def bulk_filter(self, status_filter, clip, name, tag, min_conf, max_conf, to: str, dry_run: bool,
                    request: gr.Request = None, progress=gr.Progress()):
        """Every image matching the gallery's filter -> status `to` (dry run first: the same report)."""
        progress(0.1, desc=f"{'checking' if dry_run else 'setting'} {to}")
        flt = self._filters(clip, name, tag, min_conf, max_conf)
        st = None if status_filter in (None, "", "all") else status_filter
        changes = self.curation.set_statuses(to, status=st, author=author_of(request), dry_run=bool(dry_run), **flt)
        return changes_markdown(changes, dry_run=bool(dry_run))

    @user_errors("Cannot tag")
    def bulk_tag(self, ticked, tags, remove: bool = False, request: gr.Request = None):
        if not ticked:
            refuse("tick images first, then tag them")
        n = self.curation.tag(ticked, tags or "", remove=bool(remove), author=author_of(request))
        return f"{n} tag(s) {'removed from' if remove else 'added to'} {len(ticked)} image(s): {md(tags)}"
