"""Sharded labelling throughput: 1 process vs torchrun ranks vs the store job vs the bare predictor, same images.

    python benchmarks/bench_shards.py                           # CPU: vits, 12 JPEGs 480x640, 2 ranks
    python benchmarks/bench_shards.py --device cuda --images 512 --batch-size 16 --workers 8 --ranks 1
                                                                # a GPU: labelling vs bare batched predictor

Every side labels the same JPEG files with the same untrained weights (speed does not depend
on their values), two forward passes per image (the image and its flip), input 518:
- bare predictor: images decoded beforehand, `pseudo_label.flip_pairs` in batches of
  --batch-size: the model alone (the GPU goal: sharded labelling within 10 % of it);
- store job: `run_pseudo_label` into a store, one image (and its flip) per forward;
- sharded, one process, --workers 0 and --workers N: `python -m pipeline pseudo-label
  --manifest`; the rank's own images/s (model load excluded), the share of its time spent in
  the model ("busy"; the rest is overhead the bare predictor does not have) and the time the
  model waited for decoded images (decode/inference overlap; the first batch also waits for
  the workers to start);
- sharded, torchrun --nproc-per-node=--ranks: per-rank and total images/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import ModelConfig  # noqa: E402
from pipeline.files.image_io import decode_image  # noqa: E402
from pipeline.intake.images import import_paths  # noqa: E402
from pipeline.intake.pseudo_label import flip_pairs, run_pseudo_label  # noqa: E402
from pipeline.predictor import Predictor  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.weights.loading import save_checkpoint, untrained_model  # noqa: E402


def make_images(folder: Path, n: int, h: int, w: int) -> list[Path]:
    """Smooth random pictures saved as JPEG (a realistic decode cost)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        paths.append(folder / f"img{i:05d}.jpg")
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(paths[-1], quality=90)
    return paths


def bare(predictor: Predictor, paths: list[Path], batch: int) -> float:
    rgbs = [decode_image(p).rgb for p in paths]
    flip_pairs(predictor, rgbs[:1])                                       # warm-up
    t0 = time.perf_counter()
    for a in range(0, len(rgbs), batch):
        flip_pairs(predictor, rgbs[a:a + batch])
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return len(rgbs) / (time.perf_counter() - t0)


def sharded(manifest: Path, ck: Path, out: Path, args, *, workers: int, ranks: int) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "pipeline"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m", "pipeline"]
    cmd += ["pseudo-label", "--manifest", str(manifest), "--checkpoint", str(ck), "--out", str(out),
            "--batch-size", str(args.batch_size), "--workers", str(workers), "--shard-size", str(args.shard_size),
            "--input-size", str(args.input_size)] + (["--device", args.device] if args.device else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ranks > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def sides(args, tmp: Path, paths: list[Path], manifest: Path, ck: Path, predictor: Predictor) -> dict:
    """name -> function returning (images/s, note); the sides a round measures."""
    out: dict = {f"bare predictor, decoded in memory, batches of {args.batch_size}":
                 lambda r: (bare(predictor, paths, args.batch_size), "")}
    if not args.skip_store:
        def store_job(r):
            store = Store(tmp / f"job-{r}.db")
            import_paths(store, [tmp / "img"])
            return run_pseudo_label(store, predictor).images_per_s, ""
        out["store job (`pseudo-label --db`), one image per forward"] = store_job
    for workers, ranks in ((0, 1), (args.workers, 1), (args.workers, args.ranks)):
        def shard_side(r, workers=workers, ranks=ranks):
            summary, wall = sharded(manifest, ck, tmp / f"out-{workers}-{ranks}-{r}", args, workers=workers,
                                    ranks=ranks)
            per_rank = ", ".join(f"rank {x['rank']} {x['images_per_s']:.3f} img/s, model busy "
                                 f"{x['predict_s'] / x['seconds']:.1%}, waited for data {x['data_wait_s']:.2f} s "
                                 f"({x['data_wait_share']:.1%}; after the first batch {x['steady_wait_share']:.1%})"
                                 for x in summary["ranks"])
            return summary["images_per_s"], f"{per_rank}; command {args.images / wall:.3f} img/s with start-up"
        out[f"sharded, {ranks} process{'es' if ranks > 1 else ''}, {workers} decode workers"] = shard_side
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="vits")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="480x640", help="HxW of the JPEGs")
    ap.add_argument("--input-size", type=int, default=518)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of the overlapped runs")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="rounds; each round measures every side once")
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-store", action="store_true", help="leave out the store job (slow on big runs)")
    args = ap.parse_args(argv)
    h, w = (int(x) for x in args.size.lower().split("x"))
    results: dict[str, list[tuple[float, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        paths = make_images(tmp / "img", args.images, h, w)
        manifest = tmp / "list.txt"
        manifest.write_text("\n".join(str(p) for p in paths) + "\n")
        loaded = untrained_model(ModelConfig(encoder=args.encoder))
        ck = save_checkpoint(loaded.model, tmp / "teacher.safetensors", model_id="bench-teacher")
        predictor = Predictor(loaded, device=args.device, input_size=args.input_size, model_id="bench-teacher")
        for r in range(args.repeats):                       # interleaved: load changes hit every side alike
            for name, fn in sides(args, tmp, paths, manifest, ck, predictor).items():
                results.setdefault(name, []).append(fn(r))
                print(f"round {r + 1}: {name}: {results[name][-1][0]:.3f} img/s", flush=True)
    print(f"\ndevice {predictor.device}, {args.encoder}, {args.images} JPEGs {h}x{w}, input {args.input_size}, "
          f"2 forward passes per image, torch threads {torch.get_num_threads()}, medians of {args.repeats} rounds")
    print("| side | images/s | vs bare | per rank (last round): images/s, share of time in the model, waiting for data |")
    print("|---|---|---|---|")
    ref = float(np.median([x for x, _ in next(iter(results.values()))]))
    for name, runs in results.items():
        rate = float(np.median([x for x, _ in runs]))
        print(f"| {name} | {rate:.3f} | {rate / ref:.2f}x | {runs[-1][1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
