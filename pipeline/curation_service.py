"""The curation service: what the studio's curate tab (and its API) calls. No gradio, no SQL here.

`CurationService(store, settings)` composes the label store with the import, correction,
rendering, point-cloud, job and export modules:
- import: browser uploads (files, zips) and server folders under an allowed root; ground truth
  (measured depth / disparity) from a server folder, stored beside the labels;
- pseudo-labelling as a background job (`pipeline.jobs`): start, status, cancel, resume;
- the gallery: pages of images with image|label thumbnails, filtered and sorted, counts;
- one image's view: image, colour label (ignore mask greyed), point cloud, history, pairs;
- corrections: each tool in TOOLS turns (label, painted region) into ONE new revision, saved
  with `expected_head` = the revision the caller showed (a stale head is refused by the store);
- point pairs (checked against the head label after every change), accept/reject, undo/redo;
- export of the curated set to a folder under the data folder, zipped for download.
Rendered files are named by the content they show (sha256s), so they are made once and reused.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import corrections, dataset_export, ingest, jobs, pointcloud, render
from .errors import ConfigError, StudioError
from .image_io import decode_image
from .ranges import MAX_ID, Range
from .settings import StudioSettings
from .store import ANY_HEAD, History, ImageRecord, Label, PointPair, Revision, Store
from .video.ingest import check_rate

THUMB_HEIGHT = 128
IGNORE_TINT = np.array([128, 128, 128], np.float32)   # ignored pixels are shown greyed out
PSEUDO_LABEL = "pseudo_label"
# Every number the curate endpoints take, checked here whatever the widget allowed (pipeline/ranges.py).
RANGES = {
    "image_id": Range("image id", 1, MAX_ID, integer=True),
    "pair_id": Range("point pair number", 1, MAX_ID, integer=True),
    "job_id": Range("job id", 1, MAX_ID, integer=True),
    "page": Range("page", 1, 10 ** 9, integer=True),
    "offset": Range("gallery offset", 0, MAX_ID, integer=True),
    "limit": Range("page size", 1, 500, integer=True),
    "sigma": Range("smoothing sigma (pixels)", 0.1, 100),         # a wider Gaussian only costs time and memory
    "gt_scale": Range("ground-truth scale (file value x scale = metres or disparity)", 1e-9, 1e9, optional=True),
}


def _id(name: str, value) -> int:
    return RANGES[name].check(value)


class CurationError(StudioError):
    """A curation request that cannot be carried out (no label yet, wrong prediction kind, ...)."""


# ---------------------------------------------------------------------------- correction tools
@dataclass(frozen=True)
class ToolResult:
    depth: np.ndarray | None                    # (H, W) float32, None = keep the parent's
    masks: dict[str, np.ndarray | None]         # mask name -> new mask (None = drop)
    note: str


@dataclass(frozen=True)
class ToolContext:
    label: Label                                # the head label the caller opened
    region: np.ndarray                          # (H, W) bool, the painted pixels
    params: dict
    store: Store
    image_id: int


def _ignore(c: ToolContext) -> ToolResult:
    if not c.region.any():
        raise CurationError("the painted region is empty; paint the area training must skip first")
    mask = corrections.ignore_mask(c.region, c.label.masks.get("ignore"))
    return ToolResult(None, {"ignore": mask}, f"{int(c.region.sum())} px painted; {int(mask.sum())} px ignored")


def _unignore(c: ToolContext) -> ToolResult:
    old = c.label.masks.get("ignore")
    if old is None or not (np.asarray(old, bool) & c.region).any():
        raise CurationError("the painted region does not touch the ignore mask; paint over ignored (grey) pixels")
    mask = np.asarray(old, bool) & ~c.region
    return ToolResult(None, {"ignore": mask if mask.any() else None}, f"{int(mask.sum())} px still ignored")


def _sky(c: ToolContext) -> ToolResult:
    d = c.label.depth
    max_depth = c.params.get("max_depth") or (float(np.nanmax(np.where(np.isfinite(d), d, np.nan)))
                                               if c.label.revision.kind == "metric_depth" else None)
    depth, sky = corrections.mark_sky(d, c.region, c.label.revision.kind, max_depth=max_depth)
    old = c.label.masks.get("sky")
    mask = sky | np.asarray(old, bool) if old is not None else sky
    return ToolResult(depth, {"sky": mask}, f"{int(sky.sum())} px marked as sky")


def _plane(c: ToolContext) -> ToolResult:
    depth, fit = corrections.fit_plane(c.label.depth, c.region, c.label.revision.kind,
                                       max_depth=c.params.get("max_depth"))
    return ToolResult(depth, {}, f"plane a={fit.a:.4g} b={fit.b:.4g} c={fit.c:.4g}, "
                                 f"inliers {fit.inlier_fraction:.0%}, rms {fit.rms:.3g}")


def _smooth(c: ToolContext) -> ToolResult:
    sigma = float(c.params.get("sigma") or 2.0)
    method = c.params.get("method") or "gaussian"
    depth = corrections.smooth_region(c.label.depth, c.region, sigma=sigma, method=method)
    return ToolResult(depth, {}, f"{method} smoothing, sigma {sigma:g} px")


def _copy(c: ToolContext) -> ToolResult:
    model_id = c.params.get("source_model")
    pred = c.store.get_prediction(c.image_id, model_id) if model_id else None
    if pred is None:
        raise CurationError(f"image {c.image_id} has no prediction from {model_id!r} to copy from; "
                            "pseudo-label it with that model first, or pick another model")
    if pred.kind != c.label.revision.kind:
        raise CurationError(f"{model_id} predicts {pred.kind} but this label is {c.label.revision.kind}; "
                            "copy from a model of the same kind")
    depth, al = corrections.copy_from_prediction(c.label.depth, c.store.prediction_array(pred), c.region)
    return ToolResult(depth, {}, f"copied from {model_id} (scale {al.scale:.4g}, shift {al.shift:.4g})")


TOOLS: dict[str, tuple[str, Callable[[ToolContext], ToolResult]]] = {
    "ignore_mask": ("Ignore the painted region (glass, mirrors, reflections)", _ignore),
    "unignore": ("Stop ignoring the painted region", _unignore),
    "sky": ("Mark the painted region as sky / infinitely far", _sky),
    "plane": ("Fit a plane to the painted region (walls, floors, tables)", _plane),
    "smooth": ("Smooth the painted region", _smooth),
    "copy": ("Copy the painted region from another model's prediction", _copy),
}


# ---------------------------------------------------------------------------- views
@dataclass(frozen=True)
class PairView:
    id: int
    a: tuple[int, int]          # (x, y) = (column, row)
    b: tuple[int, int]
    closer: str                 # "a" | "b"
    flagged: bool               # the head label disagrees


@dataclass(frozen=True)
class LabelView:
    image: ImageRecord
    head: Revision | None
    history: History
    image_file: Path                     # the decoded image (PNG)
    label_file: Path | None              # colour label, ignored pixels greyed
    cloud_file: Path | None              # .ply of the label, None when no cloud can be made
    cloud_note: str
    pairs: list[PairView]
    prediction_models: list[str]         # models with a prediction of this image (copy sources)

    @property
    def head_id(self) -> int | None:
        return self.head.id if self.head else None


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


@dataclass
class ExportResult:
    report: dataset_export.ExportReport
    zip_path: Path
    statuses: tuple[str, ...] = field(default_factory=tuple)


class CurationService:
    def __init__(self, store: Store, settings: StudioSettings, *, import_root: str | os.PathLike | None = None,
                 cmap: str | None = None):
        self.store = store
        self.settings = settings.ensure_dirs()
        self.import_root = Path(import_root).expanduser().resolve() if import_root else settings.allowed_import_root
        self.import_root.mkdir(parents=True, exist_ok=True)
        self.cmap = cmap or settings.cmap
        self.render_dir = settings.render_dir
        self.render_dir.mkdir(parents=True, exist_ok=True)

    @property
    def db_path(self) -> Path:
        return self.store.path

    # ---- import ----------------------------------------------------------------------------
    def import_uploads(self, files, *, author: str = "studio", video_rate: float | None = None) -> ingest.ImportReport:
        """Browser uploads: paths or (name, path | bytes); zips are opened; videos give `video_rate` frames/s."""
        if not files:
            raise CurationError("no files given: choose images, videos or a zip to upload first")
        return ingest.import_uploads(self.store, list(files), author=author, max_pixels=self.settings.max_pixels,
                                     video_rate=check_rate(video_rate))

    def import_folder(self, folder: str, *, author: str = "studio", video_rate: float | None = None
                      ) -> ingest.ImportReport:
        """Every file under `folder` (relative to, or inside, `import_root`)."""
        if not str(folder or "").strip():
            raise CurationError(f"type a folder under {self.import_root} first")
        return ingest.import_server_folder(self.store, folder.strip(), allowed_root=self.import_root,
                                           author=author, max_pixels=self.settings.max_pixels,
                                           video_rate=check_rate(video_rate))

    def import_ground_truth(self, folder: str, *, kind: str, source: str, scale: float = 1.0,
                            author: str = "studio"):
        """Images + measured depth / disparity from a folder under `import_root`, stored as ground truth
        beside the labels (pipeline/ground_truth_import.py) -> GroundTruthReport."""
        from .ground_truth_import import import_server_ground_truth
        if not str(folder or "").strip():
            raise CurationError(f"type a folder under {self.import_root} holding images with same-named ground truth")
        if not str(source or "").strip():
            raise CurationError("name the source of the measurements (e.g. lidar-2025, middlebury)")
        return import_server_ground_truth(self.store, folder.strip(), allowed_root=self.import_root, kind=kind,
                                          source=source.strip(), scale=RANGES["gt_scale"].check(scale) or 1.0,
                                          author=author,
                                          max_pixels=self.settings.max_pixels)

    # ---- pseudo-labelling jobs -------------------------------------------------------------
    def start_pseudo_label(self, checkpoint: str, *, model_id: str | None = None, input_size: int | None = None,
                           author: str = "studio") -> int:
        """Queue/start `python -m pipeline pseudo-label --checkpoint ...` as a background job."""
        if not checkpoint:
            raise CurationError("pick a teacher model first")
        argv = ["pseudo-label", "--checkpoint", str(checkpoint)]
        argv += ["--model-id", model_id] if model_id else []
        argv += ["--input-size", str(int(input_size))] if input_size else []
        argv += ["--device", self.settings.device] if self.settings.device else []
        return jobs.start_job(self.db_path, PSEUDO_LABEL, argv, author=author)

    def job(self, job_id: int | None = None) -> jobs.JobInfo | None:
        """A job's status; with None the newest pseudo-label job (None when there is none)."""
        if job_id is not None:
            return jobs.job_status(self.db_path, _id("job_id", job_id))
        latest = jobs.list_jobs(self.db_path, kind=PSEUDO_LABEL, limit=1)
        return latest[0] if latest else None

    def cancel_job(self, job_id: int, *, author: str = "studio") -> jobs.JobInfo:
        return jobs.cancel_job(self.db_path, _id("job_id", job_id), author=author)

    def resume_job(self, job_id: int, *, author: str = "studio") -> int:
        return jobs.resume_job(self.db_path, _id("job_id", job_id), author=author)

    # ---- gallery ---------------------------------------------------------------------------
    def gallery(self, status: str | None = None, *, sort: str = "confidence", descending: bool = False,
                offset: int = 0, limit: int = 24, after: str | None = None,
                before: str | None = None, clip: str | None = None) -> GalleryPage:
        """One page of thumbnails (image | label), least confident first by default; `clip`: one video's frames.

        Next / previous page: pass the page's `next_cursor` as `after` / `prev_cursor` as
        `before` (keyset: as fast on page 40,000 as on page 1); `offset` jumps to a position."""
        status = None if status in (None, "", "all") else status
        page = self.store.list_images(status=status, sort=sort, descending=descending,
                                      offset=_id("offset", offset), limit=_id("limit", limit), after=after,
                                      before=before, clip=clip or None)
        items = [(self.thumbnail(rec), _caption(rec)) for rec in page.items]
        return GalleryPage(items, [r.id for r in page.items], page.total, page.offset, page.limit,
                           self.store.count_by_status(), page.next_cursor, page.prev_cursor)

    def clips(self) -> list[tuple[str, int]]:
        """(clip, frames in the store) of every imported video, for the gallery's clip filter."""
        return self.store.clips()

    def thumbnail(self, rec: ImageRecord) -> Path:
        head = self.store.head(rec.id) if rec.head_revision_id else None
        key = f"{rec.sha256[:16]}-{head.depth_sha256[:16] if head else 'none'}-{_mask_key(head)}"
        path = self.render_dir / f"thumb-{key}-{self.cmap}.jpg"
        if not path.exists():
            rgb = self._rgb(rec)
            panels = [rgb] + ([self._label_rgb(self.store.load_label(head))] if head else [])
            thumbs = [_fit_height(p, THUMB_HEIGHT) for p in panels]
            _save_atomic(Image.fromarray(np.concatenate(thumbs, axis=1)), path, quality=85)
        return path

    # ---- one image -------------------------------------------------------------------------
    def open(self, image_id: int) -> LabelView:
        """Everything the page shows for one image, at its current head."""
        rec = self.store.get_image(_id("image_id", image_id))
        history = self.store.history(rec.id)
        head = history.head
        image_file = self._image_file(rec)
        label_file = cloud = None
        note = "no label yet: pseudo-label the images first"
        if head is not None:
            label = self.store.load_label(head)
            label_file = self._label_file(label)
            cloud, note = self._cloud_file(rec, label)
        pairs = [PairView(p.id, (p.point1[1], p.point1[0]), (p.point2[1], p.point2[0]),
                          "a" if p.closer == 1 else "b", p.flagged) for p in self.store.point_pairs(rec.id)]
        models = [p.model_id for p in self.store.predictions(rec.id)]
        return LabelView(rec, head, history, image_file, label_file, cloud, note, pairs, models)

    def image_rgb(self, image_id: int) -> np.ndarray:
        """(H, W, 3) uint8 of a stored image (EXIF orientation applied)."""
        return self._rgb(self.store.get_image(_id("image_id", image_id)))

    def apply_tool(self, image_id: int, tool: str, region, *, expected_head, author: str = "studio",
                   **params) -> Revision:
        """Run a correction tool on the head label and save the result as ONE new revision.

        region: (H, W) mask of the painted pixels (bool, 0/1 or 0..255). expected_head: the
        revision id the page showed; StaleRevisionError when someone saved since.
        """
        if tool not in TOOLS:
            raise CurationError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
        image_id = _id("image_id", image_id)
        if params.get("sigma") is not None:
            params["sigma"] = RANGES["sigma"].check(params["sigma"])
        head = self.store.head(image_id)
        if head is None:
            raise CurationError(f"image {image_id} has no label yet; pseudo-label it before correcting it")
        if expected_head is not ANY_HEAD and expected_head != head.id:
            # refused before any work: the store raises StaleRevisionError (who saved, when), saving nothing
            self.store.save_revision(image_id, expected_head=expected_head, tool=tool, author=author)
        label = self.store.load_label(head)
        rec = self.store.get_image(image_id)
        region = _region(region, (rec.height, rec.width))
        result = TOOLS[tool][1](ToolContext(label, region, params, self.store, image_id))
        rev = self.store.save_revision(image_id, result.depth, expected_head=head.id, tool=tool, author=author,
                                       masks=result.masks or None, note=result.note)
        self.check_pairs(image_id, author=author)
        return rev

    def set_status(self, image_id: int, status: str, *, expected_head, author: str = "studio") -> ImageRecord:
        """Accept / reject the label as a whole (refused when the label moved since it was shown)."""
        return self.store.set_status(_id("image_id", image_id), status, author=author, expected_head=expected_head)

    def undo(self, image_id: int, *, expected_head, author: str = "studio") -> Revision:
        image_id = _id("image_id", image_id)
        rev = self.store.undo(image_id, author=author, expected_head=expected_head)
        self.check_pairs(image_id, author=author)
        return rev

    def redo(self, image_id: int, *, expected_head, author: str = "studio") -> Revision:
        image_id = _id("image_id", image_id)
        rev = self.store.redo(image_id, author=author, expected_head=expected_head)
        self.check_pairs(image_id, author=author)
        return rev

    # ---- point pairs -----------------------------------------------------------------------
    def add_point_pair(self, image_id: int, a: tuple[int, int], b: tuple[int, int], closer: str, *,
                       author: str = "studio") -> PointPair:
        """A DA-2K style pair: a/b as (x, y) = (column, row); `closer` 'a' or 'b'. Flagged against the head."""
        if closer not in ("a", "b"):
            raise CurationError(f"say which point is closer: 'a' or 'b', not {closer!r}")
        image_id = _id("image_id", image_id)
        pair = self.store.add_point_pair(int(image_id), (int(a[1]), int(a[0])), (int(b[1]), int(b[0])),
                                         1 if closer == "a" else 2, author=author)
        self.check_pairs(int(image_id), author=author)
        return next(p for p in self.store.point_pairs(int(image_id)) if p.id == pair.id)

    def delete_point_pair(self, image_id: int, pair_id: int, *, author: str = "studio") -> None:
        """Remove (soft-delete) one of this image's pairs."""
        image_id, pair_id = _id("image_id", image_id), _id("pair_id", pair_id)
        if pair_id not in {p.id for p in self.store.point_pairs(image_id)}:
            raise CurationError(f"image {image_id} has no point pair {pair_id}; pick a number from its pair table")
        self.store.delete_point_pair(int(pair_id), author=author)

    def check_pairs(self, image_id: int, *, author: str = "system") -> dict[int, bool]:
        """Re-flag the image's pairs against its head label; writes only the flags that changed."""
        pairs = self.store.point_pairs(int(image_id))
        head = self.store.head(int(image_id))
        if not pairs or head is None:
            return {}
        depth = self.store.load_label(head).depth
        flags = corrections.check_point_pairs(depth, [p.as_correction() for p in pairs], head.kind)
        new = {p.id: bool(f) for p, f in zip(pairs, flags, strict=True)}
        changed = {i: f for i, f in new.items() if f != next(p.flagged for p in pairs if p.id == i)}
        if changed:
            self.store.set_point_pair_flags(changed, author=author)
        return new

    # ---- export ----------------------------------------------------------------------------
    def export(self, statuses=dataset_export.DEFAULT_STATUSES) -> ExportResult:
        """Export to <data>/exports/export-<time>/ and zip it beside (what the download offers)."""
        base = self.settings.exports_dir
        name = f"export-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 1000:03d}{time.time_ns() % 1000:03d}"
        report = dataset_export.export_dataset(self.store, base / name, statuses=statuses)
        zip_path = Path(shutil.make_archive(str(base / name), "zip", root_dir=base, base_dir=name))
        return ExportResult(report, zip_path, tuple(statuses) if not isinstance(statuses, str) else (statuses,))

    # ---- rendering (cached by content) -----------------------------------------------------
    def _rgb(self, rec: ImageRecord) -> np.ndarray:
        return decode_image(self.store.image_bytes(rec.id), name=rec.name,
                            max_pixels=self.settings.max_pixels).rgb

    def _image_file(self, rec: ImageRecord) -> Path:
        path = self.render_dir / f"image-{rec.sha256[:24]}.png"
        if not path.exists():
            _save_atomic(Image.fromarray(self._rgb(rec)), path, compress_level=1)
        return path

    def _label_rgb(self, label: Label) -> np.ndarray:
        near_high = label.revision.kind == "metric_depth"
        rgb = render.colorize(label.depth, self.cmap, invert=near_high).astype(np.float32)   # (H, W, 3)
        ignore = label.masks.get("ignore")
        if ignore is not None:
            m = np.asarray(ignore, bool)
            rgb[m] = 0.35 * rgb[m] + 0.65 * IGNORE_TINT
        return rgb.astype(np.uint8)

    def label_rgb(self, revision_id: int) -> np.ndarray:
        return self._label_rgb(self.store.load_label(int(revision_id)))

    def _label_file(self, label: Label) -> Path:
        path = self.render_dir / f"label-{label.revision.depth_sha256[:24]}-{_mask_key(label.revision)}-{self.cmap}.png"
        if not path.exists():
            _save_atomic(Image.fromarray(self._label_rgb(label)), path, compress_level=1)
        return path

    def _cloud_file(self, rec: ImageRecord, label: Label) -> tuple[Path | None, str]:
        kind = label.revision.kind
        path = self.render_dir / f"cloud-{rec.sha256[:16]}-{label.revision.depth_sha256[:24]}.ply"
        note = pointcloud.point_cloud_note(kind)
        if path.exists():
            return path, note
        rgb, depth = self._rgb(rec), label.depth                              # (H, W, 3), (H, W)
        h, w = depth.shape
        step = max(1, math.ceil(math.sqrt(h * w / self.settings.max_cloud_points)))
        focal, _ = pointcloud.resolve_focal(w, h)
        try:
            pcd = pointcloud.make_point_cloud(rgb[::step, ::step], depth[::step, ::step], kind,
                                              focal_px=focal / step, axes=pointcloud.VIEWER_AXES)
        except ConfigError as e:
            return None, f"No point cloud: {e}"
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.ply")
        pointcloud.write_ply(tmp, pcd)
        os.replace(tmp, path)
        return path, note


# ---------------------------------------------------------------------------- helpers
def _caption(rec: ImageRecord) -> str:
    conf = "–" if rec.confidence is None else f"{rec.confidence:.2f}"
    where = f" · {rec.frame_time:.2f} s" if rec.clip else ""
    return f"#{rec.id} {rec.name}{where} · {rec.status} · conf {conf}"


def _region(region, shape: tuple[int, int]) -> np.ndarray:
    """A painted mask (bool, 0/1 or 0..255) of the image's shape -> bool (H, W)."""
    m = np.asarray(region)
    if m.shape != tuple(shape):
        raise CurationError(f"the painted region is {m.shape[1::-1] if m.ndim >= 2 else m.shape} pixels but the "
                            f"image is {shape[1]}x{shape[0]}; paint on the image shown")
    return m.astype(bool)


def _mask_key(rev: Revision | None) -> str:
    if rev is None or not rev.masks:
        return "nomask"
    return "".join(rev.masks[n][:6] for n in sorted(rev.masks))


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    new_w = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(rgb).resize((new_w, height), Image.BILINEAR))


def _save_atomic(img: Image.Image, path: Path, **kwargs) -> None:
    tmp = path.with_name(f".{path.stem}-{os.getpid()}-{time.time_ns()}{path.suffix}")
    img.save(tmp, **kwargs)
    os.replace(tmp, path)
