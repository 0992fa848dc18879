"""Pseudo-labelling throughput through the store vs the bare predictor, same images, same run.

    python benchmarks/bench_pseudo_label.py [--encoder vits] [--images 8] [--size 480x640]
                                            [--input-size 518] [--device cpu] [--repeats 2]

Like with like: pseudo-labelling runs TWO forward passes per image (the image and its
horizontal flip, one batch of two, for the confidence). The bare side therefore runs
`Predictor.predict_many([image, flipped image], batch_size=2)` for each image: the same
forward passes, the same decoding from a file, but no store read, no confidence, no array
or SQLite write. Ratio = store images/s / bare images/s; the issue's target is >= 0.90
(the store is not the bottleneck). The two sides alternate, each repeat with a new model id
so the store side really predicts and writes every image again. Untrained weights (speed
does not depend on their values).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import ModelConfig  # noqa: E402
from pipeline.files.image_io import decode_image  # noqa: E402
from pipeline.intake.pseudo_label import run_pseudo_label, write_one  # noqa: E402
from pipeline.predictor import Predictor  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.weights.loading import untrained_model  # noqa: E402


def make_images(folder: Path, n: int, h: int, w: int) -> list[Path]:
    """Smooth random pictures saved as JPEG (a realistic decode cost)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        paths.append(folder / f"img{i:04d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def bare(predictor: Predictor, paths: list[Path]) -> float:
    """Images per second: decode + predict image and flip (batch of two), nothing kept."""
    t0 = time.perf_counter()
    for p in paths:
        rgb = decode_image(p).rgb
        predictor.predict_many([rgb, np.ascontiguousarray(rgb[:, ::-1])], batch_size=2)
    return len(paths) / (time.perf_counter() - t0)


def through_store(predictor: Predictor, store: Store, overlap: bool | None) -> float:
    summary = run_pseudo_label(store, predictor, overlap=overlap)
    assert summary.done == len(store.image_ids()), summary.as_dict()
    return summary.done / summary.seconds


def store_side_seconds(store: Store, predictor: Predictor) -> float:
    """Median seconds per image of the work bare prediction does not do: reading the stored
    bytes (hash check), the flip-consistency score, and the one-transaction write."""
    fake = argparse.Namespace(model_id="overhead", kind=predictor.kind)
    times = []
    for image_id in store.image_ids():
        array = store.prediction_array(store.get_prediction(image_id, "bench-0"))
        t0 = time.perf_counter()
        store.image_bytes(image_id)
        write_one(store, fake, image_id, (array, array[:, ::-1]))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="vits")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="480x640", help="HxW of the test images")
    ap.add_argument("--input-size", type=int, default=518)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                    help="write on a second thread while predicting the next image (auto: on for CUDA)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = (int(x) for x in args.size.lower().split("x"))
    loaded = untrained_model(ModelConfig(encoder=args.encoder))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp, args.images, h, w)
        store = Store(tmp / "bench.db")
        for p in paths:
            store.add_image(p.read_bytes(), p.name, width=w, height=h)
        warm = Predictor(loaded, device=args.device, input_size=args.input_size, model_id="warm-up")
        bare(warm, paths[:1])
        bare_rates, store_rates = [], []
        for r in range(args.repeats):
            pred = Predictor(loaded, device=args.device, input_size=args.input_size, model_id=f"bench-{r}")
            bare_rates.append(bare(pred, paths))
            store_rates.append(through_store(pred, store, {"auto": None, "on": True, "off": False}[args.overlap]))
        b, s = float(np.median(bare_rates)), float(np.median(store_rates))
        extra = store_side_seconds(store, warm)
        print(f"device {warm.device}, encoder {args.encoder}, {args.images} images {h}x{w}, input "
              f"{args.input_size}, 2 forward passes per image on both sides, {args.repeats} repeats")
        print(f"bare predictor  : {b:8.3f} images/s  (runs: {', '.join(f'{x:.3f}' for x in bare_rates)})")
        print(f"through store   : {s:8.3f} images/s  (runs: {', '.join(f'{x:.3f}' for x in store_rates)})")
        print(f"ratio store/bare: {s / b:.3f}  (target >= 0.90; overlap {args.overlap})")
        print(f"store-side work : {extra * 1000:8.1f} ms per image = {extra * b * 100:.1f}% of a bare image's "
              f"time (read + hash check, flip consistency, one-transaction write)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
