"""The gallery (filters, keyset pages, counts, the confidence histogram, tags) and one image's views."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...store import Histogram, History, ImageRecord, PointPair, Revision
from .common import RANGES, Base, check_id
from .render import FLAGGED, GOOD, Mark, View


@dataclass(frozen=True)
class LabelView:
    image: ImageRecord
    head: Revision | None
    history: History
    image_file: Path                     # the decoded image (PNG)
    label_file: Path | None              # colour label, ignored pixels greyed
    cloud_file: Path | None              # .ply of the label, None when no cloud can be made
    cloud_note: str
    pairs: list[PointPair]               # points [h, w]
    prediction_models: list[str]         # models with a prediction of this image (copy sources)
    tags: list[str] = field(default_factory=list)

    @property
    def head_id(self) -> int | None:
        return self.head.id if self.head else None

    @property
    def revisions(self) -> int:
        """How many label revisions the image has (ground truth, a separate root, not counted)."""
        return sum(not r.is_ground_truth for r in self.history.revisions)


@dataclass(frozen=True)
class GalleryPage:
    items: list[tuple[Path, str]]        # (thumbnail, caption)
    ids: list[int]
    total: int
    offset: int | None                   # None for a page asked for by cursor
    limit: int
    counts: dict[str, int]
    next_cursor: str | None = None       # pass as gallery(after=...) for the next page; None at the end
    prev_cursor: str | None = None       # pass as gallery(before=...) for the previous page; None at the start


def confidence_bounds(low, high) -> dict:
    """min/max_confidence for the store from what a page or a command line sent (empty: no bound)."""
    check = RANGES["confidence"].check
    return {"min_confidence": None if low in (None, "") else check(low),
            "max_confidence": None if high in (None, "") else check(high)}


def pair_marks(pairs: list[PointPair]) -> list[Mark]:
    """Each pair as a line (green: the label agrees, red: flagged), its closer point drawn larger."""
    return [Mark([p.point1, p.point2], FLAGGED if p.flagged else GOOD, (f"{p.id}A", f"{p.id}B"), p.closer - 1)
            for p in pairs]


class GalleryViews(Base):
    def gallery(self, status: str | None = None, *, sort: str = "confidence", descending: bool = False,
                offset: int = 0, limit: int = 24, after: str | None = None, before: str | None = None,
                clip: str | None = None, name: str | None = None, tag: str | None = None,
                min_confidence=None, max_confidence=None) -> GalleryPage:
        """One page of thumbnails (image | label), least confident first by default.

        Filters: status ('all' or None = every status; 'accepted,corrected'), `clip` (one video's frames),
        `name` (a glob on the file name: `*`, `?`, `[a-z]`), `tag`, a confidence range. Next / previous
        page: pass the page's `next_cursor` as `after` / `prev_cursor` as `before` (keyset: as fast on
        page 40,000 as on page 1); `offset` jumps to a position."""
        status = None if status in (None, "", "all") else status
        page = self.store.list_images(status=status, sort=sort, descending=descending,
                                      offset=check_id("offset", offset), limit=check_id("limit", limit), after=after,
                                      before=before, clip=clip or None, name=name or None, tag=tag or None,
                                      **confidence_bounds(min_confidence, max_confidence))
        items = [(self.render.thumbnail(rec), caption(rec)) for rec in page.items]
        return GalleryPage(items, [r.id for r in page.items], page.total, page.offset, page.limit,
                           self.status_counts(), page.next_cursor, page.prev_cursor)

    def status_counts(self) -> dict[str, int]:
        """Images per status (pending, accepted, rejected, corrected), kept by the store."""
        return self.store.count_by_status()

    def histogram(self, status: str | None = None) -> Histogram:
        """The confidence histogram of a status filter (kept by the store; the same cost at any size)."""
        return self.store.confidence_histogram(None if status in (None, "", "all") else status)

    def clips(self) -> list[tuple[str, int]]:
        """(clip, frames in the store) of every imported video, for the gallery's clip filter."""
        return self.store.clips()

    def tag_choices(self) -> list[tuple[str, int]]:
        """(tag, images) of the tags in use, most used first."""
        return self.store.tag_counts()

    def thumbnail(self, rec: ImageRecord) -> Path:
        return self.render.thumbnail(rec)

    # ---- one image -------------------------------------------------------------------------
    def open(self, image_id: int) -> LabelView:
        """Everything the page shows for one image, at its current head."""
        rec = self.store.get_image(check_id("image_id", image_id))
        history = self.store.history(rec.id)
        head = history.head
        image_file = self.render.image_file(rec)
        label_file = cloud = None
        note = "no label yet: pseudo-label the images first"
        if head is not None:
            label = self.render.label(head)
            label_file = self.render.label_file(label)
            cloud, note = self.render.cloud_file(rec, label)
        models = [p.model_id for p in self.store.predictions(rec.id)]
        return LabelView(rec, head, history, image_file, label_file, cloud, note, self.store.point_pairs(rec.id),
                         models, self.store.tags_of(rec.id))

    def image_rgb(self, image_id: int) -> np.ndarray:
        """(H, W, 3) uint8 of a stored image (EXIF orientation applied)."""
        return self.render.rgb(self.store.get_image(check_id("image_id", image_id)))

    def label_rgb(self, revision_id: int) -> np.ndarray:
        return self.render.label_rgb(self.render.label(self.store.get_revision(int(revision_id))))

    def view(self, image_id: int, *, opacity: float = 0.5, selection: np.ndarray | None = None,
             marks: list[Mark] | None = None, pairs: bool = True) -> View:
        """The editor's picture: the head label over the image at `opacity`, the selection, the image's
        point pairs (with `pairs`) and `marks`; `View.scale` maps its pixels to the image's."""
        rec = self.store.get_image(check_id("image_id", image_id))
        head = self.store.head(rec.id) if rec.head_revision_id else None
        label_rgb = self.render.label_rgb(self.render.label(head)) if head is not None else None
        shown = (pair_marks(self.store.point_pairs(rec.id)) if pairs else []) + list(marks or [])
        return self.render.view(self.render.rgb(rec), label_rgb, opacity=RANGES["opacity"].check(opacity),
                                selection=selection, marks=shown)


def caption(rec: ImageRecord) -> str:
    conf = "–" if rec.confidence is None else f"{rec.confidence:.2f}"
    where = f" · {rec.frame_time:.2f} s" if rec.clip else ""
    return f"#{rec.id} {rec.name}{where} · {rec.status} · conf {conf}"
