"""Where the time of one depth request goes, on CPU, for a 640x480 image.

    python benchmarks/bench_studio.py                 # in-process and over HTTP, recipe vits weights
    python benchmarks/bench_studio.py --no-http --repeats 5 --checkpoint FILE

1. In process (`DepthService.run`): inference (preprocess + network + resize back), colour map,
   the files /predict sends (colour PNG, .npy, with the exact pixels), the viewer's point cloud
   (counted: with no voxel or outlier filter it is made when first asked), decode; shares of the
   total. (The slider JPEG, 16-bit PNG and viewer .ply are made when first asked: the page's `show`,
   /export.) Target: everything outside the network < 15 % of the total.
2. Over HTTP (launched app.py, /predict: upload, queue, the two files it sends downloaded):
   request to all outputs, and the share spent outside the network. Target: <= 15 %. Five clients,
   their requests interleaved: gradio_client as installed (it builds a new HTTP client for every
   upload, stream and download, and by default each one loads the CA certificate bundle, ~25 ms,
   even for a plain http:// URL: the cost of one such load is measured in the same run and
   printed), the same client given one verified SSL context for all its calls (`ssl_verify=
   httpx.create_ssl_context()`, as the README's API example does; certificates still checked on
   https), the same client with `ssl_verify=False` (nothing else changes on plain HTTP), a
   client that wants the values only (`download_files=False`, then the .npy fetched), and Gradio's
   documented HTTP API with no client library (the curl route of Gradio's docs: upload,
   POST /gradio_api/call/predict, its event stream, the two files; one keep-alive connection and one
   session hash for all calls, as a page has). gradio_client reads the event stream in one thread and
   looks for the result in another every 50 ms (`gradio_client.utils.stream_sse_v1plus`): ~25 ms on
   average between the result arriving and the client using it, which the plain-HTTP row does not pay,
   so that row is what the server itself costs.
   After them, /export with no formats (every file of the request, the 16-bit PNG and the viewer's .ply
   among them) and /export of the every-pixel .ply, for each request: what a client who wants them pays.
3. Point cloud + .ply alone for a 518x770 prediction. Target: < 150 ms.
Medians over --repeats runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_predict import EXAMPLES, recipe_checkpoint, start_app  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
VALUES_ONLY = "light, values only (.npy)"
STAGES = ("inference", "model_load", "color_map", "sent_files", "point_cloud", "decode")


def median_timings(summaries: list[dict]) -> dict:
    keys = [*STAGES, "total"]
    return {k: float(np.median([s["timings_ms"].get(k, 0.0) for s in summaries])) for k in keys}


def in_process(checkpoint: Path, image: Path, repeats: int, work: Path) -> dict:
    from pipeline.services.depth_service import DepthService
    from pipeline.settings import StudioSettings
    service = DepthService(StudioSettings(data_dir=work / "data", device="cpu"), sources=[], default=str(checkpoint))
    service.run(str(image))                                                     # warm-up (load, kernels)
    t = median_timings([service.run(str(image)).summary for _ in range(repeats)])
    print(f"\n1. in process, 640x480, input size 518, median of {repeats} (ms and share of total)")
    for k in STAGES:
        print(f"   {k:13s} {t[k]:8.1f}  {100 * t[k] / t['total']:5.1f} %")
    outside = t["total"] - t["inference"]
    print(f"   {'total':13s} {t['total']:8.1f}   (a filtered point cloud is built beside the files sent; "
          f"unfiltered, it is only counted here)")
    print(f"   outside the network: {outside:.1f} ms = {100 * outside / t['total']:.1f} % (target < 15 %)")
    return t


def _values_only(client, image: Path) -> dict:
    """A client that wants the values only: no automatic downloads (URLs back), then the .npy fetched."""
    import httpx
    from gradio_client import handle_file
    t0 = time.perf_counter()
    colour, npy, summary = client.predict(handle_file(str(image)), api_name="/predict")
    depth = np.load(io.BytesIO(httpx.get(npy["url"], verify=False).content))
    return {"wall": 1000 * (time.perf_counter() - t0), "summary": summary, "bytes": depth.nbytes + 128}


def _plain_http(http, image: Path, inputs: list) -> dict:
    """Gradio's HTTP API without a client library: upload, POST /call/predict, its event stream, both files."""
    import json
    t0 = time.perf_counter()
    with open(image, "rb") as f:
        uploaded = http.post("gradio_api/upload", files={"files": (image.name, f, "image/png")}).json()[0]
    data = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, *inputs]
    event_id = http.post("gradio_api/call/predict", json={"data": data, "session_hash": SESSION}).json()["event_id"]
    event, out = None, None
    with http.stream("GET", f"gradio_api/call/predict/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[len("event:"):].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                out = json.loads(line[len("data:"):])
                break
    if event != "complete":
        raise RuntimeError(f"/call/predict ended with {event}: {out}")
    colour, npy, summary = out[:3]
    size = len(http.get(colour["url"]).content) + len(http.get(npy["url"]).content)
    return {"wall": 1000 * (time.perf_counter() - t0), "summary": summary, "bytes": size}


def _one_request(client, image: Path) -> dict:
    """/predict with every output downloaded."""
    from gradio_client import handle_file
    t0 = time.perf_counter()
    colour, npy, summary = client.predict(handle_file(str(image)), api_name="/predict")
    wall = 1000 * (time.perf_counter() - t0)
    size = sum(Path(p).stat().st_size for p in (colour, npy))
    return {"wall": wall, "summary": summary, "bytes": size}


def _exports(client, request: str) -> tuple[float, float, int]:
    """/export of every file of a request, then of the every-pixel .ply -> (ms, ms, number of files)."""
    t0 = time.perf_counter()
    files, _ = client.predict(request, [], api_name="/export")
    t1 = time.perf_counter()
    client.predict(request, ["ply"], api_name="/export")
    return 1000 * (t1 - t0), 1000 * (time.perf_counter() - t1), len(files)


def ca_bundle_load_ms(n: int = 10) -> float:
    """What gradio_client pays per HTTP call it makes with ssl_verify=True (a new httpx client each time)."""
    import httpx
    t0 = time.perf_counter()
    for _ in range(n):
        httpx.create_ssl_context()
    return 1000 * (time.perf_counter() - t0) / n


STOCK, NO_CA, ONE_CTX = "gradio_client as installed", "ssl_verify=False", "one SSL context (README)"
PLAIN, SESSION = "HTTP API, no client library", "bench-studio-session"


def over_http(checkpoint: Path, image: Path, repeats: int, work: Path, threads: int) -> None:
    """One app; five clients' requests interleaved, so a change in the machine's load hits all of them."""
    import httpx
    from gradio_client import Client
    results = {name: [] for name in (STOCK, ONE_CTX, NO_CA, VALUES_ONLY, PLAIN)}
    (work / "app").mkdir()
    proc, url = start_app(work / "app", checkpoint, {"OMP_NUM_THREADS": str(threads)})
    try:
        clients = {STOCK: Client(url, download_files=str(work / "dl-stock"), verbose=False),
                   ONE_CTX: Client(url, download_files=str(work / "dl-ctx"), verbose=False,
                                   ssl_verify=httpx.create_ssl_context()),
                   NO_CA: Client(url, download_files=str(work / "dl-noca"), verbose=False, ssl_verify=False),
                   VALUES_ONLY: Client(url, download_files=False, verbose=False, ssl_verify=False)}
        http = httpx.Client(base_url=url, timeout=60)                             # one keep-alive connection
        inputs = [p.get("parameter_default") for p in clients[STOCK].view_api(print_info=False, return_format="dict")
                  ["named_endpoints"]["/predict"]["parameters"][1:]]               # the page's defaults
        _one_request(clients[STOCK], image)                                        # warm-up
        _plain_http(http, image, inputs)
        for _ in range(repeats):
            results[STOCK].append(_one_request(clients[STOCK], image))
            results[ONE_CTX].append(_one_request(clients[ONE_CTX], image))
            results[NO_CA].append(_one_request(clients[NO_CA], image))
            results[VALUES_ONLY].append(_values_only(clients[VALUES_ONLY], image))
            results[PLAIN].append(_plain_http(http, image, inputs))
        exports = [_exports(clients[NO_CA], r["summary"]["request"]) for r in results[NO_CA]]   # after: their
        # writing (a zip, the every-pixel cloud) would otherwise slow the /predict that follows
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\n2. over HTTP (gradio_client: upload + queue + the files /predict sends downloaded), median of {repeats}, "
          "the five clients' requests interleaved")
    print(f"   {'':28s} {'request':>9s} {'inference':>10s} {'outside':>9s} {'share':>7s} {'payload':>9s}")
    for name, rs in results.items():
        wall = float(np.median([r["wall"] for r in rs]))
        inference = float(np.median([r["summary"]["timings_ms"]["inference"] for r in rs]))
        outside = float(np.median([r["wall"] - r["summary"]["timings_ms"]["inference"] for r in rs]))
        share = float(np.median([(r["wall"] - r["summary"]["timings_ms"]["inference"]) / r["wall"] for r in rs]))
        print(f"   {name:28s} {wall:7.1f}ms {inference:8.1f}ms {outside:7.1f}ms {100 * share:6.1f}% "
              f"{rs[-1]['bytes'] / 1e6:7.2f}MB")
    print(f"   (target share <= 15 %; gradio_client makes a new HTTP client for the upload, the queue stream and each "
          f"download; loading the CA bundle costs {ca_bundle_load_ms():.1f} ms each time, measured now; it also looks "
          f"for the result every 50 ms: ~25 ms on average)")
    every, full, count = zip(*exports, strict=True)
    print(f"   /export of every file of the request ({count[-1]} files + a zip): "
          f"{float(np.median(every)):.1f} ms; of the every-pixel .ply (built when asked): {float(np.median(full)):.1f} ms")


def point_cloud_alone(repeats: int, work: Path) -> float:
    from pipeline.geometry import pointcloud
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
