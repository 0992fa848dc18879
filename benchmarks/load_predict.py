"""Load test: N concurrent gradio_client clients hitting /predict on a launched studio (CPU).

    python benchmarks/load_predict.py                      # 10 clients x 1 request, recipe vits weights
    python benchmarks/load_predict.py --clients 10 --requests 2 --input-size 518 --checkpoint FILE

Each client sends its own 640x480 image; every answer is checked against an in-process prediction
with the same weights (max abs difference), so crossed or wrong answers fail the run. Prints the
server's peak memory (RSS, sampled every 50 ms with psutil) next to its idle memory, and latency
percentiles. Exit status 1 when any answer is wrong or late.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE_DIR = Path(os.environ.get("DA_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.jpg"))


def recipe_checkpoint(folder: Path) -> Path:
    """The deterministic vits weights of ../shared/reference/make_weights.py, as an official .pth."""
    import json

    import torch
    sys.path.insert(0, str(REFERENCE_DIR))
    import make_weights
    shapes = json.loads((REFERENCE_DIR / "official_state_dict_shapes.json").read_text())["shapes"]["vits"]
    path = folder / "depth_anything_v2_vits.pth"
    torch.save({k: torch.from_numpy(v) for k, v in make_weights.make_state_dict(shapes).items()}, path)
    return path


def test_images(folder: Path, n: int, size=(640, 480)) -> list[Path]:
    """n different 640x480 images (the examples, flipped and shifted so each client's is unique)."""
    out = []
    for i in range(n):
        im = Image.open(EXAMPLES[i % len(EXAMPLES)]).convert("RGB").resize(size)
        a = np.asarray(im)
        a = np.roll(a[:, ::-1] if (i // len(EXAMPLES)) % 2 else a, 7 * i, axis=1)
        path = folder / f"client{i:02d}.png"
        Image.fromarray(np.ascontiguousarray(a)).save(path)
        out.append(path)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(workdir: Path, checkpoint: Path, env_extra: dict | None = None, timeout=180):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(workdir / "gradio"),
           "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    log = (workdir / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoint",
                             str(checkpoint), "--data-dir", str(workdir / "data")],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited:\n{(workdir / 'app.log').read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("app.py did not start")


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every=0.05):
        super().__init__(daemon=True)
        self.proc, self.every, self.peak, self.stop = psutil.Process(pid), every, 0, threading.Event()

    def rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                pass
            time.sleep(self.every)


def expected_depths(checkpoint: Path, images: list[Path], input_size: int) -> list[np.ndarray]:
    import torch

    from pipeline.predictor import Predictor
    torch.set_num_threads(2)
    predictor = Predictor.from_checkpoint(str(checkpoint), device="cpu", input_size=input_size)
    return [predictor.predict(p).array for p in images]


def one_client(url: str, image: Path, requests: int, input_size: int, downloads: Path, timeout: float):
    from gradio_client import Client, handle_file
    client = Client(url, download_files=str(downloads), verbose=False)
    out = []
    for _ in range(requests):
        t0 = time.perf_counter()
        job = client.submit(handle_file(str(image)), input_size=input_size, api_name="/predict")
        colour, npy, summary = job.result(timeout=timeout)
        out.append((time.perf_counter() - t0, np.load(npy), summary))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--requests", type=int, default=1, help="requests per client, one after another")
    p.add_argument("--input-size", type=int, default=518)
    p.add_argument("--checkpoint", type=Path, help="weights file (default: the recipe vits weights)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    p.add_argument("--tolerance", type=float, default=1e-3)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="load_predict_"))
    checkpoint = args.checkpoint or recipe_checkpoint(work)
    images = test_images(work, args.clients)
    expected = expected_depths(checkpoint, images, args.input_size)
    proc, url = start_app(work, checkpoint)
    try:
        sampler = MemorySampler(proc.pid)
        idle = sampler.rss()
        sampler.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(one_client, url, img, args.requests, args.input_size, work / f"dl{i}", args.timeout)
                       for i, img in enumerate(images)]
            results, failures = [], []
            for i, f in enumerate(futures):
                try:
                    results.append((i, f.result()))
                except Exception as e:                   # a timeout or an error answer
                    failures.append(f"client {i}: {type(e).__name__}: {e}")
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(10)
    latencies, worst = [], 0.0
    for i, answers in results:
        for seconds, depth, _summary in answers:
            latencies.append(seconds)
            diff = float(np.abs(depth - expected[i]).max()) if depth.shape == expected[i].shape else float("inf")
            worst = max(worst, diff)
            if diff > args.tolerance:
                failures.append(f"client {i}: answer differs from its own image's depth by {diff:.3g}")
    lat = np.array(latencies) if latencies else np.array([np.nan])
    print(f"{args.clients} clients x {args.requests} requests, 640x480, input size {args.input_size}, CPU")
    print(f"answers: {len(latencies)} ok-shaped, worst max|diff| vs in-process {worst:.2e} (tolerance {args.tolerance})")
    print("latency s: p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  max {:.2f}  (wall {:.1f} s, {:.2f} req/s)".format(
        *np.percentile(lat, [50, 90, 99]), lat.max(), wall, len(latencies) / wall))
    print(f"server memory: idle {idle / 2**20:.0f} MiB, peak {sampler.peak / 2**20:.0f} MiB "
          f"(+{(sampler.peak - idle) / 2**20:.0f} MiB under load)")
    for f in failures:
        print("FAIL", f)
    print("PASS" if not failures else f"{len(failures)} failures")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
