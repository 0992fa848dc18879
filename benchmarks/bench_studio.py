"""Where the time of one depth request goes, on CPU, for a 640x480 image.

    python benchmarks/bench_studio.py                 # in-process and over HTTP, recipe vits weights
    python benchmarks/bench_studio.py --no-http --repeats 5 --checkpoint FILE

1. In process (`DepthService.run`): inference (preprocess + network + resize back), colour map
   (+ grayscale), 16-bit PNG encode, point cloud (+ .ply), the rest (decode, .npy, PNG/JPEG views);
   shares of the total. Target: everything outside the network < 15 % of the total.
2. Over HTTP (launched app.py, gradio_client /predict, files downloaded): request to all outputs,
   and the share taken by Gradio and transport.
3. Point cloud + .ply alone for a 518x770 prediction. Target: < 150 ms.
Medians over --repeats runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_predict import EXAMPLES, recipe_checkpoint, start_app  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
STAGES = ("inference", "color_map", "encode_16bit", "point_cloud", "decode", "other_files")


def median_timings(summaries: list[dict]) -> dict:
    keys = [*STAGES, "total"]
    return {k: float(np.median([s["timings_ms"].get(k, 0.0) for s in summaries])) for k in keys}


def in_process(checkpoint: Path, image: Path, repeats: int, work: Path) -> dict:
    from pipeline.depth_service import DepthService
    from pipeline.settings import StudioSettings
    service = DepthService(StudioSettings(data_dir=work / "data", device="cpu"), sources=[], default=str(checkpoint))
    service.run(str(image))                                                     # warm-up (load, kernels)
    t = median_timings([service.run(str(image)).summary for _ in range(repeats)])
    print(f"\n1. in process, 640x480, input size 518, median of {repeats} (ms and share of total)")
    for k in STAGES:
        print(f"   {k:13s} {t[k]:8.1f}  {100 * t[k] / t['total']:5.1f} %")
    outside = t["total"] - t["inference"]
    print(f"   {'total':13s} {t['total']:8.1f}   (16-bit encode, point cloud and other files run in parallel "
          f"threads, so the stages add up to more than the total)")
    print(f"   outside the network: {outside:.1f} ms = {100 * outside / t['total']:.1f} % (target < 15 %)")
    return t


def over_http(checkpoint: Path, image: Path, repeats: int, work: Path, threads: int) -> None:
    from gradio_client import Client, handle_file
    proc, url = start_app(work, checkpoint, {"OMP_NUM_THREADS": str(threads)})
    try:
        client = Client(url, download_files=str(work / "downloads"), verbose=False)
        client.predict(handle_file(str(image)), api_name="/predict")            # warm-up
        walls, summaries = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            *_, summary = client.predict(handle_file(str(image)), api_name="/predict")
            walls.append(1000 * (time.perf_counter() - t0))
            summaries.append(summary)
    finally:
        proc.terminate()
        proc.wait(10)
    wall, t = float(np.median(walls)), median_timings(summaries)
    gradio = wall - t["total"]
    print(f"\n2. over HTTP (gradio_client, upload + queue + all files downloaded), median of {repeats}")
    print(f"   request to all outputs {wall:.1f} ms: server work {t['total']:.1f} ms, "
          f"Gradio + transport {gradio:.1f} ms ({100 * gradio / wall:.1f} %)")
    outside = wall - t["inference"]
    print(f"   network inference {t['inference']:.1f} ms = {100 * t['inference'] / wall:.1f} %; everything else "
          f"{outside:.1f} ms = {100 * outside / wall:.1f} % (target < 15 %)")


def point_cloud_alone(repeats: int, work: Path) -> float:
    from pipeline import pointcloud
    rng = np.random.default_rng(0)
    h, w = 518, 770
    yy, xx = np.mgrid[0:h, 0:w]
    disparity = (1.0 + 3.0 * yy / h + 0.2 * np.sin(xx / 30.0)).astype(np.float32)    # (H, W) ground plane-ish
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        pcd = pointcloud.make_point_cloud(rgb, disparity, "disparity", axes="opengl")
        pointcloud.write_ply(work / "bench.ply", pcd)
        times.append(1000 * (time.perf_counter() - t0))
    ms = float(np.median(times[1:]))
    print(f"\n3. point cloud + .ply for 518x770 ({len(pcd.points):,} points): {ms:.1f} ms (target < 150 ms)")
    return ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="weights file (default: the recipe vits weights)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-http", action="store_true", help="skip the launched-app measurement")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_studio_"))
    checkpoint = args.checkpoint or recipe_checkpoint(work)
    image = work / "bench_640x480.png"
    Image.open(EXAMPLES[0]).convert("RGB").resize((640, 480)).save(image)
    print(f"CPU, {args.threads} torch threads, weights {checkpoint.name}")
    in_process(checkpoint, image, args.repeats, work)
    if not args.no_http:
        over_http(checkpoint, image, args.repeats, work, args.threads)
    point_cloud_alone(args.repeats, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
