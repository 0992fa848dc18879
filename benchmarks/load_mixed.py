"""Mixed load: valid /predict clients while others send the hostile inputs of issue 12 (127.0.0.1 only).

    python benchmarks/load_mixed.py                         # 10 valid clients x 2, recipe vits weights
    python benchmarks/load_mixed.py --input-size 266 --requests 3 --strips 10 --sigmas 10 --bombs 3

One studio is launched on a store holding one labelled image. Phase 1 (unloaded): the valid clients
alone, each sending its own 640x480 image to /predict. Phase 2 (mixed): the same valid clients again
while attackers send, concurrently, the 2000x8 PNG strip to /predict, a smoothing sigma of 2e7 to
/curate_apply, and a zip bomb (members of zeros far over the per-file cap) to /curate_import. Every
request count is fixed and every request has a timeout, so the run is bounded.

Prints requests served, outcomes by kind, p50/p95 latency of the valid requests in both phases and
their ratio, and the server's peak memory (RSS of the app and its children, sampled every 50 ms)
per phase. Exit status 1 when a valid request failed, a hostile one was not refused, or the mixed
p95 is over `--max-p95-ratio` x the unloaded p95.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_predict import ROOT, MemorySampler, recipe_checkpoint, start_app, test_images  # noqa: E402

sys.path.insert(0, str(ROOT))


def prepare_store(data_dir: Path) -> int:
    """The studio's store with one pseudo-labelled image (what the sigma attacker edits); its id."""
    from pipeline.store import Store
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "studio.db")
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    rec, _ = store.add_image(buf.getvalue(), "scene.png", width=64, height=48)
    store.add_prediction(rec.id, "teacher", "disparity", np.ones((48, 64), np.float32), confidence=0.5)
    return rec.id


def hostile_files(folder: Path) -> dict[str, Path]:
    strip = folder / "strip.png"
    noise = np.random.default_rng(1).integers(0, 256, (8, 2000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(strip)                                            # ~48 KB, like the issue's
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(8):
            zf.writestr(f"{i:02d}.png", b"\0" * (200 * 1024 ** 2))             # 8 x 200 MB of zeros
    return {"strip": strip, "bomb": bomb}


def classify(message: str) -> str:
    m = message.lower()
    if "aspect ratio" in m:
        return "refused: strip (aspect ratio)"
    if "sigma" in m or "maximum value" in m:
        return "refused: sigma out of range"
    if "timeout" in m or "timed out" in m:
        return "timeout"
    return "other error: " + message[:80]


def valid_client(url, image, requests, input_size, downloads, timeout):
    from gradio_client import Client, handle_file
    client = Client(url, download_files=str(downloads), verbose=False)
    out = []
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            *_, summary = client.submit(handle_file(str(image)), input_size=input_size,
                                        api_name="/predict").result(timeout=timeout)
            out.append(("valid: served", time.perf_counter() - t0))
        except Exception as e:                              # noqa: BLE001 - counted, not raised
            out.append((f"valid: FAILED {type(e).__name__}: {str(e)[:80]}", time.perf_counter() - t0))
    return out


def attacker(kind, url, count, files, image_id, downloads, timeout):
    from gradio_client import Client, handle_file
    client = Client(url, download_files=str(downloads), verbose=False)
    if kind == "sigma":
        client.predict(image_id, api_name="/curate_open")
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            if kind == "strip":
                client.submit(handle_file(str(files["strip"])), api_name="/predict").result(timeout=timeout)
                outcome = "NOT REFUSED: strip"
            elif kind == "sigma":
                client.submit("smooth", None, 2e7, None, api_name="/curate_apply").result(timeout=timeout)
                outcome = "NOT REFUSED: sigma"
            else:
                report = client.submit([handle_file(str(files["bomb"]))],
                                       api_name="/curate_import").result(timeout=timeout)
                outcome = ("refused: zip bomb (budget)" if "decompressed in total" in report or "limit per file"
                           in report else "NOT REFUSED: zip bomb")
        except Exception as e:                              # noqa: BLE001 - the expected refusals
            outcome = classify(str(e))
        out.append((outcome, time.perf_counter() - t0))
    return out


def run_phase(url, args, images, work, tag, files=None, image_id=None) -> tuple[list, int]:
    """(outcomes [(kind, seconds)], server peak RSS) of one phase."""
    sampler = MemorySampler(args._pid)
    sampler.start()
    jobs = []
    with ThreadPoolExecutor(args.clients + 3) as pool:
        for i, img in enumerate(images):
            jobs.append(pool.submit(valid_client, url, img, args.requests, args.input_size,
                                    work / f"{tag}-dl{i}", args.timeout))
        if files is not None:
            for kind, count in (("strip", args.strips), ("sigma", args.sigmas), ("bomb", args.bombs)):
                if count:
                    jobs.append(pool.submit(attacker, kind, url, count, files, image_id, work / f"{tag}-{kind}",
                                            args.timeout))
        outcomes = [o for j in jobs for o in j.result()]
    sampler.stop.set()
    sampler.join()
    return outcomes, sampler.peak


def summary(name: str, outcomes: list, peak: int, idle: int) -> np.ndarray:
    kinds = Counter(k for k, _ in outcomes)
    lat = np.array([s for k, s in outcomes if k == "valid: served"]) if kinds["valid: served"] else np.array([np.nan])
    print(f"\n{name}: {len(outcomes)} requests answered")
    for k, n in sorted(kinds.items()):
        print(f"  {n:4d}  {k}")
    print(f"  valid latency s: p50 {np.percentile(lat, 50):.2f}  p95 {np.percentile(lat, 95):.2f}  max {lat.max():.2f}")
    print(f"  server memory: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB (+{(peak - idle) / 2**20:.0f} MiB)")
    return lat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=10, help="valid /predict clients")
    p.add_argument("--requests", type=int, default=2, help="requests per valid client and phase")
    p.add_argument("--input-size", type=int, default=518)
    p.add_argument("--strips", type=int, default=10, help="2000x8 strips sent to /predict")
    p.add_argument("--sigmas", type=int, default=10, help="sigma=2e7 requests to /curate_apply")
    p.add_argument("--bombs", type=int, default=3, help="zip bombs sent to /curate_import")
    p.add_argument("--checkpoint", type=Path, help="weights file (default: the recipe vits weights)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    p.add_argument("--max-p95-ratio", type=float, default=2.0)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="load_mixed_"))
    checkpoint = args.checkpoint or recipe_checkpoint(work)
    images = test_images(work, args.clients)
    files = hostile_files(work)
    print(f"zip bomb: {files['bomb'].stat().st_size / 2**20:.1f} MB holding 1600 MB of zeros; "
          f"strip: {files['strip'].stat().st_size / 1024:.1f} KB")
    image_id = prepare_store(work / "data")
    proc, url = start_app(work, checkpoint)
    args._pid = proc.pid
    try:
        idle = MemorySampler(proc.pid).rss()
        run_phase(url, argparse.Namespace(**{**vars(args), "requests": 1}), images[:1], work, "warm")   # load the model
        unloaded, peak0 = run_phase(url, args, images, work, "unloaded")
        mixed, peak1 = run_phase(url, args, images, work, "mixed", files, image_id)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{args.clients} valid clients x {args.requests} requests (640x480, input size {args.input_size}, CPU); "
          f"attackers: {args.strips} strips, {args.sigmas} sigmas, {args.bombs} zip bombs")
    lat0 = summary("unloaded", unloaded, peak0, idle)
    lat1 = summary("mixed", mixed, peak1, idle)
    ratio = np.percentile(lat1, 95) / np.percentile(lat0, 95)
    print(f"\nvalid p95 mixed / unloaded: {ratio:.2f}x (limit {args.max_p95_ratio}x)")
    bad = [k for k, _ in unloaded + mixed if "FAILED" in k or "NOT REFUSED" in k or k.startswith("other")]
    bad += [f"p95 ratio {ratio:.2f}"] if not ratio <= args.max_p95_ratio else []
    print("PASS" if not bad else f"FAIL: {Counter(bad)}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
