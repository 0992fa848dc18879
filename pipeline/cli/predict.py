"""`python -m pipeline predict IMAGE_OR_VIDEO_OR_DIR... --out DIR`: depth for images and videos, as files.

    python -m pipeline predict photo.jpg holiday/ --out depth/ --checkpoint depth_anything_v2_vits.pth --ply
    python -m pipeline predict clip.mp4 --out depth/ --side-by-side

For each input <stem> it writes into DIR:
    <stem>.npy          float32 (H, W) prediction at the image's own resolution
    <stem>_depth.png    16-bit PNG over the full 0..65535 range, offset/scale recorded (pipeline.files.depth_png)
    <stem>_color.png    colour map of the float prediction (low values -> start of the map)
    <stem>.ply          with --ply: coloured point cloud (focal: --focal-px > EXIF > 60 degree FOV)
    <stem>_depth.exr    with --exr: OpenEXR float32, channel "Z" (metres) or "disparity" (relative)
    <stem>_mesh.glb     with --glb: coloured mesh, no triangles across depth edges (trimesh, linear colours)
    <stem>_normals.png  with --normals: OpenGL normal map, and <stem>_normals.npy float32 (H, W, 3)
(the .exr/.glb/normals writers are pipeline.services.depth_outputs.EXPORTS, the studio's downloads.)
For each video <stem> (mp4, mov, webm, mkv, avi, ...): <stem>_depth.mp4, <stem>.npz and options
(pipeline/cli/predict_video.py). Folders are expanded to the image and video files directly inside
them (not recursive); with --frames-folder each folder is one clip made of its frames. An input that
cannot be read is reported on one line and skipped; the exit status is 1 if any input failed.
Two inputs with the same stem (a.jpg, a.png) get the extension added (a_jpg, a_png).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import render
from ..atomic import atomic_path
from ..config import DEFAULT_INPUT_SIZE, ENCODERS, VERSIONS
from ..errors import ConfigError, StudioError
from ..files import depth_png
from ..files.dataset_layout import is_image_file
from ..files.image_io import DecodedImage, decode_image
from ..geometry import pointcloud
from ..predictor import Prediction, Predictor
from ..preprocess import network_size
from ..runtime.registry import CHOICES
from ..services.depth_outputs import DepthSource, colour_picture, save_colour_png, write_exports
from ..video.io import is_video_file
from ..weights import registry as checkpoint_registry
from . import predict_video

HELP = ("predict depth for images, videos or folders: <stem>.npy, <stem>_depth.png (16-bit), <stem>_color.png "
        "[, .ply, .exr, mesh .glb, normals]; videos: <stem>_depth.mp4 + <stem>.npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO_OR_DIR",
                        help="image and video files and/or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--checkpoint", default=checkpoint_registry.DEFAULT_NAME, metavar="FILE|NAME",
                        help=f"checkpoint file or registry name (default {checkpoint_registry.DEFAULT_NAME}; "
                             "list names with `python -m pipeline checkpoints`)")
    parser.add_argument("--encoder", choices=list(ENCODERS), help="encoder size (default: read from the weights)")
    parser.add_argument("--version", choices=VERSIONS, help="v1 or v2 (default: from the checkpoint)")
    parser.add_argument("--metric", action="store_true", default=None, help="the checkpoint is a V2 metric model")
    parser.add_argument("--max-depth", type=float, metavar="M", help="metric models: 20 indoor, 80 outdoor")
    parser.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, metavar="N",
                        help=f"network input size, a multiple of 14 (default {DEFAULT_INPUT_SIZE})")
    parser.add_argument("--colormap", default=render.DEFAULT_CMAP, help="any matplotlib colour map (default Spectral_r)")
    parser.add_argument("--ply", action="store_true", help="also write a coloured point cloud <stem>.ply")
    parser.add_argument("--exr", action="store_true", help="also write <stem>_depth.exr (OpenEXR float32)")
    parser.add_argument("--glb", action="store_true", help="also write a coloured mesh <stem>_mesh.glb")
    parser.add_argument("--normals", action="store_true",
                        help="also write surface normals <stem>_normals.png (picture) and <stem>_normals.npy")
    parser.add_argument("--focal-px", type=float, metavar="F", help="focal length in pixels for --ply/--glb/--normals "
                                                                    "(default: EXIF, else a 60 degree field of view)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--backend", choices=CHOICES, default="auto",
                        help="what runs the network (default auto: torch on a GPU, OpenVINO > ONNX Runtime > torch "
                             "on a CPU)")
    predict_video.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    render.check_colormap(args.colormap)                     # fail before loading a model
    video_options = predict_video.options_from(args)          # validates the video options
    if args.focal_px is not None:
        pointcloud.resolve_focal(1, 1, args.focal_px)        # validates it
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    failures: list[str] = []
    items = _named(collect_inputs(args.inputs, out, failures, frames_folders=args.frames_folder))
    for message in failures:
        print(f"skipped {message}", file=sys.stderr)
    if not items:
        print("no images or videos to predict", file=sys.stderr)
        return 1
    videos = [(p, stem) for p, stem in items if p.is_dir() or is_video_file(p)]
    items = [item for item in items if item not in videos]
    predictor = Predictor.from_checkpoint(args.checkpoint, encoder=args.encoder, version=args.version,
                                          metric=args.metric, max_depth=args.max_depth, device=args.device,
                                          input_size=args.input_size, backend=args.backend)
    print(f"model {predictor.model_id}: {predictor.kind} ({'m' if predictor.kind == 'metric_depth' else 'relative'}) "
          f"on {predictor.device} with {predictor.runner().detail}, input size {predictor.input_size}",
          file=sys.stderr)
    bar = tqdm(total=len(items), unit="image", file=sys.stderr, disable=len(items) < 2)
    done = _predict_all(predictor, items, out, args, failures, bar) if items else 0
    bar.close()
    for path, stem in videos:
        try:
            predict_video.run_clip(predictor, path, stem, out, video_options)
            done += 1
        except StudioError as e:
            _report(failures, str(e))
    total = done + len(failures)
    print(f"wrote {done} of {total} input(s) to {out}" + (f"; {len(failures)} failed" if failures else ""),
          file=sys.stderr)
    return 1 if failures else 0


def collect_inputs(inputs: list[str], out: Path, failures: list[str], *, frames_folders: bool = False) -> list[Path]:
    """Files as given, folders expanded (sorted, non-recursive, our output folder skipped); with
    `frames_folders`, a folder stays one input (a clip of frames)."""
    paths: list[Path] = []
    out_resolved = out.resolve()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir() and frames_folders:
            paths.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and (is_image_file(p) or is_video_file(p)) and p.parent.resolve() != out_resolved)
            if not found:
                failures.append(f"{path}: no image or video files in this folder")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            failures.append(f"{path}: file not found")
    return paths


def _named(paths: list[Path]) -> list[tuple[Path, str]]:
    """(path, output stem); stems that would collide get their extension appended."""
    counts = Counter(p.stem for p in paths)
    return [(p, f"{p.stem}_{p.suffix.lstrip('.').lower()}" if counts[p.stem] > 1 else p.stem) for p in paths]


def _predict_all(predictor: Predictor, items: list[tuple[Path, str]], out: Path, args, failures: list[str],
                 bar) -> int:
    """Decode lazily (bad files reported and skipped), predict in batches, write as results arrive."""
    pending: dict[int, tuple[str, DecodedImage]] = {}         # index among decoded images -> (stem, image)
    next_index = itertools.count()

    def decoded_images():
        for path, stem in items:
            try:
                decoded = decode_image(path)
                network_size(decoded.height, decoded.width, predictor.input_size, name=decoded.name)  # a strip: skipped
            except StudioError as e:
                _report(failures, str(e), bar)
                bar.update(1)
                continue
            pending[next(next_index)] = (stem, decoded)
            yield decoded

    written = 0
    for index, prediction in predictor.iter_predict(decoded_images(), batch_size=args.batch_size):
        stem, decoded = pending.pop(index)
        try:
            write_outputs(out, stem, decoded, prediction, cmap=args.colormap, ply=args.ply, focal_px=args.focal_px,
                          extra=[k for k in ("exr", "glb", "normals") if getattr(args, k, False)])
            written += 1
        except StudioError as e:
            _report(failures, f"{decoded.name}: {e}", bar)
        bar.update(1)
    return written


def _report(failures: list[str], message: str, bar=None) -> None:
    """One line per failed input, printed when it happens (above the progress bar)."""
    failures.append(message)
    (bar.write if bar is not None else print)(f"skipped {message}", file=sys.stderr)


def write_outputs(out: Path, stem: str, decoded: DecodedImage, prediction: Prediction, *, cmap: str,
                  ply: bool = False, focal_px: float | None = None, extra: list[str] = ()) -> dict[str, Path]:
    """Every file for one prediction; returns {"npy", "depth_png", "color_png"[, "ply", "exr", "glb", "normals_png",
    "normals_npy"]: path}. `extra`: keys of pipeline.services.depth_outputs.EXPORTS."""
    array = prediction.array                                                   # (H, W) float32
    files = {"npy": out / f"{stem}.npy", "depth_png": out / f"{stem}_depth.png", "color_png": out / f"{stem}_color.png"}
    try:
        with atomic_path(files["npy"]) as tmp:
            np.save(tmp, array.astype(np.float32, copy=False))
        depth_png.write_depth_png(files["depth_png"], array, kind=prediction.kind)
        with atomic_path(files["color_png"]) as tmp:
            save_colour_png(colour_picture(array, prediction.kind, cmap), tmp)
        if ply:
            h, w = array.shape
            focal, _ = pointcloud.resolve_focal(w, h, focal_px, decoded.focal_px)
            pcd = pointcloud.make_point_cloud(decoded.rgb, array, prediction.kind, focal_px=focal)
            files["ply"] = pointcloud.write_ply(out / f"{stem}.ply", pcd)
        if extra:
            h, w = array.shape
            focal, _ = pointcloud.resolve_focal(w, h, focal_px, decoded.focal_px)
            source = DepthSource(decoded.rgb, array, prediction.kind, focal, meta={"model": prediction.model_id})
            for key, paths in write_exports(source, out, stem, extra, reuse=False).items():
                names = [key] if len(paths) == 1 else [f"{key}_{p.suffix.lstrip('.')}" for p in paths]
                files.update(zip(names, paths, strict=True))
    except OSError as e:
        raise StudioError(f"cannot write into {out}: {e.strerror or e}") from None
    return files
