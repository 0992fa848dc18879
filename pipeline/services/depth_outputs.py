"""The files of one depth request: the light set every request writes, and the heavy ones built when asked.

Every request (pipeline.services.depth_service.DepthService.run) writes into its own folder, before
/predict answers (`write_sent`, the record):
    <stem>_depth_color.png  the colour map (range clipped when asked), an 8-bit palette PNG of the map's
                            256 colours (pipeline.render.colour_image); the n-th re-colouring writes
                            colour-<n>/<stem>_depth_color.png and removes the (n-1)-th (this first
                            picture, the one /predict sent, stays)
    <stem>_depth.npy        float32 (H, W), the prediction itself
    request.json, rgb.npy   the record below, the exact pixels
and when first asked (`complete`: the page's `show`, /export), made from those:
    <stem>_input.jpg        the image (for the before/after slider)
    <stem>_depth16.png      16-bit PNG, values recoverable (pipeline.files.depth_png)
    <stem>_points.ply       the viewer's point cloud: every `step`-th pixel, at most
                            `max_viewer_points` points, binary little-endian (its size is in /predict's
                            summary, counted without building it; a voxel or outlier filter needs the
                            cloud to count, so a filtered one is written before /predict answers)
The full-resolution and other formats (`EXPORTS`: every-pixel .ply, OpenEXR, .glb mesh, normals,
8-bit grayscale) are built from the folder when asked (`build_exports`), once, and `zip_outputs`
packs everything into one zip (zip-<digest of the names>/<stem>_all.zip, made once per set of files;
the zip of an earlier set is removed). The CLI (`python -m pipeline predict --exr --glb --normals`)
uses the same writers.

No file the page is sent changes once written (only request.json does), so the page is sent them
where they lie (the studio serves the folder as Gradio static files, not copied into its cache); what
changes gets a new path, and so a new URL: a URL that stayed the same would let the page keep showing
the old picture.

Intrinsics: the strided viewer cloud keeps the full image's camera. Subsampled pixel i is pixel
i*step of the image, whose centre lies at i*step + 0.5; with focal f/step the principal point of the
subsampled grid is (c - 0.5)/step + 0.5, so every viewer point is exactly the full cloud's point of
that pixel (metres for metric models). Relative predictions use the pseudo-depth of the whole image,
so the viewer and full clouds share one scale.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import render
from ..atomic import atomic_path, atomic_write
from ..errors import ConfigError, StudioError
from ..files import depth_png, exports
from ..geometry import pointcloud
from ..ranges import Range

REQUEST_FILE = "request.json"
RGB_FILE = "rgb.npy"
REQUEST_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
COLOUR_SUFFIX = "_depth_color.png"
BASIC = (("input", "_input.jpg"), ("color", COLOUR_SUFFIX), ("depth16", "_depth16.png"),
         ("npy", "_depth.npy"), ("ply", "_points.ply"))


def safe_stem(name: str) -> str:
    """A file-name stem from an image name: letters, digits, _ and - only, at most 40 characters."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name or "image").stem).strip("_")
    return (stem or "image")[:40]


class RequestGone(StudioError):
    """The request's folder is unknown or was cleaned up."""


@dataclass
class RequestRecord:
    """What a request's folder holds and how it was made (request.json)."""
    id: str
    stem: str
    name: str
    kind: str                          # "disparity" | "metric_depth"
    unit: str
    width: int
    height: int
    focal_px: float
    focal_source: str
    model: str
    model_title: str
    cmap: str
    vmin: float | None = None
    vmax: float | None = None
    voxel_size: float | None = None
    remove_outliers: bool = False
    viewer_points: int = 0             # the 3D view's point budget
    cloud_with_request: bool = False   # its cloud was written before /predict answered (a voxel or outlier
                                       # filter: the count needs it built); else made when first asked
    recoloured: int = 0                # times re-coloured: the colour picture's path carries it


@dataclass
class Request:
    folder: Path
    record: RequestRecord

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.record.stem}{suffix}"

    def colour_path(self, recoloured: int | None = None) -> Path:
        """The colour picture: `<stem>_depth_color.png`, after the n-th re-colouring the same name in
        `colour-<n>/` (a new URL, the same download name)."""
        n = self.record.recoloured if recoloured is None else recoloured
        first = self.path(COLOUR_SUFFIX)
        return self.folder / f"colour-{n}" / first.name if n else first

    def basic_paths(self) -> dict[str, Path]:
        """Where each file of the light set is (or will be), by its key in BASIC."""
        return {k: self.colour_path() if k == "color" else self.path(s) for k, s in BASIC}

    def array(self) -> np.ndarray:
        """(H, W) float32 prediction."""
        return self._load(self.path("_depth.npy"))

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8, the exact pixels the prediction was made from."""
        return self._load(self.folder / RGB_FILE)

    def _load(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RequestGone(f"request {self.record.id} lost {path.name} ({type(e).__name__}); compute depth "
                              "again") from None

    def source(self) -> DepthSource:
        r = self.record
        return DepthSource(self.rgb(), self.array(), r.kind, r.focal_px, r.voxel_size, r.remove_outliers,
                           {"model": r.model, "image": r.name})

    def basic_files(self) -> dict[str, Path]:
        return {k: p for k, p in self.basic_paths().items() if p.exists()}

    def save(self) -> None:
        atomic_write(self.folder / REQUEST_FILE, json.dumps(asdict(self.record)), durable=False)   # scratch: no fsync


def open_request(temp_dir: Path, request_id: str) -> Request:
    """The request called `request_id` under `temp_dir`; RequestGone when it is not (or no longer) there."""
    request_id = str(request_id or "").strip()
    if not REQUEST_ID.match(request_id):
        raise RequestGone(f"{request_id!r} is not a request id (the `request` field of a /predict summary)")
    folder = Path(temp_dir) / request_id
    try:
        record = RequestRecord(**json.loads((folder / REQUEST_FILE).read_text()))
    except FileNotFoundError:
        raise RequestGone(f"request {request_id} is gone (results are kept for a few hours); compute depth "
                          "again") from None
    except (ValueError, TypeError) as e:
        raise RequestGone(f"request {request_id} cannot be read ({e}); compute depth again") from None
    return Request(folder, record)


# ----------------------------------------------------------------------------- light set

def viewer_cloud_size(array: np.ndarray, kind: str, max_points: int) -> tuple[int, int, str]:
    """(points, pixel stride, note) of the viewer's cloud with no voxel or outlier filter, without
    building it: one point per usable pixel (pointcloud.point_mask) of the stride grid."""
    step = pointcloud.cloud_stride(*np.shape(array), max_points)
    try:
        points = int(pointcloud.point_mask(array, kind)[::step, ::step].sum())
    except ConfigError as e:           # e.g. no positive disparity (untrained weights): the rest still shows
        return 0, step, f"No point cloud: {e}"
    if not points:
        return 0, step, "No point cloud: no pixel has a usable depth"
    return points, step, pointcloud.point_cloud_note(kind)


def write_viewer_cloud(path: Path, rgb, array, kind: str, focal_px: float, max_points: int, voxel_size=None,
                       remove_outliers: bool = False) -> tuple[int, int, str]:
    """The viewer's .ply -> (points, pixel stride, note); 0 points and no file when no cloud can be made.
    Unfiltered, the numbers are `viewer_cloud_size`'s (what /predict reports before the cloud is made)."""
    if not (voxel_size or remove_outliers):
        points, step, note = viewer_cloud_size(array, kind, max_points)
        if points:
            pcd, _ = pointcloud.strided_cloud(rgb, array, kind, focal_px, max_points)
            pointcloud.write_ply(path, pcd)
        return points, step, note
    step = pointcloud.cloud_stride(*array.shape, max_points)
    try:
        pcd, step = pointcloud.strided_cloud(rgb, array, kind, focal_px, max_points, voxel_size=voxel_size,
                                             remove_outliers=remove_outliers)
        if len(pcd.points) == 0:
            raise ConfigError("every point was removed; use a smaller voxel size or keep outliers")
        pointcloud.write_ply(path, pcd)
    except ConfigError as e:           # e.g. no positive disparity (untrained weights): the rest still shows
        if voxel_size and "voxel" in str(e):
            raise
        return 0, step, f"No point cloud: {e}"
    return len(pcd.points), step, pointcloud.point_cloud_note(kind)


def write_sent(request: Request, rgb: np.ndarray, array: np.ndarray, color: Image.Image) -> None:
    """Before /predict answers: what it sends (the float .npy, the colour PNG) and the exact pixels,
    which the rest of the light set and every export are made from."""
    np.save(request.path("_depth.npy"), array.astype(np.float32, copy=False))
    np.save(request.folder / RGB_FILE, np.ascontiguousarray(rgb, dtype=np.uint8))
    save_colour_png(color, request.colour_path())


def complete(request: Request) -> dict[str, Path]:
    """The light set's files made from the folder when first asked, in parallel threads (the slider's
    JPEG, the 16-bit PNG and, for a cloud with no voxel or outlier filter, the viewer's .ply: ~60 ms of
    work /predict does not wait for) -> every basic file of the request."""
    r = request.record
    jpeg, png, ply = request.path("_input.jpg"), request.path("_depth16.png"), request.path("_points.ply")
    want_png = not png.exists()
    want_ply = not r.cloud_with_request and r.viewer_points > 0 and not ply.exists()
    jobs = [lambda: _write_jpeg(request, jpeg)] if not jpeg.exists() else []
    if want_png or want_ply:
        array = request.array()
        if want_png:
            jobs.append(lambda: depth_png.write_depth_png(png, array, kind=r.kind))
        if want_ply:
            rgb = request.rgb()
            jobs.append(lambda: write_viewer_cloud(ply, rgb, array, r.kind, r.focal_px, r.viewer_points))
    if len(jobs) > 1:
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="request-files") as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
    elif jobs:
        jobs[0]()
    return request.basic_files()


def _write_jpeg(request: Request, jpeg: Path) -> None:
    try:
        with atomic_path(jpeg, durable=False) as tmp:
            Image.fromarray(request.rgb()).save(tmp, format="JPEG", quality=90)
    except OSError as e:
        raise StudioError(f"cannot write {jpeg.name}: {e.strerror or e}") from None


def colour_picture(array: np.ndarray, kind: str, cmap: str, vmin: float | None = None,
                   vmax: float | None = None) -> Image.Image:
    """The colour map as a picture to save (a palette image; `.convert("RGB")` for the pixels); near is the
    map's end (red in Spectral_r) for disparity and metres alike."""
    return render.colour_image(array, cmap, vmin, vmax, kind=kind)


def save_colour_png(picture: Image.Image, path) -> None:
    """The one way a colour picture becomes a PNG (fast zlib level: these are made per request)."""
    picture.save(path, format="PNG", compress_level=1)


COLOUR_LIMIT = Range("colour range limit", -1e30, 1e30)      # any finite value of a prediction


def check_range(vmin: float | None, vmax: float | None) -> tuple[float | None, float | None]:
    """Colour range limits (None or "": the data's own); ConfigError when one is not a finite number or
    both are given and not increasing."""
    vmin, vmax = (None if v is None or v == "" else COLOUR_LIMIT.check(v) for v in (vmin, vmax))
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ConfigError(f"the colour range needs its lower limit below its upper one, got {vmin:g} and {vmax:g}")
    return vmin, vmax


# ----------------------------------------------------------------------------- on-demand exports

@dataclass
class DepthSource:
    """What an export is made from: the pixels, the prediction, and the camera."""
    rgb: np.ndarray                    # (H, W, 3) uint8
    array: np.ndarray                  # (H, W) float32
    kind: str
    focal_px: float
    voxel_size: float | None = None
    remove_outliers: bool = False
    meta: dict | None = None           # kept in the EXR header


@dataclass(frozen=True)
class ExportFormat:
    key: str
    label: str
    suffixes: tuple[str, ...]                                # file name endings after the stem
    write: Callable[[DepthSource, list[Path]], None]

    def paths(self, folder: Path, stem: str) -> list[Path]:
        return [Path(folder) / f"{stem}{s}" for s in self.suffixes]


def _write_full_ply(src: DepthSource, paths: list[Path]) -> None:
    pcd = pointcloud.make_point_cloud(src.rgb, src.array, src.kind, focal_px=src.focal_px,
                                      voxel_size=src.voxel_size or None, remove_outliers=src.remove_outliers,
                                      axes=pointcloud.VIEWER_AXES)
    pointcloud.write_ply(paths[0], pcd)


def _write_exr(src: DepthSource, paths: list[Path]) -> None:
    exports.write_exr(paths[0], src.array, src.kind, meta={"focal_px": src.focal_px, **(src.meta or {})})


def _write_glb(src: DepthSource, paths: list[Path]) -> None:
    exports.write_glb(paths[0], exports.depth_mesh(src.rgb, src.array, src.kind, focal_px=src.focal_px))


def _write_normals(src: DepthSource, paths: list[Path]) -> None:
    exports.write_normals(paths[0], paths[1], src.array, src.kind, focal_px=src.focal_px)


def _write_gray(src: DepthSource, paths: list[Path]) -> None:
    gray = render.grayscale(src.array, kind=src.kind)
    Image.fromarray(gray).save(paths[0], compress_level=1)


EXPORTS: dict[str, ExportFormat] = {f.key: f for f in (
    ExportFormat("ply", "point cloud of every pixel (.ply)", ("_points_full.ply",), _write_full_ply),
    ExportFormat("exr", "OpenEXR depth (.exr)", ("_depth.exr",), _write_exr),
    ExportFormat("glb", "coloured mesh (.glb)", ("_mesh.glb",), _write_glb),
    ExportFormat("normals", "surface normals (.png picture + .npy)", ("_normals.png", "_normals.npy"), _write_normals),
    ExportFormat("gray", "8-bit grayscale PNG", ("_depth_gray.png",), _write_gray),
)}


def check_exports(keys) -> list[str]:
    keys = [str(k) for k in (keys or [])]
    unknown = [k for k in keys if k not in EXPORTS]
    if unknown:
        raise ConfigError(f"unknown export {', '.join(map(repr, unknown))}; choose from {', '.join(EXPORTS)}")
    return list(dict.fromkeys(keys))


def write_exports(src: DepthSource | Callable[[], DepthSource], folder: Path, stem: str, keys,
                  progress: Callable[[float, str], None] | None = None, *, reuse: bool = True) -> dict[str, list[Path]]:
    """Write the asked-for formats as <folder>/<stem><suffix>.

    reuse=True (a request's folder, whose prediction never changes): files already there are kept, so
    each format is built once. `src` may be a function giving the source, called only when something
    has to be built.
    """
    keys = check_exports(keys)
    progress = progress or (lambda fraction, message: None)
    loaded: list[DepthSource] = []
    out = {}
    for i, key in enumerate(keys):
        fmt = EXPORTS[key]
        paths = fmt.paths(folder, stem)
        if not (reuse and all(p.exists() for p in paths)):
            progress(i / max(len(keys), 1), f"building the {fmt.label}")
            if not loaded:
                loaded.append(src() if callable(src) else src)
            fmt.write(loaded[0], paths)
        out[key] = paths
    progress(1.0, "done")
    return out


def build_exports(req: Request, keys, progress: Callable[[float, str], None] | None = None) -> dict[str, list[Path]]:
    """The asked-for formats of a request, built into its folder when first asked."""
    return write_exports(req.source, req.folder, req.record.stem, keys, progress)


def zip_outputs(req: Request, files: list[Path]) -> Path:
    """One zip of the given files of a request (PNGs and JPEGs stored, the rest deflated), made once per set
    of files (their paths name it: a request's files never change once written) -> its path."""
    digest = hashlib.sha1("\n".join(sorted(str(f.relative_to(req.folder)) for f in files)).encode()).hexdigest()
    path = req.folder / f"zip-{digest[:12]}" / f"{req.record.stem}_all.zip"
    if path.exists():
        return path
    try:
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path, durable=False) as tmp, zipfile.ZipFile(tmp, "w", compresslevel=1) as z:
            for f in files:
                stored = f.suffix.lower() in (".png", ".jpg", ".glb")
                z.write(f, f.name, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    except OSError as e:
        raise StudioError(f"cannot write the zip of request {req.record.id}: {e.strerror or e}") from None
    for old in req.folder.glob("zip-*/*_all.zip"):           # one zip kept: the latest set
        if old != path:
            shutil.rmtree(old.parent, ignore_errors=True)
    return path
