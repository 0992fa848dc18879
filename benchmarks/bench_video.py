"""Video depth: flicker of raw vs aligned output, speed of the video path vs inference alone, memory.

    python benchmarks/bench_video.py [--frames 32] [--input-size 518] [--checkpoint FILE] [--device cpu]
    python benchmarks/bench_video.py --memory [--memory-frames 150 600] [--input-size 140]

Clips (made here from a real photo with ground truth: the Middlebury 2014 motorcycle of
scikit-image, 741 x 500, its true disparity cropped and moved the same way):
- light: static camera, the light dims and brightens (gain 0.55..1.15 with a flicker), and a
  green square moves across the lower third (a moving object: its pixels are not "static");
- pan:   a 448 x 336 window sliding 4 px per frame to the right (a panning camera).
Figures (lower is better), each for raw output (each frame's own scale and shift, as the
official video scripts produce; shown with one clip-level normalisation and with their per-frame
min-max normalisation) and for the aligned output (pipeline/video/align.py):
- flicker: mean |n_t - n_(t-1)| of the normalised disparity n = (d - p2) / (p98 - p2) (clip-level
  percentiles) on pixels that did not move (light: outside the square in both frames; pan: the
  overlap of the two windows, compared at the same scene point);
- TAE (Video Depth Anything's temporal alignment error): the sequence aligned to the ground
  truth with ONE scale and shift (disparity), turned into depth, and AbsRel between frame k
  moved to k+1 (the known motion) and frame k+1, averaged both ways, on valid ground truth.
Speed: frames/s of `predict_video` end to end (decode, batched inference, alignment, two passes,
H.264 + npz writing) vs `Predictor.predict_many` alone on the same already-decoded frames with
the same batch size, measured in the same process just before. The video path's overhead goal:
<= 10%. On a shared machine the two runs see different loads, so the in-run overhead is printed
too: (end-to-end time - its own inference time) / its inference time.
`--memory`: peak RSS of a separate process running `predict_video` on 640x360 clips of each
length (it should not grow with the clip).
Weights: `--checkpoint` (a real Depth Anything .pth gives meaningful depth); default the
deterministic recipe vits weights of ../shared/reference (no download possible here).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.files.sample_data import motorcycle_sample  # noqa: E402
from pipeline.predictor import Predictor  # noqa: E402
from pipeline.video import synthetic  # noqa: E402
from pipeline.video.io import VideoReader  # noqa: E402
from pipeline.video.process import VideoOptions, predict_video  # noqa: E402

PAN = dict(size=(336, 448), step=4, y0=80, x0=0)
MOVER = 60


def recipe_predictor(device: str, input_size: int) -> Predictor:
    """The deterministic recipe vits weights, saved as an official .pth and loaded like one."""
    import torch
    sys.path.insert(0, str(ROOT.parent / "shared" / "reference"))
    import make_weights
    shapes = json.loads((ROOT.parent / "shared" / "reference" / "official_state_dict_shapes.json").read_text())
    state = {k: torch.from_numpy(v) for k, v in make_weights.make_state_dict(shapes["shapes"]["vits"]).items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "depth_anything_v2_vits.pth"
        torch.save(state, path)
        return Predictor.from_checkpoint(path, device=device, input_size=input_size, model_id="recipe-vits")


def make_clips(folder: Path, n: int) -> dict:
    """{name: (path, gt disparity per frame (callable t -> (H, W)), moved(t) -> static mask, shift px)}."""
    rgb, gt, _ = motorcycle_sample()
    rgb, gt = rgb[:, :740], gt[:, :740]                    # even sides: H.264 frames are not padded
    gt = np.where(np.isfinite(gt), gt, np.nan).astype(np.float32)
    h, w = PAN["size"]
    y0, x0, step = PAN["y0"], PAN["x0"], PAN["step"]
    n_pan = min(n, (rgb.shape[1] - w - x0) // step + 1)
    pan = synthetic.write_clip(folder / "pan.mp4", synthetic.pan_frames(rgb, n_pan, (h, w), step, y0, x0))
    light = synthetic.write_clip(folder / "light.mp4",
                                 synthetic.light_frames(rgb, synthetic.light_gains(n), mover=MOVER))

    def light_static(t: int) -> np.ndarray:
        m = np.ones(rgb.shape[:2], bool)
        for u in (t - 1, t):
            m[synthetic.mover_box(u, rgb.shape[:2], MOVER)] = False
        return m
    return {"light": (light, lambda t: gt, light_static, 0),
            "pan": (pan, lambda t: gt[y0:y0 + h, x0 + t * step:x0 + t * step + w], None, step)}


def normalised(seq: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """Clip-level (p2, p98) -> (0, 1); with per_frame, each frame min-max scaled first (the official scripts)."""
    if per_frame:
        lo = seq.min(axis=(1, 2), keepdims=True)
        hi = seq.max(axis=(1, 2), keepdims=True)
        seq = (seq - lo) / np.maximum(hi - lo, 1e-12)
    lo, hi = np.percentile(seq[:, ::4, ::4], (2, 98))          # one unit for every variant
    return (seq - lo) / max(hi - lo, 1e-12)


def pairs(a: np.ndarray, b: np.ndarray, static, shift: int, t: int):
    """Frame t-1 (a) and t (b) at the same scene points: overlap for a pan, static pixels otherwise."""
    if shift:
        return a[:, shift:], b[:, :-shift]
    m = static(t)
    return a[m], b[m]


def flicker(seq: np.ndarray, static, shift: int, per_frame: bool = False) -> float:
    n = normalised(seq, per_frame)
    return float(np.mean([np.mean(np.abs(x - y)) for t in range(1, len(n))
                          for x, y in [pairs(n[t - 1], n[t], static, shift, t)]]))


def tae(seq: np.ndarray, gt_of, static, shift: int) -> float:
    """VDA's temporal alignment error with one global scale+shift to the ground truth."""
    gts = np.stack([gt_of(t) for t in range(len(seq))])
    ok = np.isfinite(gts) & (gts > 0)
    x, y = seq[ok][::7].astype(np.float64), gts[ok][::7].astype(np.float64)
    s, b = np.polyfit(x, y, 1)
    depth = 1.0 / np.maximum(s * seq + b, 1e-3)
    errs = []
    for t in range(1, len(seq)):
        d0, d1 = pairs(depth[t - 1], depth[t], static, shift, t)
        v0, v1 = pairs(ok[t - 1], ok[t], static, shift, t)
        v = v0 & v1
        errs.append(0.5 * (np.mean(np.abs(d0[v] - d1[v]) / d1[v]) + np.mean(np.abs(d1[v] - d0[v]) / d0[v])))
    return float(np.mean(errs))


def inference_alone(predictor: Predictor, path: Path, batch: int) -> tuple[int, float]:
    with VideoReader(path) as r:
        frames = [f.rgb for f in r.frames()]
    predictor.predict_many(frames[:batch], batch_size=batch)                # warm-up
    t = time.perf_counter()
    for i in range(0, len(frames), batch):
        predictor.predict_many(frames[i:i + batch], batch_size=batch)
    return len(frames), time.perf_counter() - t


def quality(args) -> None:
    predictor = (Predictor.from_checkpoint(args.checkpoint, device=args.device, input_size=args.input_size)
                 if args.checkpoint else recipe_predictor(args.device, args.input_size))
    print(f"model {predictor.model_id}, input size {args.input_size}, device {predictor.device}, "
          f"batch {args.batch_size}, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(Path(tmp), args.frames)
        rows = []
        for name, (path, gt_of, static, shift) in clips.items():
            inference_alone(predictor, path, args.batch_size)              # warm both paths once
            n, t_inf = inference_alone(predictor, path, args.batch_size)
            res = predict_video(predictor, path, tmp, options=VideoOptions(batch_size=args.batch_size))
            z = np.load(res.files["npz"])
            aligned, scale, sh = z["depth"], z["scale"], z["shift"]
            raw = (aligned - sh[:, None, None]) / scale[:, None, None]
            sec = res.seconds
            in_run = (sec["total"] - sec["inference"]) / sec["inference"]       # same run: immune to load changes
            rows.append((name, n, flicker(raw, static, shift, per_frame=True), flicker(raw, static, shift),
                         flicker(aligned, static, shift), tae(raw, gt_of, static, shift),
                         tae(aligned, gt_of, static, shift), n / t_inf, n / sec["total"], sec["total"] / t_inf - 1,
                         in_run, sec))
    print("\n(flicker in fractions of the clip's 2-98% disparity range; TAE as AbsRel)")
    print("clip   frames  flicker raw(minmax)  raw   aligned   TAE raw  aligned   fps infer  e2e  overhead  "
          "in-run overhead")
    for r in rows:
        print(f"{r[0]:6s} {r[1]:5d}   {r[2]:10.4f}  {r[3]:9.4f} {r[4]:8.4f}   {r[5]:7.4f}  {r[6]:7.4f}"
              f"   {r[7]:6.2f}  {r[8]:6.2f}  {100 * r[9]:+6.1f}%  {100 * r[10]:+6.1f}%")
    for r in rows:
        print(f"{r[0]} seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r[11].items()))


def memory_child(frames: int, input_size: int) -> None:
    """Run in a fresh process: one 640x360 clip of `frames` frames; print the peak RSS."""
    from pipeline.config import ModelConfig
    from pipeline.weights.loading import untrained_model
    rgb, _, _ = motorcycle_sample()
    big = np.concatenate([rgb, rgb[:, ::-1]], axis=1)                                  # 1482 wide: room to pan
    with tempfile.TemporaryDirectory() as tmp:
        photo = big[:360 + 100]
        n_pos = (photo.shape[1] - 640) // 2
        frames_it = (np.ascontiguousarray(photo[50:410, 2 * (t % n_pos):2 * (t % n_pos) + 640]) for t in range(frames))
        path = synthetic.write_clip(Path(tmp) / "long.mp4", frames_it, fps=30)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        predictor = Predictor(untrained_model(ModelConfig(encoder="vits")), device="cpu", input_size=input_size)
        res = predict_video(predictor, path, tmp, options=VideoOptions(side_by_side=True))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"frames": res.frames, "peak_mb": peak / 1024, "before_mb": before / 1024,
                          "npz_mb": res.files["npz"].stat().st_size / 2 ** 20, "seconds": res.seconds["total"]}))


def memory(args) -> None:
    print("frames  640x360  peak RSS (MB)  npz on disk (MB)  seconds")
    for n in args.memory_frames:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--input-size", str(args.input_size)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['frames']:6d}           {r['peak_mb']:8.0f}       {r['npz_mb']:8.0f}        {r['seconds']:6.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--input-size", type=int, default=518)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--memory-frames", type=int, nargs="+", default=[150, 600])
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.input_size)
    elif args.memory:
        memory(args)
    else:
        quality(args)


if __name__ == "__main__":
    main()
